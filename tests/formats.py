"""Test files in every format muscat must read, made by real encoders, and cut copies of them.

Each `Case` of `CASES` writes one short file of music-like sound (a few notes of decaying
harmonic partials, deterministic) through a real encoder: PyAV (FFmpeg inside the `av` wheel)
for what FFmpeg can encode, and Debian's encoders for the rest (lame, flake, mpcenc, speexenc;
`.ci/run` installs them). Where no encoder exists the case says why and is skipped (APE, TAK).
Three files are constructed rather than encoded, and say so: DSF and DSDIFF (no DSD encoder in
FFmpeg or Debian: the published container layouts around a first-order delta-sigma modulator),
and a FLAC with variable blocking as the format now defines it (flake's real frames, their
headers rewritten; flake itself writes variable block sizes the pre-2007 way, also a case).
All the lossless cases store the same 16-bit PCM, so they must share one audio id.

Every case also makes a cut copy (`cut_copy`): the file's first ~60 % of audio data, ending
in the middle of an encoded packet, which a correct decoder reports as truncated; each case's
`cut_note` says what in the file shows it. One case is cut between two packets instead, where
nothing can show it (an MP3 without a Xing frame): it must read as a good, shorter file.

`reference_duration(path)` is FFmpeg's own idea of the decoded duration, from Debian's `ffmpeg`
command when present (else a full decode with PyAV), independent of muscat's decoder.

`python tests/formats.py DIR` writes every file into DIR and prints what FFmpeg makes of each
one and of its cut copy.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

RATE = 44100
SECONDS = 3.0
# What the failed row of a cut copy must say (one of these words), unless the case says otherwise.
TRUNCATED = r"truncat|cut short|incomplete|partial|corrupt"

# -- the test signal -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def music(seconds: float = SECONDS, rate: int = RATE, channels: int = 2) -> np.ndarray:
    """A little melody, float32 [frames, channels] in [-1, 1]: notes every 0.5 s, each five
    harmonic partials (amplitude 1/k) under a sharp attack and an exponential decay, so that
    encoders see transients and tonal parts. The channels differ (pan and a detuned partial),
    so a decoder that mixes or swaps them is seen. Deterministic: the same call, the same samples.
    """
    frames = int(round(seconds * rate))
    t = np.arange(frames) / rate
    notes = [0, 4, 7, 12, 7, 4, 2, 5, 9, 7, 0, -5]  # semitones above C4
    out = np.zeros((frames, channels))
    step = 0.5
    for i in range(int(np.ceil(seconds / step))):
        start = int(i * step * rate)
        if start >= frames:
            break
        stop = min(frames, start + int(3.0 * rate))  # the decay is below -75 dB by then
        local = t[start:stop] - t[start]
        env = np.minimum(1.0, local / 0.005) * np.exp(-local * 3.0)
        f0 = 261.63 * 2 ** (notes[i % len(notes)] / 12)
        pan = 0.5 + 0.35 * np.sin(i)
        for c in range(channels):
            gain = (pan if c == 0 else 1 - pan) if channels == 2 else 0.7
            tone = sum(np.sin(2 * np.pi * f0 * k * (1 + 0.002 * c) * local + k) / k for k in range(1, 6))
            out[start:stop, c] += 0.22 * gain * env * tone
    out = np.clip(out, -1, 1).astype(np.float32)
    out.flags.writeable = False  # shared between callers (cached)
    return out


def pcm16(samples: np.ndarray) -> np.ndarray:
    """The signal as 16-bit PCM: what every lossless case stores, so they share one audio id."""
    return np.round(samples * 32767).astype(np.int16)


def write_wav16(path: Path, samples: np.ndarray, rate: int) -> Path:
    """A plain 16-bit WAV (input for the command-line encoders), written with soundfile."""
    import soundfile as sf

    sf.write(str(path), pcm16(samples), rate, subtype="PCM_16")
    return path


# -- encoding through PyAV -----------------------------------------------------------------------


def encode_av(path: Path, codec: str, muxer: str, *, rate: int = RATE, channels: int = 2,
              seconds: float = SECONDS, sample_fmt: str | None = None, bit_rate: int | None = None,
              options: dict | None = None, container_options: dict | None = None,
              strict: bool = False, video: str | None = None, samples: np.ndarray | None = None) -> None:
    """Encode the test signal (or `samples`, float [frames, channels] at `rate`) with FFmpeg's
    `codec` into FFmpeg's `muxer`.

    The signal is handed to the encoder as 16-bit PCM values (so that lossless codecs store
    exactly `pcm16(music())`); PyAV converts it to the encoder's sample format. With `video`,
    a video stream of that encoder comes first in the container and the audio second.
    """
    import av

    if samples is not None:
        channels, seconds = samples.shape[1], len(samples) / rate
    data = pcm16(music(seconds, rate, channels) if samples is None else samples)
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w", format=muxer, options=container_options or {}) as container:
        vstream = None
        if video:
            vstream = container.add_stream(video, rate=25)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
        options = dict(options or {})
        if strict:
            options["strict"] = "experimental"  # FFmpeg's own vorbis encoder asks for it
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.layout = layout
        if sample_fmt:
            stream.format = sample_fmt
        if bit_rate:
            stream.bit_rate = bit_rate
        block = 4096
        for start in range(0, len(data), block):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[start : start + block].reshape(1, -1)),
                                               format="s16", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if vstream is not None:
            for i in range(int(seconds * 25)):
                picture = np.full((48, 64, 3), (i * 7) % 256, np.uint8)
                picture[:, : (i % 64)] = 255 - picture[:, : (i % 64)]
                vframe = av.VideoFrame.from_ndarray(picture, format="rgb24")
                vframe.pts = i
                for packet in vstream.encode(vframe):
                    container.mux(packet)
            for packet in vstream.encode(None):
                container.mux(packet)


def av_encoder(*names: str) -> str:
    """The first of `names` this PyAV can encode with (video encoders differ between builds)."""
    import av

    for name in names:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - an unknown codec raises a plain exception type per build
            continue
    raise RuntimeError(f"none of the encoders {names} is in this PyAV")


def run_tool(*cmd: str | Path) -> None:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({out.returncode}): {(out.stderr or out.stdout).strip()[-500:]}")


# -- makers: one function per kind of file; each writes `path` ----------------------------------


def _av(codec: str, muxer: str, **kw) -> Callable[[Path], None]:
    return lambda path: encode_av(path, codec, muxer, **kw)


def make_mp3_noxing_vbr(path: Path) -> None:
    """LAME VBR with `-t`: no Xing/Info frame, so nothing in the file gives its length."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = write_wav16(Path(tmp) / "in.wav", music(), RATE)
        run_tool("lame", "--quiet", "-V", "4", "-t", "--noreplaygain", wav, path)


