"""Decoding a file once and handing the samples to every extractor that needs them.

soundfile (libsndfile) reads WAV, FLAC, AIFF, OGG, Opus and MP3; Essentia's loader (FFmpeg in
its wheel) reads what soundfile cannot (M4A/AAC/ALAC, WMA). The identity of the audio is a hash
of the decoded samples, computed while decoding: a retag (new bytes, same sound) keeps it.

Files longer than `max_seconds` are hashed and probed in blocks but not held in memory whole:
extractors that need the whole signal refuse them with a clear error.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ANALYSIS_RATE = 44100
BLOCK_FRAMES = 1 << 18


class DecodeError(Exception):
    """The file cannot be decoded; the message says why, for a person."""


class TooLong(Exception):
    """The file is longer than extractors may hold in memory."""


@dataclass
class Audio:
    """Decoded audio of one file, with analysis views made on first use and kept."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    codec: str
    bit_depth: int | None
    file_size: int
    audio_id: str  # hash of the decoded samples
    samples: np.ndarray | None  # float32 [frames, channels]; None when too long to hold
    max_seconds: float
    # Upstream results available to the extractor being run: name -> 'name:version:params_hash'.
    inputs: dict[str, str] = field(default_factory=dict)
    # Their files, by upstream name and kind ('stem:bass' -> path).
    input_artifacts: dict[str, dict[str, str]] = field(default_factory=dict)
    # Arrays an extractor left for those after it in the same job (demucs: the stems).
    derived: dict[str, Any] = field(default_factory=dict)
    # Files the extractor being run produced: (kind, format, path, bytes).
    artifacts: list[tuple[str, str, str, int]] = field(default_factory=list)
    artifacts_dir: str = ""
    device: str = "auto"  # for GPU extractors: see catalog/devices.py
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    def _whole(self) -> np.ndarray:
        if self.samples is None:
            raise TooLong(
                f"{self.duration:.0f} s is longer than max_duration ({self.max_seconds:.0f} s); "
                "raise max_duration in muscat.toml to analyse it"
            )
        return self.samples

    def mono(self) -> np.ndarray:
        """Mono at 44.1 kHz, float32 (what Essentia's algorithms expect)."""
        if "mono" not in self._cache:
            whole = self._whole()
            mixed = whole[:, 0] if whole.shape[1] == 1 else whole.sum(axis=1, dtype=np.float32) / whole.shape[1]
            self._cache["mono"] = resample(mixed, self.sample_rate, ANALYSIS_RATE)
        return self._cache["mono"]

    def stereo(self) -> np.ndarray:
        """[frames, 2] at 44.1 kHz; a mono file is [m, 0] (a duplicate would read 3 dB loud)."""
        if "stereo" not in self._cache:
            whole = self._whole()
            if whole.shape[1] == 2 and self.sample_rate == ANALYSIS_RATE:
                self._cache["stereo"] = whole  # already what is asked: no copy
                return whole
            if whole.shape[1] == 1:
                left = resample(whole[:, 0], self.sample_rate, ANALYSIS_RATE)
                pair = np.stack([left, np.zeros_like(left)], axis=1)
            else:
                pair = np.stack(
                    [resample(whole[:, c], self.sample_rate, ANALYSIS_RATE) for c in (0, 1)], axis=1
                )
            self._cache["stereo"] = np.ascontiguousarray(pair, dtype=np.float32)
        return self._cache["stereo"]


    def stems_mono(self, upstream: str, kinds: tuple[str, ...]) -> np.ndarray | None:
        """The sum of some stems of an upstream extractor, mono at 44.1 kHz, if it gave them."""
        if upstream not in self.inputs:
            return None
        key = f"stems:{upstream}:{','.join(kinds)}"
        if key not in self._cache:
            arrays, rate = self.derived.get(upstream), None
            if arrays is not None:  # separated in this job: still in memory
                parts, rate = [arrays["stems"][k] for k in kinds], arrays["sample_rate"]
            else:
                import soundfile as sf

                parts = []
                for kind in kinds:
                    data, rate = sf.read(self.input_artifacts[upstream][f"stem:{kind}"], dtype="float32",
                                         always_2d=True)
                    parts.append(data)
            mixed = np.sum([p.mean(axis=1) for p in parts], axis=0).astype(np.float32)
            self._cache[key] = resample(mixed, rate, ANALYSIS_RATE)
        return self._cache[key]


def resample(signal: np.ndarray, rate: int, target: int) -> np.ndarray:
    signal = np.ascontiguousarray(signal, dtype=np.float32)
    if rate == target or len(signal) == 0:
        return signal
    import essentia.standard as es

    return es.Resample(inputSampleRate=rate, outputSampleRate=target, quality=1)(signal)


def _hasher(rate: int, channels: int) -> Any:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{rate}:{channels}:".encode())
    return digest


# Formats libsndfile reads: a file with one of these extensions that it cannot read is broken,
# not something to hand to FFmpeg (which decodes random bytes as MPEG audio, given the chance).
SOUNDFILE_EXTENSIONS = {"wav", "flac", "aif", "aiff", "aifc", "ogg", "oga", "opus", "mp3"}


