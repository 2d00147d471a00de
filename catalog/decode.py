"""Decoding a file once and handing the samples to every extractor that needs them.

What FFmpeg reads, muscat reads. Two decoders, chosen by what the file holds (not its name):

- libsndfile (soundfile) for PCM WAV and AIFF and for FLAC: bit-exact, and on WAV several times
  faster than FFmpeg through PyAV (bench/decode.py);
- FFmpeg (PyAV, FFmpeg inside its wheel) for everything else — MP3, AAC/ALAC in MP4, Ogg
  Vorbis/Opus/FLAC/Speex, WMA, WavPack, APE, Musepack, TTA, TAK, DSD, AC-3, Matroska/WebM,
  CAF, W64, the first audio stream of a video — and for any file libsndfile fails on (a
  variable-block-size FLAC). libsndfile reads MP3 and Ogg too, but misjudges MP3 lengths, fails
  on Opus past 262,144 frames and stops short in some Vorbis files: muscat leaves them to FFmpeg.

The identity of the audio (`audio_id`) must not depend on which decoder, or which version of
it, read the file, and a retag (new bytes, same sound) must keep it:

- lossless audio (PCM, FLAC, ALAC, WavPack, APE, TTA, TAK, ...): a hash of the decoded samples
  as float32 — integer PCM decodes to the same numbers in every correct decoder, so a FLAC, a
  WAV and an ALAC of the same PCM share their id (rule "pcm");
- lossy audio (and DSD, whose PCM depends on the decoder's filter): a hash of the encoded audio
  packets, without container headers or tags, as AcousticBrainz's md5_encoded did (rule
  "packets"). Decoders of lossy codecs may differ in the last bits from version to version; the
  packets do not.

A file is truncated when its stream says so — an error at the end of decoding, or the evidence
of catalog/cuts.py — never because a header's estimate differs from what decodes.

Files longer than `max_seconds` are hashed and probed but not held in memory whole:
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
    """Decoded audio of one file, with analysis views made on first use and kept. Extractors
    read it; what they make they return (catalog/extractor.py: Made)."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    codec: str
    bit_depth: int | None
    file_size: int
    audio_id: str  # see the module's docstring: "pcm" or "packets" rule
    samples: np.ndarray | None  # float32 [frames, channels]; None when too long to hold
    max_seconds: float
    id_rule: str = "pcm"  # how audio_id was made: "pcm" (decoded samples) or "packets"
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    def whole(self) -> np.ndarray:
        """The samples as decoded, float32 [frames, channels] (refused when too long to hold)."""
        if self.samples is None:
            raise TooLong(
                f"{self.duration:.0f} s is longer than max_duration ({self.max_seconds:.0f} s); "
                "raise max_duration in muscat.toml to analyse it"
            )
        return self.samples

    def mono(self) -> np.ndarray:
        """Mono at 44.1 kHz, float32 (what Essentia's algorithms expect)."""
        if "mono" not in self._cache:
            whole = self.whole()
            mixed = whole[:, 0]
            if whole.shape[1] > 1:
                # Channel by channel: the same float32 sums as whole.sum(axis=1), in a tenth of the
                # time (a sum along the short axis of [frames, channels] runs row by row).
                mixed = mixed.copy()
                for channel in range(1, whole.shape[1]):
                    mixed += whole[:, channel]
                mixed /= np.float32(whole.shape[1])
            self._cache["mono"] = resample(mixed, self.sample_rate, ANALYSIS_RATE)
        return self._cache["mono"]

    def stereo(self) -> np.ndarray:
        """[frames, 2] at 44.1 kHz; a mono file is [m, 0] (a duplicate would read 3 dB loud)."""
        if "stereo" not in self._cache:
            whole = self.whole()
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


def resample(signal: np.ndarray, rate: int, target: int) -> np.ndarray:
    signal = np.ascontiguousarray(signal, dtype=np.float32)
    if rate == target or len(signal) == 0:
        return signal
    from .essentia_import import load

    es = load()
    return es.Resample(inputSampleRate=rate, outputSampleRate=target, quality=1)(signal)