def make_mp3_noxing_vbr_low(path: Path) -> None:
    """As above at a lower quality (-V 7), so that the file differs from it."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = write_wav16(Path(tmp) / "in.wav", music(), RATE)
        run_tool("lame", "--quiet", "-V", "7", "--resample", "44.1", "-t", "--noreplaygain", wav, path)


def make_mp3_id3v1v2(path: Path) -> None:
    """A CBR MP3 without an Info frame (LAME through PyAV, write_xing=0) carrying an ID3v2.3 tag
    at the front and an ID3v1 tag at the end: libsndfile's length estimate counts the tags."""
    from mutagen.id3 import ID3, TALB, TIT2, TPE1, TRCK

    encode_av(path, "libmp3lame", "mp3", bit_rate=160_000, container_options={"write_xing": "0"})
    tags = ID3()
    tags.add(TIT2(encoding=3, text="Both Tags"))
    tags.add(TPE1(encoding=3, text="The Testers"))
    tags.add(TALB(encoding=3, text="Formats"))
    tags.add(TRCK(encoding=3, text="3/12"))
    tags.save(str(path), v1=2, v2_version=3)


def _padded(path: Path, xing: bool) -> None:
    from mutagen.id3 import ID3, TIT2, TPE1

    encode_av(path, "libmp3lame", "mp3", bit_rate=128_000, container_options={} if xing else {"write_xing": "0"})
    tags = ID3()
    tags.add(TIT2(encoding=3, text="Padded"))
    tags.add(TPE1(encoding=3, text="The Testers"))
    tags.save(str(path), v2_version=4, padding=lambda info: 256 * 1024)


def make_mp3_id3_padding(path: Path) -> None:
    """An MP3 with LAME's Info frame whose ID3v2.4 tag is followed by 256 KiB of padding (what
    taggers leave to rewrite in place), larger than the audio itself."""
    _padded(path, xing=True)


def make_mp3_id3_padding_no_xing(path: Path) -> None:
    """The same without the Info frame: libsndfile takes the padding for audio in its estimate
    (19 s for 3 s here)."""
    _padded(path, xing=False)


