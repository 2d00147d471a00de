"""Evidence that a stream was cut short, beyond what the decoder reports itself.

FFmpeg decodes a cut file as far as it goes and often says nothing: it drops the torn last
packet of a raw MPEG, AC-3 or ADTS stream, and the torn last page of an Ogg file. A file is
called truncated only on evidence that the stream itself gives, never on an estimate:

- a length the container promises exactly (FLAC's STREAMINFO, the sample tables of MP4, the
  headers of WavPack, APE, TTA, DSF, ..., an MP3's Xing or VBRI frame count) and that the
  decoded audio falls short of;
- a last frame shorter than its own header says it is (raw MPEG audio, AC-3, E-AC-3, ADTS);
- an Ogg page that runs past the end of the file.

An MP3 without a Xing header gives no length at all: FFmpeg's and libsndfile's figures for it
are guesses from the bitrate, and good files decode to less than they say.
"""

from __future__ import annotations

# FFmpeg demuxers whose stream duration comes from the file's own header or index.
EXACT_LENGTH_FORMATS = {
    "flac", "wv", "ape", "tta", "tak", "dsf", "iff", "w64", "wav", "aiff", "caf",
    "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "mpc", "mpc8",
}
# Raw streams of frames that each announce their own length.
FRAMED_FORMATS = {"mp3", "mp2", "ac3", "eac3", "aac"}


def shortfall(declared_s: float | None, decoded_s: float) -> str | None:
    """Why the audio is truncated, if it is clearly shorter than an exact declared length.

    Encoder delay and edit lists move the end by a few milliseconds: tolerate 1% or 0.1 s."""
    if not declared_s or declared_s <= 0:
        return None
    if declared_s - decoded_s > max(0.01 * declared_s, 0.1):
        return f"truncated: the header promises {declared_s:.2f} s, only {decoded_s:.2f} s decode"
    return None


def mp3_declared_seconds(path: str) -> float | None:
    """An MP3's exact length from its Xing/Info or VBRI frame count (None without one)."""
    from mutagen import MutagenError
    from mutagen.mp3 import MP3

    try:
        info = MP3(path).info
    except (MutagenError, OSError, ValueError):
        return None
    # mutagen marks the length "sketchy" when it had no such header and guessed from the bitrate.
    return None if info.sketchy else float(info.length)


def torn_last_frame(container_format: str, packet: bytes) -> str | None:
    """Why the last packet of a raw framed stream is a torn frame, if it is one."""
    if container_format not in FRAMED_FORMATS or len(packet) < 7:
        return None
    expected = _frame_length(packet)
    if expected is not None and len(packet) < expected:
        return f"truncated: the last frame is cut ({len(packet)} of its {expected} bytes)"
    return None


def torn_ogg_page(path: str, size: int) -> str | None:
    """Why an Ogg file is truncated, if its last page runs past the end of the file."""
    tail_start = max(0, size - 65536)  # an Ogg page is at most 65,307 bytes
    with open(path, "rb") as f:
        f.seek(tail_start)
        tail = f.read()
    at = tail.rfind(b"OggS\x00")
    while at >= 0:
        header = tail[at:at + 27]
        if len(header) == 27:
            segments = header[26]
            table = tail[at + 27:at + 27 + segments]
            if len(table) < segments:
                return "truncated: the last Ogg page is cut"
            end = at + 27 + segments + sum(table)
            if end > len(tail):
                return "truncated: the last Ogg page is cut"
            return None
        at = tail.rfind(b"OggS\x00", 0, at)
    return None


def _frame_length(frame: bytes) -> int | None:
    if frame[0] == 0xFF and frame[1] & 0xF6 == 0xF0:  # ADTS (layer bits 00)
        return ((frame[3] & 0x03) << 11) | (frame[4] << 3) | (frame[5] >> 5)
    if frame[0] == 0xFF and frame[1] & 0xE0 == 0xE0:
        return _mpeg_audio_frame_length(frame)
    if frame[0] == 0x0B and frame[1] == 0x77:
        return _ac3_frame_length(frame)
    return None


_MPEG_KBPS = {  # (MPEG-1?, layer) -> bitrate per index
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mpeg_audio_frame_length(h: bytes) -> int | None:
    version, layer = (h[1] >> 3) & 0x03, 4 - ((h[1] >> 1) & 0x03)
    bitrate_index, rate_index, padding = h[2] >> 4, (h[2] >> 2) & 0x03, (h[2] >> 1) & 0x01
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None  # reserved values, or free format (no length in the header)
    mpeg1 = version == 3
    bitrate = _MPEG_KBPS[(mpeg1, layer)][bitrate_index] * 1000
    rate = _MPEG_RATES[version][rate_index]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    if layer == 3 and not mpeg1:
        return 72 * bitrate // rate + padding
    return 144 * bitrate // rate + padding


_AC3_KBPS = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 576, 640)


def _ac3_frame_length(h: bytes) -> int | None:
    bsid = h[5] >> 3
    if bsid > 10:  # E-AC-3: the frame size is in the header, in 16-bit words minus one
        return ((((h[2] & 0x07) << 8) | h[3]) + 1) * 2
    rate_code, size_code = h[4] >> 6, h[4] & 0x3F
    if rate_code == 3 or size_code >= 2 * len(_AC3_KBPS):
        return None
    kbps = _AC3_KBPS[size_code >> 1]
    if rate_code == 0:  # 48 kHz
        return kbps * 4
    if rate_code == 2:  # 32 kHz
        return kbps * 6
    return 2 * (1536 * kbps * 125 // 44100 // 2 + (size_code & 1))  # 44.1 kHz: padded frames
