"""probe: what the file holds. Runs first on every file: the decode that yields these values
also yields the audio's id (catalog/decode.py: its samples, or its encoded packets).

Version 2: FFmpeg decodes what libsndfile did not read right (MP3 lengths, Opus, WMA, ...),
and reports bit depths of lossless codecs and codec names of its own."""

from __future__ import annotations

from catalog.extractor import Extractor, Output

EXTRACTOR = Extractor(
    name="probe",
    version=2,
    device="cpu",
    scope="file",
    description="Duration, format and encoding of the file, from decoding it.",
    outputs=[
        Output("duration", "s", (0, 3600), "scalar", "Length of the decoded audio"),
        Output("sample_rate", "Hz", (8000, 192000), "scalar", "Sample rate of the stream"),
        Output("channels", "channels", (1, 8), "scalar", "Number of channels"),
        Output("bit_depth", "bits", (8, 32), "scalar", "Bits per sample of PCM codecs; NULL for lossy codecs"),
        Output("bitrate", "kbps", (32, 5000), "scalar", "File size over duration (whole-file average)"),
        Output("codec", "", None, "categorical", "Codec, or the container for PCM (flac, wav, mp3, vorbis, opus, aac, alac, wavpack, ...)"),
    ],
)


def extract(audio, params):  # type: ignore[no-untyped-def]
    return {
        "duration": audio.duration,
        "sample_rate": audio.sample_rate,
        "channels": audio.channels,
        "bit_depth": audio.bit_depth,
        "bitrate": audio.file_size * 8 / audio.duration / 1000 if audio.duration else None,
        "codec": audio.codec,
    }