def make_flac_flake_variable(path: Path) -> None:
    """Flake's `-v 2`: each frame's block size chosen by the encoder (576 to 4608 here). Flake
    0.11 predates the FLAC format's 'variable blocking' bit: its frames say 'fixed blocking'
    with frame numbers, and STREAMINFO's minimum block size is 0; FFmpeg decodes every sample
    but its timestamps run backwards (it multiplies those frame numbers by the block size)."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = write_wav16(Path(tmp) / "in.wav", music(), RATE)
        run_tool("flake", "-q", "-v", "2", "-b", "4608", wav, "-o", path)
    sizes = {size for _, size in flac_frames(path)}
    if len(sizes) < 3:
        raise RuntimeError(f"flake wrote {sorted(sizes)} block sizes only into {path}")


def make_flac_variable_blocksize(path: Path) -> None:
    """A FLAC stream with variable blocking as the format now defines it, constructed from
    real FLAC frames: flake's (`-v 2`, above), each frame header rewritten with the 'variable
    blocking' bit (0xFFF9) and the frame's first sample number instead of a frame number, its
    CRC-8 and the frame's CRC-16 computed again, and STREAMINFO's minimum block size set. The
    subframes (the encoded audio) are flake's, untouched. No encoder we can install writes
    this layout (libFLAC and FFmpeg encode fixed blocks only)."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "flake.flac"
        make_flac_flake_variable(source)
        data = source.read_bytes()
    spans = flac_frames_spans(data)
    out = bytearray(data[: spans[0][0]])
    sample = 0
    sizes = []
    for start, end in spans:
        frame = data[start:end]
        header, body_start, size = _flac_header_parts(frame)
        new_header = bytearray(b"\xff\xf9" + frame[2:4] + _flac_utf8(sample) + header)
        new_header.append(_crc8(bytes(new_header)))
        body = new_header + frame[body_start:-2]
        out += body + _crc16(bytes(body)).to_bytes(2, "big")
        sample += size
        sizes.append(size)
    # STREAMINFO (the first metadata block, at 8): min block size, excluding the last frame
    out[8:10] = min(sizes[:-1]).to_bytes(2, "big")
    out[10:12] = max(sizes).to_bytes(2, "big")
    path.write_bytes(bytes(out))
    if not flac_is_variable_blocksize(path):
        raise RuntimeError(f"{path}: not variable blocking")


_BLOCK_SIZES = {1: 192, 2: 576, 3: 1152, 4: 2304, 5: 4608, **{n: 256 << (n - 8) for n in range(8, 16)}}


