"""Evidence that a stream was cut short, beyond what the decoder reports itself.

FFmpeg decodes a cut file as far as it goes and often says nothing: it drops the torn last
packet of a raw MPEG, AC-3 or ADTS stream, and the torn last page of an Ogg file. A file is
called truncated only on evidence that the stream itself gives, never on an estimate:

- a length the container promises exactly (FLAC's STREAMINFO, the sample tables of MP4, the
  headers of WavPack, APE, TTA, DSF, ..., an MP3's Xing or VBRI frame count) and that the
  decoded audio falls short of;
- a last frame shorter than its own header says it is (raw MPEG audio, AC-3, E-AC-3, ADTS);
- an Ogg page, an MP4 box, a W64/CAF/WAV/AIFF chunk, a Matroska segment or a Musepack packet
  that runs past the end of the file (the sizes a muxer writes are exact).

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


def container_overrun(path: str, size: int) -> str | None:
    """Why the file is truncated, if a size its container declares runs past its end."""
    with open(path, "rb") as f:
        head = f.read(16)
        if head[:4] in (b"RIFF", b"FORM"):
            declared_end = _riff_data_end(f, head)
            what = "the header declares"
        elif head[:4] == b"riff" and head[4:16] == _W64_RIFF_TAIL:
            declared_end, what = _chunk_walk(f, 40, 16, 8, "little", header_in_size=True, align=8), \
                "a W64 chunk runs to"
        elif head[:4] == b"caff":
            declared_end, what = _chunk_walk(f, 8, 4, 8, "big", header_in_size=False, align=1, signed=True), \
                "a CAF chunk runs to"
        elif head[4:8] == b"ftyp":
            declared_end, what = _chunk_walk(f, 0, 4, 4, "big", header_in_size=True, align=1, size_first=True), \
                "an MP4 box runs to"
        elif head[:4] == b"\x1a\x45\xdf\xa3":
            declared_end, what = _matroska_segment_end(f), "the Matroska segment runs to"
        elif head[:4] == b"MPCK":
            return _musepack_cut(f, size)
        else:
            return None
    if declared_end is not None and declared_end > size:
        return f"truncated: {what} byte {declared_end}, the file has {size}"
    return None


_W64_RIFF_TAIL = bytes.fromhex("2e91cf11a5d628db04c10000")


def _riff_data_end(f, head: bytes) -> int | None:  # type: ignore[no-untyped-def]
    """Where the sample data a WAV or AIFF header declares ends (libsndfile trusts the file size)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        little, wanted = True, b"data"
    elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        little, wanted = False, b"SSND"
    else:
        return None
    offset = 12
    while True:
        f.seek(offset)
        chunk = f.read(8)
        if len(chunk) < 8:
            return None
        length = int.from_bytes(chunk[4:8], "little" if little else "big")
        if chunk[:4] == wanted:
            return offset + 8 + length
        offset += 8 + length + (length & 1)


def _chunk_walk(f, offset: int, id_bytes: int, size_bytes: int, order: str, *,  # type: ignore[no-untyped-def]
                header_in_size: bool, align: int, size_first: bool = False, signed: bool = False) -> int | None:
    """The end of the first chunk (or box) that runs past the end of the file, else None.

    Chunks are an id and a size (MP4 boxes: the size first, 1 meaning a 64-bit size after the
    type, 0 meaning "to the end of the file"; CAF: -1 for a data chunk of unknown length)."""
    f.seek(0, 2)
    end_of_file = f.tell()
    while offset < end_of_file:
        f.seek(offset)
        header = f.read(id_bytes + size_bytes)
        if len(header) < id_bytes + size_bytes:
            return offset + id_bytes + size_bytes  # a torn chunk header
        raw = header[:size_bytes] if size_first else header[id_bytes:]
        length = int.from_bytes(raw, order, signed=signed)
        header_length = id_bytes + size_bytes
        if size_first and length == 1:
            large = f.read(8)
            if len(large) < 8:
                return offset + 16
            length, header_length = int.from_bytes(large, "big"), 16
        if (size_first and length == 0) or length < 0:
            return None  # runs to the end of the file, whatever its length
        total = length if header_in_size else header_length + length
        if total < header_length:
            return None  # not a chunk structure we understand: no evidence
        if offset + total > end_of_file:
            return offset + total
        offset += total + (-total % align)
    return None


def _ebml_vint(f) -> tuple[int, int] | None:  # type: ignore[no-untyped-def]
    """(value, was-all-ones) of an EBML variable-size integer at the file's position."""
    first = f.read(1)
    if not first or first[0] == 0:
        return None
    length = 8 - first[0].bit_length() + 1
    rest = f.read(length - 1)
    if len(rest) < length - 1:
        return None
    value = first[0] & (0xFF >> length)
    for byte in rest:
        value = (value << 8) | byte
    return value, value == (1 << (7 * length)) - 1


def _matroska_segment_end(f) -> int | None:  # type: ignore[no-untyped-def]
    f.seek(4)
    header = _ebml_vint(f)
    if header is None:
        return None
    f.seek(f.tell() + header[0])
    if f.read(4) != b"\x18\x53\x80\x67":  # Segment
        return None
    segment = _ebml_vint(f)
    if segment is None or segment[1]:
        return None  # unknown size (a live stream): no promise
    return f.tell() + segment[0]


def _musepack_cut(f, size: int) -> str | None:  # type: ignore[no-untyped-def]
    """Musepack SV8: packets of a 2-letter key and a size; a whole stream ends with "SE"."""
    offset = 4
    while offset < size:
        f.seek(offset)
        key = f.read(2)
        length, count = 0, 0
        while True:
            byte = f.read(1)
            if not byte:
                return "truncated: the last Musepack packet is cut"
            length, count = (length << 7) | (byte[0] & 0x7F), count + 1
            if not byte[0] & 0x80 or count == 9:
                break
        if length < 2 + count:
            return None
        if key == b"SE":
            return None
        if offset + length > size:
            return "truncated: the last Musepack packet is cut"
        offset += length
    return "truncated: the Musepack stream has no end packet"
