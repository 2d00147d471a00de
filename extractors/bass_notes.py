"""bass_notes: the bass line as notes, with Basic Pitch (its ONNX model ships in its wheel) on
demucs' bass stem, so it runs where demucs does. An audio whose separation failed is read on the
mix, recorded as such, and turns stale once its stems exist (as bass_pitch).

Only the bass register counts (30-400 Hz by default: B0 to G4), and the notes are made
monophonic (one at a time: of notes starting together the strongest stays, a note still sounding
when the next starts is cut there). They go to a MIDI file
(`<artifacts_dir>/bass_notes/<name>-<audio id>/bass.mid`, kind `midi`, program 33: electric bass).
extractors/_basic_pitch.py runs the model.
"""

from __future__ import annotations

from catalog.extractor import Artifact, Extractor, Made, Output

EXTRACTOR = Extractor(
    name="bass_notes",
    version=1,
    device="cpu",
    uses=("demucs",),  # the bass stem
    needs=("demucs",),
    on_by_default=False,  # as notes: Basic Pitch costs about twice the CPU set; a user opts in
    description="Bass line as monophonic notes (Basic Pitch on the bass stem) as MIDI: count, rate, range.",
    params={
        "onset_threshold": 0.5,
        "frame_threshold": 0.3,
        "minimum_note_length": 127.7,  # ms, also after the monophonic clean-up
        "minimum_frequency": 30.0,  # Hz: the bass register
        "maximum_frequency": 400.0,
        "melodia_trick": True,
    },
    outputs=[
        Output("bass_note_count", "notes", (0, 10000), "scalar", "Bass notes transcribed"),
        Output("bass_note_rate", "notes/s", (0, 12), "scalar", "Bass notes per second of audio"),
        Output("bass_pitch_min", "MIDI note", (23, 67), "scalar", "Lowest bass note (A4 = 69)"),
        Output("bass_pitch_max", "MIDI note", (23, 67), "scalar", "Highest bass note (A4 = 69)"),
        Output("bass_note_duration_median", "s", (0.05, 4), "scalar", "Median bass note length"),
        Output("bass_notes_source", "", None, "categorical", "What it listened to: stems (bass) or mix"),
    ],
)


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

    stem = inputs.stems_mono("demucs", ("bass",))
    mono = stem if stem is not None else audio.mono()
    found = bp.transcribe(bp.to_model_rate(mono), params)
    notes = bp.monophonic(found, params["minimum_note_length"] / 1000)
    path = track_folder(inputs.artifacts_dir, "bass_notes", audio.path, audio.audio_id) / "bass.mid"
    write_atomically(path, bp.midi_bytes(notes, program=33, name="bass"))
    seconds = max(len(mono) / 44100, 1e-9)
    pitches = [n.pitch for n in notes]
    values = {
        "bass_note_count": len(notes),
        "bass_note_rate": len(notes) / seconds,
        "bass_pitch_min": min(pitches) if notes else None,
        "bass_pitch_max": max(pitches) if notes else None,
        "bass_note_duration_median": float(np.median([n.end - n.start for n in notes])) if notes else None,
        "bass_notes_source": "stems" if stem is not None else "mix",
    }
    return Made(values, [Artifact("midi", "mid", str(path), path.stat().st_size)])