def decode(path: str, max_seconds: float = 3600.0) -> Audio:
    """Decode `path`; raises DecodeError with a readable reason."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise DecodeError(f"cannot read the file: {exc.strerror}") from None
    if size == 0:
        raise DecodeError("the file is empty (0 bytes)")
    extension = path.rpartition(".")[2].lower()
    try:
        return _decode_soundfile(path, size, max_seconds)
    except _NotForSoundfile as exc:
        if extension in SOUNDFILE_EXTENSIONS:
            raise DecodeError(f"not a readable {extension} file ({exc})") from None
        return _decode_essentia(path, size, max_seconds)


class _NotForSoundfile(Exception):
    pass


def _declared_pcm_bytes(path: str) -> int | None:
    """Size of the sample data a WAV or AIFF header declares (libsndfile trusts the file size)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            little, wanted, offset = True, b"data", 12
        elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            little, wanted, offset = False, b"SSND", 12
        else:
            return None
        while True:
            f.seek(offset)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            length = int.from_bytes(chunk[4:8], "little" if little else "big")
            if chunk[:4] == wanted:
                return offset + 8 + length
            offset += 8 + length + (length & 1)


_SUBTYPE_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32, "DOUBLE": 64}


def _decode_soundfile(path: str, size: int, max_seconds: float) -> Audio:
    import soundfile as sf

    try:
        f = sf.SoundFile(os.fsencode(path))  # bytes: names that are not UTF-8 open too
    except sf.LibsndfileError as exc:
        # libsndfile says "does not exist ... (possibly a pipe?)" of content it does not recognise
        reason = "unrecognised content" if "does not exist" in str(exc) else exc.error_string
        raise _NotForSoundfile(reason) from None
    with f:
        rate, channels, frames = f.samplerate, f.channels, f.frames
        if channels < 1 or rate < 1:
            raise DecodeError(f"invalid stream: {channels} channels at {rate} Hz")
        if rate > 768_000:
            raise DecodeError(f"implausible sample rate: {rate} Hz")
        declared_end = _declared_pcm_bytes(path) if f.format in ("WAV", "AIFF") else None
        if declared_end is not None and declared_end > size:
            raise DecodeError(f"truncated: the header declares {declared_end} bytes, the file has {size}")
        hold = frames / rate <= max_seconds
        digest = _hasher(rate, channels)
        blocks = []
        read = 0
        try:
            if hold and frames > 0:  # one allocation for what the header announces
                first = f.read(frames, dtype="float32", always_2d=True)
                digest.update(memoryview(np.ascontiguousarray(first)).cast("B"))
                read += len(first)
                blocks.append(first)
            while True:  # then until the decoder runs dry: the declared length may be a promise
                block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                digest.update(memoryview(block).cast("B"))
                read += len(block)
                if hold:
                    blocks.append(block)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise DecodeError(f"decoding failed after {read} frames: {exc}") from None
        if read == 0:
            raise DecodeError("no audio frames in the file")
        if frames > 0 and read < 0.99 * frames:
            raise DecodeError(
                f"truncated: the header promises {frames / rate:.2f} s, only {read / rate:.2f} s decode"
            )
        codec = f.format.lower() if f.format != "OGG" else f.subtype.lower()
        if f.format == "MP3" or f.subtype == "MPEG_LAYER_III":
            codec = "mp3"
        samples = (blocks[0] if len(blocks) == 1 else np.concatenate(blocks)) if hold else None
        return Audio(path, rate, channels, read, codec, _SUBTYPE_BITS.get(f.subtype), size,
                     digest.hexdigest(), samples, max_seconds)


def _decode_essentia(path: str, size: int, max_seconds: float) -> Audio:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        # Essentia takes only text names: reach a name that is not UTF-8 through its descriptor.
        fd = os.open(path, os.O_RDONLY)
        try:
            if os.path.exists(f"/proc/self/fd/{fd}"):
                return _decode_essentia_named(f"/proc/self/fd/{fd}", path, size, max_seconds)
        finally:
            os.close(fd)
        raise DecodeError("this file name is not valid UTF-8, which the M4A/AAC/WMA decoder cannot open") from None
    return _decode_essentia_named(path, path, size, max_seconds)


def _decode_essentia_named(name: str, path: str, size: int, max_seconds: float) -> Audio:
    import essentia.standard as es

    # Essentia's loader decodes the whole file at once: refuse what would not fit.
    try:
        duration = float(es.MetadataReader(filename=name, failOnError=True)()[-4])
    except RuntimeError:
        duration = 0.0  # unknown: the loader below says what is wrong
    if duration > max_seconds:
        raise DecodeError(
            f"{duration:.0f} s is longer than max_duration ({max_seconds:.0f} s), and this format "
            "is decoded whole; raise max_duration in muscat.toml to analyse it"
        )
    try:
        loaded = es.AudioLoader(filename=name)()
    except RuntimeError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
        raise DecodeError(f"not a readable audio file ({message})") from None
    samples, rate, channels, _, _, codec = loaded[0], int(loaded[1]), int(loaded[2]), loaded[3], loaded[4], loaded[5]
    samples = np.ascontiguousarray(samples[:, :channels], dtype=np.float32)
    if len(samples) == 0 or rate < 1:
        raise DecodeError("no audio frames in the file")
    digest = _hasher(rate, channels)
    for start in range(0, len(samples), BLOCK_FRAMES):
        digest.update(samples[start : start + BLOCK_FRAMES].tobytes())
    hold = len(samples) / rate <= max_seconds
    return Audio(path, rate, channels, len(samples), str(codec), None, size, digest.hexdigest(),
                 samples if hold else None, max_seconds)