def pcm_hasher(rate: int, channels: int) -> Any:
    """The "pcm" rule: fed float32 interleaved samples, in any blocks."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{rate}:{channels}:".encode())
    return digest


def packets_hasher(codec: str) -> Any:
    """The "packets" rule: fed the encoded audio packets' payloads, in order, then the number
    of frames they decode to."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"packets:{codec}:".encode())
    return digest


def decode(path: str, max_seconds: float = 3600.0) -> Audio:
    """Decode `path`; raises DecodeError with a readable reason."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise DecodeError(f"cannot read the file: {exc.strerror}") from None
    if size == 0:
        raise DecodeError("the file is empty (0 bytes)")
    try:
        return _decode_soundfile(path, size, max_seconds)
    except _NotForSoundfile:
        return _decode_ffmpeg(path, size, max_seconds)


class _NotForSoundfile(Exception):
    pass


_SUBTYPE_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32, "DOUBLE": 64}
# What libsndfile decodes here: lossless containers with PCM (or FLAC) inside.
_SOUNDFILE_FORMATS = {"WAV", "WAVEX", "AIFF", "FLAC"}


def _decode_soundfile(path: str, size: int, max_seconds: float) -> Audio:
    import soundfile as sf

    from . import cuts

    try:
        f = sf.SoundFile(os.fsencode(path))  # bytes: names that are not UTF-8 open too
    except sf.LibsndfileError:
        raise _NotForSoundfile() from None
    with f:
        if f.format not in _SOUNDFILE_FORMATS or f.subtype not in _SUBTYPE_BITS:
            raise _NotForSoundfile()
        rate, channels, frames = f.samplerate, f.channels, f.frames
        if channels < 1 or rate < 1:
            raise DecodeError(f"invalid stream: {channels} channels at {rate} Hz")
        if rate > 768_000:
            raise DecodeError(f"implausible sample rate: {rate} Hz")
        overrun = cuts.container_overrun(path, size)
        if overrun:
            raise DecodeError(overrun)
        hold = frames / rate <= max_seconds
        digest = pcm_hasher(rate, channels)
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
        except (sf.LibsndfileError, RuntimeError):
            # libsndfile gives up on some valid files (variable-block-size FLAC): FFmpeg decides.
            raise _NotForSoundfile() from None
        if read == 0:
            raise DecodeError("no audio frames in the file")
        if frames > 0 and read < 0.99 * frames:  # a PCM or FLAC header's frame count is exact
            raise DecodeError(
                f"truncated: the header promises {frames / rate:.2f} s, only {read / rate:.2f} s decode"
            )
        codec = f.format.lower() if f.format != "WAVEX" else "wav"
        samples = (blocks[0] if len(blocks) == 1 else np.concatenate(blocks)) if hold else None
        return Audio(path, rate, channels, read, codec, _SUBTYPE_BITS.get(f.subtype), size,
                     digest.hexdigest(), samples, max_seconds)


# Codecs whose decoded samples are the same in every correct decoder (integer-exact).
LOSSLESS_CODECS = {"flac", "alac", "wavpack", "ape", "tta", "tak", "mlp", "truehd", "shorten", "wmalossless",
                   "mp4als", "ralf"}
# Names FFmpeg gives that users know by another (the container says more for PCM).
_CODEC_NAMES = {"musepack7": "musepack", "musepack8": "musepack", "wmav1": "wma", "wmav2": "wma",
                "wmapro": "wma", "wmalossless": "wma lossless", "dsd_lsbf": "dsd", "dsd_msbf": "dsd",
                "dsd_lsbf_planar": "dsd", "dsd_msbf_planar": "dsd"}
_PCM_CONTAINERS = {"wav": "wav", "w64": "w64", "aiff": "aiff", "caf": "caf", "matroska,webm": "mka"}
# How integer samples become float32, as libsndfile does it (so that ids agree): divide by 2^(bits-1).
_SCALE = {"u8": 1 / 128, "s16": 1 / 32768, "s32": 1 / 2**31, "s64": 1 / 2**63}
_DTYPE = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "s64": np.int64, "flt": np.float32, "dbl": np.float64}
# Errors after which decoding stops: the file is broken, the rest would say no more.
_MAX_ERRORS = 50


def _is_lossless(codec: str) -> bool:
    return codec in LOSSLESS_CODECS or codec.startswith("pcm_")


def _decode_ffmpeg(path: str, size: int, max_seconds: float) -> Audio:
    import av

    try:
        path.encode("utf-8")
        source: Any = path
    except UnicodeEncodeError:  # FFmpeg takes text names: give it the file itself
        source = open(os.fsencode(path), "rb")
    try:
        try:
            container = av.open(source, metadata_errors="ignore")
        except av.error.FFmpegError as exc:
            from . import cuts

            named = path.rpartition(".")[2].lower() if "." in os.path.basename(path) else "audio"
            raise DecodeError(cuts.container_overrun(path, size) or f"not a readable {named} file ({_reason(exc)})") \
                from None
        with container:
            return _decode_stream(container, path, size, max_seconds)
    finally:
        if not isinstance(source, str):
            source.close()


def _decode_stream(container: Any, path: str, size: int, max_seconds: float) -> Audio:
    import av

    from . import cuts

    if not container.streams.audio:
        raise DecodeError(f"no audio stream in the file ({container.format.name})")
    stream = container.streams.audio[0]  # a video's first audio stream, too
    context = stream.codec_context
    codec = context.codec.canonical_name
    rate, channels = context.sample_rate, context.channels
    if channels < 1 or rate < 1:
        raise DecodeError(f"invalid stream: {channels} channels at {rate} Hz")
    if rate > 768_000:
        raise DecodeError(f"implausible sample rate: {rate} Hz")
    lossless = _is_lossless(codec)
    digest = pcm_hasher(rate, channels) if lossless else packets_hasher(codec)
    declared = float(stream.duration * stream.time_base) if stream.duration else None
    samples = _Collector(rate, channels, max_seconds, declared)
    errors: list[str] = []
    first_error_at: float | None = None
    frames_after_error = 0
    last_packet = b""
    ended_early: str | None = None
    try:
        for packet in container.demux(stream):
            if packet.size:
                payload = bytes(packet)
                last_packet = payload
                if not lossless:
                    digest.update(payload)
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                errors.append(_reason(exc))
                if first_error_at is None:
                    first_error_at = samples.frames / rate
                if len(errors) >= _MAX_ERRORS:
                    break
                continue
            for frame in frames:
                block = samples.add(frame)
                if lossless:
                    digest.update(memoryview(block).cast("B"))
                if errors:
                    frames_after_error += len(block)
    except av.error.FFmpegError as exc:  # the demuxer: the container breaks off
        ended_early = _reason(exc)
    except MemoryError:
        raise DecodeError("the decoded audio does not fit in memory") from None
    decoded = samples.frames / rate
    if samples.frames == 0:
        reason = errors[0] if errors else ended_early
        raise DecodeError(cuts.container_overrun(path, size)
                          or (f"no audio frames in the file ({reason})" if reason else "no audio frames in the file"))
    if errors and frames_after_error > rate // 2:  # good audio after the error: not a cut
        raise DecodeError(f"damaged: decoding failed at {first_error_at:.2f} s ({errors[0]})")
    if errors or ended_early:
        raise DecodeError(f"truncated: the stream breaks off after {decoded:.2f} s ({(errors or [ended_early])[0]})")
    fmt = container.format.name
    if fmt == "mp3":
        declared = cuts.mp3_declared_seconds(path)
    elif fmt not in cuts.EXACT_LENGTH_FORMATS:
        declared = None
    elif declared is None and container.duration:  # Matroska gives the length per file, not per stream
        declared = container.duration / 1_000_000
    reason = (cuts.shortfall(declared, decoded) or cuts.torn_last_frame(fmt, last_packet)
              or (cuts.torn_ogg_page(path, size) if fmt == "ogg" else None) or cuts.container_overrun(path, size))
    if reason:
        raise DecodeError(reason)
    if not lossless:
        # The same packets can decode to different lengths: gapless information (the LAME
        # header, an edit list) trims the encoder's delay and padding. The length is part of it.
        digest.update(f":{samples.frames}".encode())
    name = _PCM_CONTAINERS.get(fmt, "pcm") if codec.startswith("pcm_") else _CODEC_NAMES.get(codec, codec)
    return Audio(path, rate, channels, samples.frames, name, samples.bit_depth() if lossless else None, size,
                 digest.hexdigest(), samples.whole(), max_seconds, id_rule="pcm" if lossless else "packets")


def _reason(exc: Exception) -> str:
    """FFmpeg's message without PyAV's errno and file name decorations."""
    strerror = getattr(exc, "strerror", None)
    return str(strerror or exc).strip() or type(exc).__name__


class _Collector:
    """Decoded frames as float32 [frames, channels], held while under `max_seconds`."""

    def __init__(self, rate: int, channels: int, max_seconds: float, declared_s: float | None) -> None:
        self.rate, self.channels = rate, channels
        self.limit = int(max_seconds * rate)
        self.frames = 0
        self.sample_format = ""
        self.low_bits = 0  # of 32-bit integer samples, OR-ed: tells 24-bit audio in 32-bit words
        guess = int((declared_s or 60.0) * rate * 1.02) + rate
        self.buffer: np.ndarray | None = np.empty((min(guess, self.limit + 1), channels), np.float32)
        self.resampler: Any = None

    def add(self, frame: Any) -> np.ndarray:
        if frame.sample_rate != self.rate or len(frame.layout.channels) != self.channels:
            frame = self._conform(frame)
        if frame is None:
            return np.empty((0, self.channels), np.float32)
        block = self._float32(frame)
        n = len(block)
        if self.buffer is not None:
            if self.frames + n > self.limit:
                self.buffer = None  # too long to hold: keep counting and hashing only
            else:
                if self.frames + n > len(self.buffer):
                    grown = np.empty((max(int(len(self.buffer) * 1.5), self.frames + n), self.channels), np.float32)
                    grown[: self.frames] = self.buffer[: self.frames]
                    self.buffer = grown
                self.buffer[self.frames : self.frames + n] = block
        self.frames += n
        return block

    def _float32(self, frame: Any) -> np.ndarray:
        name = frame.format.name
        base = name.rstrip("p")
        dtype = _DTYPE[base]
        n = frame.samples
        if frame.format.is_planar:
            planes = [np.frombuffer(plane, dtype, count=n) for plane in frame.planes[: self.channels]]
            raw = np.stack(planes, axis=1)
        else:
            raw = np.frombuffer(frame.planes[0], dtype, count=n * self.channels).reshape(n, self.channels)
        self.sample_format = base
        if base == "s32" and n:
            self.low_bits |= int(np.bitwise_or.reduce(raw, axis=None)) & 0xFF
        if base in _SCALE:
            offset = 128 if base == "u8" else 0
            return ((raw.astype(np.float32) - offset) * np.float32(_SCALE[base])).astype(np.float32)
        return np.ascontiguousarray(raw, dtype=np.float32)

    def _conform(self, frame: Any) -> Any:
        """A frame whose rate or channels changed mid-stream, made like the first ones."""
        import av

        if self.resampler is None:
            layout = {1: "mono", 2: "stereo"}.get(self.channels, f"{self.channels}c")
            self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=self.rate)
        out = self.resampler.resample(frame)
        return out[0] if out else None

    def bit_depth(self) -> int | None:
        if self.sample_format == "s32":
            return 24 if self.low_bits == 0 else 32
        return {"u8": 8, "s16": 16, "flt": 32, "dbl": 64}.get(self.sample_format)

    def whole(self) -> np.ndarray | None:
        return None if self.buffer is None else self.buffer[: self.frames]