def _flac_header_parts(frame: bytes) -> tuple[bytes, int, int]:
    """(the block size and sample rate bytes after the coded number, where the subframes start,
    the block size) of a FLAC frame header."""
    i = 4
    lead = frame[i]
    extra = 0 if lead < 0x80 else (8 - (~lead & 0xFF).bit_length()) - 1  # UTF-8 continuation bytes
    i += 1 + extra
    code, rate_code = frame[2] >> 4, frame[2] & 0x0F
    tail_len = {6: 1, 7: 2}.get(code, 0) + {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    tail = frame[i : i + tail_len]
    if code == 6:
        size = tail[0] + 1
    elif code == 7:
        size = int.from_bytes(tail[:2], "big") + 1
    else:
        size = _BLOCK_SIZES[code]
    return tail, i + tail_len + 1, size  # + 1: the CRC-8


def _flac_utf8(value: int) -> bytes:
    """FLAC's UTF-8-like coding of a frame or sample number (up to 36 bits, 7 bytes)."""
    if value < 0x80:
        return bytes([value])
    for count in range(2, 8):
        if value < (1 << (5 * count + 1)):
            break
    out = []
    for _ in range(count - 1):
        out.append(0x80 | (value & 0x3F))
        value >>= 6
    lead = (0xFF << (8 - count)) & 0xFF
    return bytes([lead | value] + out[::-1])


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


_CRC16 = []
for _n in range(256):
    _c = _n << 8
    for _ in range(8):
        _c = ((_c << 1) ^ 0x8005) & 0xFFFF if _c & 0x8000 else (_c << 1) & 0xFFFF
    _CRC16.append(_c)


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def flac_frames_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each frame of a native FLAC file: a frame starts at a sync code whose
    header CRC-8 is right and ends where the next one starts (or at the end of the file)."""
    offset = 4
    while True:  # metadata blocks: 1 bit last, 7 bits type, 24 bits length
        header = data[offset]
        offset += 4 + int.from_bytes(data[offset + 1 : offset + 4], "big")
        if header & 0x80:
            break
    starts = []
    i = offset
    while True:
        i = data.find(b"\xff", i)
        if i < 0 or i + 6 > len(data):
            break
        if data[i + 1] in (0xF8, 0xF9):
            try:
                _, body_start, _ = _flac_header_parts(data[i : i + 16])
                if _crc8(data[i : i + body_start - 1]) == data[i + body_start - 1] and (
                        not starts or _crc16(data[starts[-1] : i - 2]) == int.from_bytes(data[i - 2 : i], "big")):
                    starts.append(i)
            except (KeyError, IndexError):
                pass
        i += 1
    return list(zip(starts, starts[1:] + [len(data)]))


def flac_frames(path: Path) -> list[tuple[int, int]]:
    """(first byte, block size) of each frame of a native FLAC file."""
    data = path.read_bytes()
    return [(start, _flac_header_parts(data[start : start + 16])[2]) for start, _ in flac_frames_spans(data)]


def make_mpc(path: Path) -> None:
    """Musepack SV8 from mpcenc (musepack-tools)."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = write_wav16(Path(tmp) / "in.wav", music(), RATE)
        run_tool("mpcenc", "--silent", "--standard", wav, path)


def make_spx(path: Path) -> None:
    """Speex (ultra-wideband, 32 kHz, mono) in Ogg from speexenc: PyAV has no Speex encoder."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = write_wav16(Path(tmp) / "in.wav", music(rate=32000, channels=1), 32000)
        run_tool("speexenc", "-u", "--quality", "8", wav, path)


def _dsd_bits(samples: np.ndarray, oversample: int = 64) -> np.ndarray:
    """1-bit DSD of `samples` [frames, channels]: a first-order delta-sigma modulator (the
    error-feedback form: bit n is floor(S[n]) - floor(S[n-1]) of the running sum of the input
    mapped to 0..1), after linear interpolation to `oversample` x the rate. Uint8 0/1."""
    frames = len(samples)
    fine = np.arange(frames * oversample) / oversample
    bits = []
    for c in range(samples.shape[1]):
        x = np.interp(fine, np.arange(frames), samples[:, c].astype(np.float64)) * 0.5
        running = np.cumsum((x + 1) / 2)
        level = np.floor(running)
        bits.append(np.diff(level, prepend=0).astype(np.uint8))
    return np.stack(bits, axis=1)


def make_dsf(path: Path, seconds: float = SECONDS) -> None:
    """DSF (Sony's DSD Stream File, DSD64 stereo), constructed: no encoder of DSD exists in
    FFmpeg or Debian. Layout per the DSF 1.01 specification: 'DSD ' chunk, 'fmt ' chunk, 'data'
    chunk of 4096-byte blocks per channel, LSB first, the last block zero-padded."""
    import struct

    bits = _dsd_bits(music(seconds, RATE, 2))
    rate, channels, block = RATE * 64, 2, 4096
    count = len(bits)  # samples per channel
    per_channel = []
    for c in range(channels):
        packed = np.packbits(bits[:, c], bitorder="little")
        padded = np.zeros(-(-len(packed) // block) * block, np.uint8)
        padded[: len(packed)] = packed
        per_channel.append(padded.reshape(-1, block))
    body = np.stack(per_channel, axis=1).tobytes()  # block group: ch0 block, ch1 block, ...
    fmt = b"fmt " + struct.pack("<QIIIIIIQII", 52, 1, 0, 2, channels, rate, 1, count, block, 0)
    data = b"data" + struct.pack("<Q", 12 + len(body)) + body
    total = 28 + len(fmt) + len(data)
    path.write_bytes(b"DSD " + struct.pack("<QQQ", 28, total, 0) + fmt + data)


def make_dff(path: Path, seconds: float = SECONDS) -> None:
    """DSDIFF 1.5 (Philips' DSD Interchange File Format, DSD64 stereo), constructed like the
    DSF: 'FRM8' form 'DSD ' with FVER, PROP/SND (FS, CHNL, CMPR 'DSD '), and the 'DSD ' sound
    data chunk, channels interleaved byte by byte, MSB first."""
    import struct

    bits = _dsd_bits(music(seconds, RATE, 2))
    rate, channels = RATE * 64, 2
    packed = np.stack([np.packbits(bits[:, c], bitorder="big") for c in range(channels)], axis=1).tobytes()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return kind + struct.pack(">Q", len(payload)) + payload + (b"\0" if len(payload) % 2 else b"")

    name = b"not compressed"
    prop = b"SND " + chunk(b"FS  ", struct.pack(">I", rate)) \
        + chunk(b"CHNL", struct.pack(">H", channels) + b"SLFTSRGT") \
        + chunk(b"CMPR", b"DSD " + bytes([len(name)]) + name)
    form = b"DSD " + chunk(b"FVER", struct.pack(">I", 0x01050000)) + chunk(b"PROP", prop) + chunk(b"DSD ", packed)
    path.write_bytes(b"FRM8" + struct.pack(">Q", len(form)) + form)


# -- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One file to make and read.

    `cut`: what the cut copy is and what a correct decoder makes of it: "fails" (cut in the
    middle of a packet: one failed row naming the truncation, matching `cut_reason`) or
    "shorter" (cut between two packets where nothing in the file can tell: it must be read as
    a good, shorter file). `cut_note` says what in the cut copy shows it is cut (or why nothing
    does), measured with FFmpeg 5.1 (Debian's CLI) and 8.1 (PyAV's).
    """

    name: str  # the test id
    ext: str
    make: Callable[[Path], None] | None
    how: str  # for people: what made it
    channels: int = 2
    rate: int | None = RATE  # what library.sample_rate must say; None: not checked
    lossless: bool = False  # stores exactly pcm16(music()) at 44.1 kHz stereo
    needs: tuple[str, ...] = ()  # commands that must exist (Debian packages, .ci/run)
    skip: str | None = None
    cut: str = "fails"
    cut_reason: str = TRUNCATED
    cut_note: str = ""

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.ext}"


LOSSLESS = dict(lossless=True)
MOOV_FIRST = {"movflags": "+faststart"}  # what iTunes and most taggers write

# What tells each kind of cut copy from a good file. FFmpeg 5.1's CLI says nothing at all
# (`-v error`) of the cut MP3s, MP2s and Ogg files; PyAV raises nothing for those nor for
# the cut PCM, Matroska, AC-3 and DSD files (it logs some of them): for these the evidence is
# in the container or the last frame, which the decoder must check itself.
PCM_CUT = ("the data chunk's declared size runs past the end of the file (FFmpeg logs 'Invalid PCM "
           "packet' for the split sample and decodes what is there)")
FLAC_CUT = ("FFmpeg's decoder fails on the partial last frame ('invalid residual', InvalidDataError) and "
            "STREAMINFO's sample count is more than decodes")
OGG_CUT = ("the last Ogg page's header announces more bytes than remain, and there is no end-of-stream "
           "page; FFmpeg and PyAV are silent and decode the complete pages")
FRAMES_CUT = ("the last frame's header declares more bytes than remain (FFmpeg's demuxer hands the "
              "partial frame on; its decoders drop it silently or log 'incomplete frame')")
XING_CUT = "the Info/Xing frame's frame count is more than decodes; the last frame is partial too"
MOV_CUT = ("the sample table (moov, at the front) lists samples past the end of the file: FFmpeg logs "
           "'partial file' and the decoder raises on the partial last packet")
MKV_CUT = ("the EBML sizes of the segment and cluster run past the end; FFmpeg logs 'File ended "
           "prematurely' but PyAV raises nothing")

CASES: list[Case] = [
    # PCM and lossless: the same 16-bit PCM in each (one audio id for all of them)
    Case("wav", "wav", _av("pcm_s16le", "wav"), "PyAV pcm_s16le in WAV", cut_note=PCM_CUT, **LOSSLESS),
    Case("flac", "flac", _av("flac", "flac", sample_fmt="s16"), "PyAV flac (FFmpeg's encoder, fixed blocks)",
         cut_note=FLAC_CUT, **LOSSLESS),
    Case("flac-flake-variable", "flac", make_flac_flake_variable, "flake -v 2 (Debian: flake): block sizes "
         "vary, written the pre-2007 way (fixed-blocking bit, frame numbers)", needs=("flake",),
         cut_note=FLAC_CUT, **LOSSLESS),
    Case("flac-variable-blocksize", "flac", make_flac_variable_blocksize, "constructed from flake's frames: "
         "headers rewritten to variable blocking (0xFFF9, sample numbers), CRCs redone", needs=("flake",),
         cut_note=FLAC_CUT, **LOSSLESS),
    Case("aif", "aif", _av("pcm_s16be", "aiff"), "PyAV pcm_s16be in AIFF", cut_note=PCM_CUT, **LOSSLESS),
    Case("aiff", "aiff", _av("pcm_s16be", "aiff"), "PyAV pcm_s16be in AIFF", cut_note=PCM_CUT, **LOSSLESS),
    Case("aifc", "aifc", _av("pcm_s16le", "aiff"), "PyAV pcm_s16le in AIFF-C ('sowt', as macOS writes)",
         cut_note=PCM_CUT, **LOSSLESS),
    Case("caf", "caf", _av("pcm_s16be", "caf"), "PyAV pcm_s16be in CAF", cut_note=PCM_CUT, **LOSSLESS),
    Case("w64", "w64", _av("pcm_s16le", "w64"), "PyAV pcm_s16le in Sony Wave64", cut_note=PCM_CUT, **LOSSLESS),
    Case("alac", "m4a", _av("alac", "ipod", sample_fmt="s16p", container_options=MOOV_FIRST),
         "PyAV alac in M4A (moov first)", cut_note=MOV_CUT, **LOSSLESS),
    Case("wv", "wv", _av("wavpack", "wv", sample_fmt="s16p"), "PyAV wavpack (lossless) in WV",
         cut_note="the last block's header declares more bytes than remain: FFmpeg's demuxer raises", **LOSSLESS),
    Case("tta", "tta", _av("tta", "tta", sample_fmt="s16"), "PyAV tta",
         cut_note="the header's sample count and frame index run past the end: FFmpeg's decoder raises",
         **LOSSLESS),
    Case("oga", "oga", _av("flac", "ogg", sample_fmt="s16"), "PyAV flac in Ogg (Ogg FLAC), named .oga",
         cut_note=OGG_CUT, **LOSSLESS),
    Case("ogg-flac", "ogg", _av("flac", "ogg", sample_fmt="s16"), "PyAV flac in Ogg (Ogg FLAC), named .ogg",
         cut_note=OGG_CUT, **LOSSLESS),
    Case("mka", "mka", _av("flac", "matroska", sample_fmt="s16"), "PyAV flac in Matroska", cut_note=MKV_CUT,
         **LOSSLESS),
    # lossy
    Case("mp3", "mp3", _av("libmp3lame", "mp3", bit_rate=192_000), "PyAV libmp3lame CBR with its Info frame",
         cut_note=XING_CUT),
    Case("mp3-no-xing-vbr", "mp3", make_mp3_noxing_vbr, "lame -V 4 -t (Debian: lame): VBR, no Xing frame",
         needs=("lame",), cut_note=FRAMES_CUT + "; nothing else: no Xing frame, no ID3v1 tag"),
    Case("mp3-no-xing-cut-between-frames", "mp3", make_mp3_noxing_vbr_low, "lame -V 7 -t (Debian: lame): "
         "VBR, no Xing frame; its cut copy ends between two frames", needs=("lame",), cut="shorter",
         cut_note="an MP3 without a Xing/VBRI/Info frame and without an ID3v1 tag is a plain run of frames: "
         "cut between two frames it is a complete, shorter MP3, and nothing in it says otherwise. It must be "
         "read as good (no header estimate may call it truncated)"),
    Case("mp3-no-xing-cbr", "mp3", _av("libmp3lame", "mp3", bit_rate=128_000,
                                       container_options={"write_xing": "0"}),
         "PyAV libmp3lame CBR, muxer option write_xing=0", cut_note=FRAMES_CUT),
    Case("mp3-id3v1-id3v2", "mp3", make_mp3_id3v1v2, "PyAV libmp3lame CBR without Info frame, then mutagen: "
         "ID3v2.3 and ID3v1", cut_note=FRAMES_CUT + " (the cut takes the ID3v1 tag away)"),
    Case("mp3-id3-padding", "mp3", make_mp3_id3_padding, "PyAV libmp3lame with its Info frame, then mutagen: "
         "ID3v2.4 with 256 KiB padding", cut_note=XING_CUT),
    Case("mp3-id3-padding-no-xing", "mp3", make_mp3_id3_padding_no_xing, "PyAV libmp3lame CBR without Info "
         "frame, then mutagen: ID3v2.4 with 256 KiB padding", cut_note=FRAMES_CUT),
    Case("mp2", "mp2", _av("mp2", "mp2", bit_rate=192_000), "PyAV mp2 (MPEG-1 Layer II)", cut_note=FRAMES_CUT),
    Case("ogg", "ogg", _av("vorbis", "ogg", strict=True), "PyAV vorbis (FFmpeg's native encoder) in Ogg",
         cut_note=OGG_CUT),
    Case("opus", "opus", _av("libopus", "opus", rate=48000, seconds=10.0, bit_rate=96_000),
         "PyAV libopus in Ogg, 10 s (past libsndfile's 262,144-frame failure)", rate=48000, cut_note=OGG_CUT),
    Case("webm", "webm", _av("libopus", "webm", rate=48000, bit_rate=96_000), "PyAV libopus in WebM",
         rate=48000, cut_note=MKV_CUT),
    Case("m4a", "m4a", _av("aac", "ipod", bit_rate=160_000, container_options=MOOV_FIRST),
         "PyAV aac in M4A (moov first)", cut_note=MOV_CUT),
    Case("m4b", "m4b", _av("aac", "ipod", bit_rate=96_000, container_options=MOOV_FIRST),
         "PyAV aac in M4B (audiobook; moov first)", cut_note=MOV_CUT),
    Case("mp4", "mp4", _av("aac", "mp4", bit_rate=128_000), "PyAV aac in MP4, audio only, moov last (FFmpeg's "
         "default)", cut_reason=TRUNCATED + "|moov",
         cut_note="the index (moov) was at the end and is gone: FFmpeg cannot open it ('moov atom not "
         "found'); the mdat box's size runs past the end of the file"),
    Case("3g2", "3g2", _av("aac", "3g2", bit_rate=64_000, container_options=MOOV_FIRST),
         "PyAV aac in 3GPP2 (moov first)", cut_note=MOV_CUT),
    Case("aac", "aac", _av("aac", "adts", bit_rate=128_000), "PyAV aac in ADTS (raw .aac)",
         cut_note=FRAMES_CUT + "; FFmpeg's AAC decoder raises on it"),
    Case("wma", "wma", _av("wmav2", "asf", bit_rate=128_000), "PyAV wmav2 in ASF",
         cut_note="the ASF header's packet count and duration are more than is there; the wmav2 decoder "
         "raises on the partial packet ('Input packet size too small')"),
    Case("ac3", "ac3", _av("ac3", "ac3", rate=48000, bit_rate=192_000), "PyAV ac3 (raw)", rate=48000,
         cut_note=FRAMES_CUT),
    Case("eac3", "eac3", _av("eac3", "eac3", rate=48000, bit_rate=192_000), "PyAV eac3 (raw)", rate=48000,
         cut_note=FRAMES_CUT),
    Case("mpc", "mpc", make_mpc, "mpcenc --standard (Debian: musepack-tools), SV8", needs=("mpcenc",),
         cut_note="the SV8 stream header's sample count is more than decodes, and the stream-end packet is "
         "gone; PyAV demuxes no packet at all from the cut copy (FFmpeg 5.1's CLI decodes most of it)"),
    Case("spx", "spx", make_spx, "speexenc -u (Debian: speex), 32 kHz mono", channels=1, rate=32000,
         needs=("speexenc",), cut_note=OGG_CUT),
    # a video container: its first audio stream is the one to read
    Case("mp4-video-first", "mp4", lambda p: encode_av(p, "aac", "mp4", bit_rate=128_000, container_options=MOOV_FIRST,
                                                       video=av_encoder("libx264", "mpeg4", "mpeg2video")),
         "PyAV: stream 0 video (libx264, else mpeg4), stream 1 aac; moov first", cut_note=MOV_CUT),
    # no encoder: constructed (DSD) or skipped
    Case("dsf", "dsf", make_dsf, "constructed: DSF container + first-order delta-sigma (no DSD encoder exists "
         "in FFmpeg or Debian)", rate=None,
         cut_note="the data chunk's size and the fmt chunk's sample count run past the end; FFmpeg's decoder "
         "fails on the partial block ('get_buffer() failed', EINVAL)"),
    Case("dff", "dff", make_dff, "constructed: DSDIFF container + first-order delta-sigma (no DSD encoder "
         "exists in FFmpeg or Debian)", rate=None,
         cut_note="the FRM8 and DSD chunk sizes run past the end; FFmpeg's decoder fails on the partial packet"),
    Case("ape", "ape", None, "", skip="Monkey's Audio: FFmpeg decodes APE but has no encoder, and Debian 12's "
         "main archive has no Monkey's Audio encoder (mac / monkeys-audio are not in it)"),
    Case("tak", "tak", None, "", skip="TAK: FFmpeg decodes it but has no encoder; the only encoder is the "
         "closed-source Windows program, not packaged for Linux"),
]

BY_NAME = {case.name: case for case in CASES}


def extensions() -> list[str]:
    """Every extension the table has a file for, or a reason not to."""
    return sorted({case.ext for case in CASES})


def missing_tools(case: Case) -> list[str]:
    return [tool for tool in case.needs if shutil.which(tool) is None]


# -- cut copies ----------------------------------------------------------------------------------


def packet_spans(path: Path) -> list[tuple[int, int]]:
    """(first byte, size) of every packet of the first audio stream, as FFmpeg demuxes it.

    FFmpeg's packet position is where the packet's container unit starts (an Ogg page, a
    Matroska block, an ASF packet): the packet's own bytes are looked for from there."""
    import av

    data = path.read_bytes()
    spans = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for packet in container.demux(stream):
            if not packet.size or packet.pos is None or packet.pos < 0:
                continue
            head = bytes(packet)[:16]
            start = packet.pos if data[packet.pos : packet.pos + len(head)] == head else data.find(head, packet.pos)
            if start >= 0:
                spans.append((start, packet.size))
    return spans


def cut_offset(path: Path, fraction: float = 0.6, between_packets: bool = False) -> int:
    """A byte offset at about `fraction` of the file's audio data: halfway into the packet that
    holds that point, made odd so that it splits a PCM sample too; or, `between_packets`, where
    that packet starts (a cut no packet-level check can see)."""
    spans = packet_spans(path)
    if not spans:
        raise RuntimeError(f"FFmpeg finds no audio packets in {path}")
    first, end = spans[0][0], spans[-1][0] + spans[-1][1]
    target = first + int((end - first) * fraction)
    for start, length in spans:
        if start + length > target:
            if between_packets:
                return start
            cut = start + length // 2
            if cut % 2 == 0 and cut + 1 < start + length:
                cut += 1
            return cut
    raise AssertionError("unreachable: the last span ends at `end`")


def cut_copy(source: Path, target: Path, fraction: float = 0.6, between_packets: bool = False) -> int:
    """Write the first bytes of `source`, to `cut_offset`, to `target`; returns how many."""
    offset = cut_offset(source, fraction, between_packets)
    with source.open("rb") as f:
        target.write_bytes(f.read(offset))
    return offset


def ogg_last_page_complete(path: Path) -> bool:
    """Whether the last Ogg page of `path` holds all the bytes its header announces."""
    data = path.read_bytes()
    start = data.rfind(b"OggS")
    if start < 0 or len(data) < start + 27:
        return False
    segments = data[start + 26]
    table = data[start + 27 : start + 27 + segments]
    return len(table) == segments and start + 27 + segments + sum(table) <= len(data)


# -- FFmpeg's view, independent of muscat ---------------------------------------------------------


def reference_duration(path: Path) -> float:
    """Seconds of audio FFmpeg decodes from the first audio stream of `path`.

    With Debian's `ffmpeg`: decode it all, resampled to 8 kHz mono 16-bit, and count the bytes
    (a count of samples, not a header's claim). Without it: decode with PyAV and count frames.
    """
    if shutil.which("ffmpeg"):
        out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn",
                              "-ac", "1", "-ar", "8000", "-f", "s16le", "-"],
                             capture_output=True, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError(f"ffmpeg cannot decode {path}: {out.stderr.decode(errors='replace').strip()}")
        return len(out.stdout) / 2 / 8000
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames, rate = 0, None
        for frame in container.decode(stream):
            frames += frame.samples
            rate = frame.sample_rate
    return frames / rate if rate else 0.0


def ffmpeg_errors(path: Path) -> str:
    """What Debian's ffmpeg says (at -v error) while decoding `path`: empty when it is silent."""
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "null", "-"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return out.stderr.strip()


def flac_is_variable_blocksize(path: Path) -> bool:
    """True when the first frame header after the metadata says 'variable blocking' (0xFFF9)."""
    data = path.read_bytes()
    offset = 4
    while True:  # metadata blocks: 1 bit last, 7 bits type, 24 bits length
        header = data[offset]
        length = int.from_bytes(data[offset + 1 : offset + 4], "big")
        offset += 4 + length
        if header & 0x80:
            break
    return data[offset : offset + 2] == b"\xff\xf9"


# -- making them all -----------------------------------------------------------------------------


@dataclass
class Made:
    case: Case
    path: Path | None = None
    cut_path: Path | None = None
    cut_bytes: int = 0
    skip: str | None = None  # why this case has no file


def make_all(folder: Path, cases: list[Case] = CASES, threads: int | None = None) -> dict[str, Made]:
    """Write each case's file into `folder/good`, and its cut copy into `folder/cut` (several
    at a time: the encoders are other processes or release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    good, cut = folder / "good", folder / "cut"
    good.mkdir(parents=True, exist_ok=True)
    cut.mkdir(parents=True, exist_ok=True)

    def one(case: Case) -> Made:
        if case.skip or case.make is None:
            return Made(case, skip=case.skip or "no maker")
        absent = missing_tools(case)
        if absent:
            return Made(case, skip=f"needs {', '.join(absent)} (Debian packages that .ci/run installs)")
        path = good / case.filename
        case.make(path)
        cut_path = cut / f"cut-{case.filename}"
        return Made(case, path, cut_path, cut_copy(path, cut_path, between_packets=case.cut == "shorter"))

    with ThreadPoolExecutor(threads or min(4, (os.cpu_count() or 2))) as pool:
        return {m.case.name: m for m in pool.map(one, cases)}


def decoded_pcm16(path: Path) -> np.ndarray:
    """All of the first audio stream as interleaved 16-bit PCM [frames, channels] (PyAV)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout=stream.layout.name, rate=stream.rate)
        parts = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1, stream.channels))
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().reshape(-1, stream.channels))
    return np.concatenate(parts)


def _report(folder: Path) -> None:
    for name, m in make_all(folder).items():
        if m.skip:
            print(f"{name:26} SKIP {m.skip}")
            continue
        full = reference_duration(m.path)
        try:
            part = reference_duration(m.cut_path)
        except RuntimeError:
            part = float("nan")
        said = ffmpeg_errors(m.cut_path).replace("\n", " | ")[:150]
        print(f"{name:26} {m.path.stat().st_size:8} B {full:6.3f} s | cut at {m.cut_bytes:8} {part:6.3f} s | {said}")


if __name__ == "__main__":
    _report(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
