"""notes: polyphonic transcription with Basic Pitch (Spotify; its ONNX model ships in its wheel)
on the mix, or on the harmonic stems (bass + other + vocals, no drums) when demucs has separated
the audio and `use_stems` is on, as hpcp does: a result read on the mix turns stale (`input`)
once the stems exist.

The notes go to a MIDI file (`<artifacts_dir>/notes/<name>-<audio id>/notes.mid`, kind `midi`)
and are summarised: how many, how dense, their range, how many sound at once, and a
duration-weighted pitch-class profile (C first, sums to 1; flat when there are no notes).
Parameters are Basic Pitch's own, with its defaults; extractors/_basic_pitch.py runs it.
"""

from __future__ import annotations

from catalog.extractor import Artifact, Extractor, Made, Output

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

EXTRACTOR = Extractor(
    name="notes",
    version=1,
    device="cpu",
    description="Polyphonic notes (Basic Pitch) as MIDI: count, rate, range, polyphony, pitch-class profile.",
    uses=("demucs",),  # the harmonic stems, when separated (and use_stems is on)
    on_by_default=False,  # about twice the whole CPU set's time per track: a user opts in
    params={
        "onset_threshold": 0.5,
        "frame_threshold": 0.3,
        "minimum_note_length": 127.7,  # ms
        "minimum_frequency": 27.5,  # Hz; 27.5 (A0) and 4186 (C8) are the model's whole range
        "maximum_frequency": 4186.0,
        "melodia_trick": True,
        "use_stems": True,
    },
    outputs=[
        Output("note_count", "notes", (0, 20000), "scalar", "Notes transcribed"),
        Output("note_rate", "notes/s", (0, 30), "scalar", "Notes per second of audio"),
        Output("note_pitch_min", "MIDI note", (21, 108), "scalar", "Lowest note (A4 = 69)"),
        Output("note_pitch_max", "MIDI note", (21, 108), "scalar", "Highest note (A4 = 69)"),
        Output("note_pitch_median", "MIDI note", (21, 108), "scalar", "Median note, each note counted once"),
        Output("polyphony_mean", "notes", (1, 10), "scalar",
               "Notes sounding at once, averaged over the time any note sounds"),
        Output("note_duration_median", "s", (0.05, 4), "scalar", "Median note length"),
        Output("pitch_class_profile", "", (0, 1), "vector",
               "Duration-weighted share of each pitch class in the notes, C first; sums to 1", size=12,
               labels=PITCH_CLASSES),
        Output("notes_source", "", None, "categorical", "What it listened to: mix or stems"),
    ],
)


def uses(params):  # type: ignore[no-untyped-def]
    return ["demucs"] if params["use_stems"] else []


def available(params):  # type: ignore[no-untyped-def]
    from extractors import _basic_pitch

    return _basic_pitch.available(params)


def weights_fingerprint(params):  # type: ignore[no-untyped-def]
    from extractors import _basic_pitch

    return _basic_pitch.weights_fingerprint()


def extract(audio, params, inputs):  # type: ignore[no-untyped-def]
    import numpy as np

    from catalog.artifacts import track_folder, write_atomically
    from extractors import _basic_pitch as bp

    stems = inputs.stems_mono("demucs", ("bass", "other", "vocals")) if params["use_stems"] else None
    mono = stems if stems is not None else audio.mono()
    notes = bp.transcribe(bp.to_model_rate(mono), params)
    path = track_folder(inputs.artifacts_dir, "notes", audio.path, audio.audio_id) / "notes.mid"
    write_atomically(path, bp.midi_bytes(notes, program=0, name="notes"))
    seconds = max(len(mono) / 44100, 1e-9)
    pitches = np.array([n.pitch for n in notes], dtype=float)
    durations = np.array([n.end - n.start for n in notes])
    values = {
        "note_count": len(notes),
        "note_rate": len(notes) / seconds,
        "note_pitch_min": pitches.min() if notes else None,
        "note_pitch_max": pitches.max() if notes else None,
        "note_pitch_median": float(np.median(pitches)) if notes else None,
        "polyphony_mean": bp.polyphony_mean(notes),
        "note_duration_median": float(np.median(durations)) if notes else None,
        "pitch_class_profile": bp.pitch_class_profile(notes),
        "notes_source": "stems" if stems is not None else "mix",
    }
    return Made(values, [Artifact("midi", "mid", str(path), path.stat().st_size)])
