"""Synthesised music with known tempo and key, for the tempo and key evaluations.

Drums (kick, snare, closed and open hi-hat, ride), a bass line and piano-like chords, all made
with numpy from a seed, so every run hears the same pieces. A piece is a list of patterns: for
each instrument, the onsets of one bar in beats (a swung or syncopated pattern is just other
numbers). Timing is humanised by a few milliseconds and velocities vary, as a drummer's do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SR = 44100
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def _kick(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.25 * SR)) / SR
    pitch = 50 + 100 * np.exp(-t * 30)  # the thump's downward sweep
    return np.sin(2 * np.pi * np.cumsum(pitch) / SR) * np.exp(-t * 14)


def _snare(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.18 * SR)) / SR
    noise = np.diff(rng.standard_normal(len(t) + 1))  # brighter than white
    return (0.6 * noise * np.exp(-t * 22) + 0.5 * np.sin(2 * np.pi * 185 * t) * np.exp(-t * 30))


def _hat(rng: np.random.Generator, open_: bool = False) -> np.ndarray:
    t = np.arange(int((0.25 if open_ else 0.05) * SR)) / SR
    noise = np.diff(np.diff(rng.standard_normal(len(t) + 2)))  # mostly above 5 kHz
    return 0.25 * noise * np.exp(-t * (12 if open_ else 90))


def _ride(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.6 * SR)) / SR
    partials = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) for f in (3150, 4470, 5320, 6810, 8270))
    return 0.12 * (partials / 5 + 0.5 * np.diff(rng.standard_normal(len(t) + 1))) * np.exp(-t * 6)


def _tone(freq: float, seconds: float, harmonics: int, decay: float, brightness: float = 1.0) -> np.ndarray:
    """A note: harmonics falling off as 1/k^brightness, a 5 ms attack and an exponential decay."""
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k**brightness for k in range(1, harmonics + 1)
               if freq * k < SR / 2 - 1000)
    envelope = np.minimum(1.0, t / 0.005) * np.exp(-t * decay) * np.minimum(1.0, (seconds - t) / 0.02)
    return wave * envelope


def _add(out: np.ndarray, sound: np.ndarray, at: float, gain: float) -> None:
    start = int(at * SR)
    if 0 <= start < len(out):
        end = min(len(out), start + len(sound))
        out[start:end] += gain * sound[: end - start]


@dataclass(frozen=True)
class Groove:
    """One bar of drums: onsets in beats for each instrument, the bar's length in beats."""

    name: str
    beats_per_bar: float
    kick: tuple[float, ...]
    snare: tuple[float, ...] = ()
    hat: tuple[float, ...] = ()
    open_hat: tuple[float, ...] = ()
    ride: tuple[float, ...] = ()
    swing: float = 0.0  # delay of each off-beat eighth, in beats (1/6: triplet swing)


EIGHTHS = tuple(i / 2 for i in range(8))
SIXTEENTHS = tuple(i / 4 for i in range(16))
GROOVES = {
    "rock": Groove("rock", 4, kick=(0, 2), snare=(1, 3), hat=EIGHTHS),
    "four_on_the_floor": Groove("four_on_the_floor", 4, kick=(0, 1, 2, 3), snare=(1, 3), hat=(0, 1, 2, 3),
                                open_hat=(0.5, 1.5, 2.5, 3.5)),
    "swing": Groove("swing", 4, kick=(0, 2.5), snare=(1, 3), ride=(0, 1, 1.5, 2, 3, 3.5),
                    hat=(1, 3), swing=1 / 6),
    "funk": Groove("funk", 4, kick=(0, 0.75, 2.5), snare=(1, 3, 3.75), hat=SIXTEENTHS),
    "half_time": Groove("half_time", 4, kick=(0, 1.5), snare=(2,), hat=EIGHTHS),
    "breakbeat": Groove("breakbeat", 4, kick=(0, 1.5, 2.5), snare=(1, 3), hat=EIGHTHS),
    "waltz": Groove("waltz", 3, kick=(0,), snare=(1, 2), hat=(0, 0.5, 1, 1.5, 2, 2.5)),
    "shuffle_12_8": Groove("shuffle_12_8", 4, kick=(0, 2, 2 + 2 / 3), snare=(1, 3),
                           hat=tuple(b + i / 3 for b in range(4) for i in range(3))),
    "five_four": Groove("five_four", 5, kick=(0, 2.5, 3), snare=(1, 4), hat=tuple(i / 2 for i in range(10))),
    # 6/8 counted in two dotted-quarter beats, three eighths each: the tempo is the dotted quarter's.
    "six_eight": Groove("six_eight", 2, kick=(0, 1 + 2 / 3), snare=(1,), hat=tuple(i / 3 for i in range(6))),
    "reggaeton": Groove("reggaeton", 4, kick=(0, 1, 2, 3), snare=(0.75, 1.5, 2.75, 3.5), hat=EIGHTHS),
    "sparse": Groove("sparse", 4, kick=(0,), snare=(2,), hat=(0, 1, 2, 3)),
}


@dataclass(frozen=True)
class TempoPiece:
    name: str
    bpm: float
    groove: str
    bass: bool
    chords: bool = False
    seconds: float = 24.0
    seed: int = 0
    notes: str = ""


# 22 pieces from 60 to 200 BPM. Each style at tempi where it is played; 14 with a bass line.
TEMPO_SET = [
    TempoPiece("ballad_60", 60, "rock", bass=True, chords=True, seed=1),
    TempoPiece("sparse_64", 64, "sparse", bass=True, chords=True, seed=2),
    TempoPiece("hiphop_funk_72", 72, "funk", bass=False, seed=3),
    TempoPiece("half_time_75", 75, "half_time", bass=True, seed=4),
    TempoPiece("reggaeton_84", 84, "reggaeton", bass=True, seed=5),
    TempoPiece("waltz_88", 88, "waltz", bass=True, chords=True, seed=6),
    TempoPiece("funk_96", 96, "funk", bass=True, seed=7),
    TempoPiece("shuffle_100", 100, "shuffle_12_8", bass=False, seed=8),
    TempoPiece("rock_108", 108, "rock", bass=False, seed=9),
    TempoPiece("five_four_112", 112, "five_four", bass=True, seed=10),
    TempoPiece("swing_118", 118, "swing", bass=True, chords=True, seed=11),
    TempoPiece("house_124", 124, "four_on_the_floor", bass=True, seed=12),
    TempoPiece("house_128", 128, "four_on_the_floor", bass=False, seed=13),
    TempoPiece("breakbeat_134", 134, "breakbeat", bass=False, seed=14),
    TempoPiece("six_eight_66", 66, "six_eight", bass=True, chords=True, seed=15),
    TempoPiece("waltz_150", 150, "waltz", bass=False, seed=16),
    TempoPiece("rock_156", 156, "rock", bass=True, seed=17),
    TempoPiece("swing_164", 164, "swing", bass=False, seed=18),
    TempoPiece("breakbeat_172", 172, "breakbeat", bass=True, seed=19),
    TempoPiece("punk_180", 180, "rock", bass=True, chords=True, seed=20),
    TempoPiece("swing_190", 190, "swing", bass=True, seed=21),
    TempoPiece("four_on_the_floor_200", 200, "four_on_the_floor", bass=False, seed=22),
]

# Where each groove is played, for sets drawn at random (held_out_tempo_set).
GROOVE_TEMPI = {"rock": (60, 200), "four_on_the_floor": (110, 200), "swing": (90, 200), "funk": (70, 115),
                "half_time": (60, 90), "breakbeat": (120, 180), "waltz": (80, 180), "shuffle_12_8": (70, 130),
                "five_four": (90, 160), "six_eight": (50, 90), "reggaeton": (85, 100), "sparse": (60, 90)}


def random_tempo_set(seed: int, count: int) -> list[TempoPiece]:
    """count pieces, each groove in turn at a tempo drawn within its range, bass and chords at
    random: a set that no threshold was set on, when its seed was not used for that."""
    rng = np.random.default_rng(seed)
    pieces = []
    for i in range(count):
        groove = list(GROOVE_TEMPI)[i % len(GROOVE_TEMPI)]
        bpm = float(np.round(rng.uniform(*GROOVE_TEMPI[groove]), 1))
        pieces.append(TempoPiece(f"{groove}_{bpm:g}", bpm, groove, bass=bool(rng.random() < 0.5),
                                 chords=bool(rng.random() < 0.3), seed=seed + i))
    return pieces


# The octave decision's thresholds were set on TEMPO_SET and random_tempo_set(1000, 30) and
# (5000, 36); this seed was used for nothing but measuring.
HELD_OUT_SEED = 9000


# A I-vi-IV-V-like walk for bass and chords: roots in semitones above the piece's tonic.
_ROOTS = (0, 9, 5, 7)


def tempo_piece(piece: TempoPiece) -> np.ndarray:
    """The piece as mono float32 at 44.1 kHz, peak about -3 dBFS."""
    rng = np.random.default_rng(piece.seed)
    groove = GROOVES[piece.groove]
    beat = 60.0 / piece.bpm
    out = np.zeros(int(piece.seconds * SR))
    sounds = {"kick": _kick(rng), "snare": _snare(rng), "hat": _hat(rng), "open_hat": _hat(rng, True),
              "ride": _ride(rng)}
    gains = {"kick": 0.9, "snare": 0.7, "hat": 0.35, "open_hat": 0.3, "ride": 0.5}
    tonic = 36 + int(rng.integers(0, 12))  # MIDI note of the bass's tonic, C2..B2
    bar_seconds = groove.beats_per_bar * beat
    for bar, start in enumerate(np.arange(0.0, piece.seconds, bar_seconds)):
        root = tonic + _ROOTS[bar % len(_ROOTS)]
        for instrument in ("kick", "snare", "hat", "open_hat", "ride"):
            for position in getattr(groove, instrument):
                swung = position + (groove.swing if (position * 2) % 2 == 1 else 0.0)
                at = start + swung * beat + rng.normal(0, 0.004)
                accent = 1.0 if position == int(position) else 0.75
                _add(out, sounds[instrument], at, gains[instrument] * accent * rng.uniform(0.85, 1.0))
        if piece.bass:  # on the kicks, the bar's root, an octave jump now and then
            for position in groove.kick:
                freq = 440 * 2 ** ((root + 12 * (rng.random() < 0.2) - 69) / 12)
                _add(out, _tone(freq, 0.9 * beat, 6, 3.0, 1.3), start + position * beat, 0.35)
        if piece.chords:  # a sustained triad per bar, in the middle register
            third = 3 if bar % len(_ROOTS) == 1 else 4
            for interval in (0, third, 7):
                freq = 440 * 2 ** ((root + 24 + interval - 69) / 12)
                _add(out, _tone(freq, bar_seconds, 5, 0.8), start, 0.08)
    return (0.7 * out / np.max(np.abs(out))).astype(np.float32)


def accuracy(estimated: float, truth: float) -> tuple[bool, bool]:
    """(accuracy1, accuracy2) of one estimate: within 4% of the truth; or of its double, half,
    triple or third (the octave and metre errors accuracy2 forgives)."""
    def close(value: float) -> bool:
        return abs(estimated - value) <= 0.04 * value

    return close(truth), any(close(truth * factor) for factor in (1, 2, 0.5, 3, 1 / 3))


# --- key ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeyPiece:
    tonic: str
    scale: str  # major or minor
    timbre: str  # piano, organ (many harmonics, no decay), strings (slow attack), guitar (bright, fast decay)
    progression: tuple[tuple[int, int], ...] = field(default=())  # (degree, inversion)
    seed: int = 0

    @property
    def name(self) -> str:
        return f"{self.tonic}_{self.scale}_{self.timbre}"


# Degrees are 0-based scale steps; each piece opens and closes on the tonic and passes through
# a dominant, as tonal pieces do. Inversions put the third or fifth in the bass.
_MAJOR_PROGRESSIONS = (((0, 0), (3, 0), (4, 1), (0, 0)), ((0, 0), (5, 0), (1, 1), (4, 0), (0, 2)),
                       ((0, 1), (3, 0), (4, 0), (0, 0)))
_MINOR_PROGRESSIONS = (((0, 0), (3, 0), (4, 0), (0, 0)), ((0, 0), (5, 0), (2, 1), (4, 0), (0, 0)),
                       ((0, 2), (3, 1), (4, 0), (0, 0)))
_TIMBRES = ("piano", "organ", "strings", "guitar")
MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10)  # natural minor; the dominant is raised (harmonic minor)

KEY_SET = [
    KeyPiece(tonic, scale, _TIMBRES[(i + 2 * j) % len(_TIMBRES)],
             (_MAJOR_PROGRESSIONS if scale == "major" else _MINOR_PROGRESSIONS)[(i + j) % 3], seed=100 + 2 * i + j)
    for i, tonic in enumerate(PITCH_CLASSES)
    for j, scale in enumerate(("major", "minor"))
]


def _triad(tonic: int, scale: str, degree: int) -> list[int]:
    steps = MAJOR_STEPS if scale == "major" else MINOR_STEPS
    notes = [tonic + steps[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in (0, 2, 4)]
    if scale == "minor" and degree == 4:
        notes[1] += 1  # the leading tone of harmonic minor: V is major
    return notes


def key_piece(piece: KeyPiece, seconds_per_chord: float = 2.0) -> np.ndarray:
    """Chords of the progression (in the given inversions) with a bass note and a simple melody
    on chord and scale tones, in the piece's timbre; mono float32."""
    rng = np.random.default_rng(piece.seed)
    tonic = 60 + PITCH_CLASSES.index(piece.tonic)
    if tonic > 65:
        tonic -= 12  # keep every key in the same register, F#3..F4
    shape = {"piano": (6, 1.2, 1.0), "organ": (10, 0.0, 0.7), "strings": (8, 0.2, 1.0), "guitar": (12, 3.0, 0.8)}
    harmonics, decay, brightness = shape[piece.timbre]
    steps = MAJOR_STEPS if piece.scale == "major" else MINOR_STEPS
    out = np.zeros(int(seconds_per_chord * len(piece.progression) * 2 * SR))
    for repeat in range(2):
        for index, (degree, inversion) in enumerate(piece.progression):
            at = (repeat * len(piece.progression) + index) * seconds_per_chord
            notes = _triad(tonic, piece.scale, degree)
            voiced = sorted(notes[inversion:] + [n + 12 for n in notes[:inversion]])
            for note in voiced:
                sound = _tone(440 * 2 ** ((note - 69) / 12), seconds_per_chord, harmonics, decay, brightness)
                if piece.timbre == "strings":  # a slow bow
                    sound *= np.minimum(1.0, np.arange(len(sound)) / (0.3 * SR))
                _add(out, sound, at, 0.12)
            _add(out, _tone(440 * 2 ** ((voiced[0] - 12 - 69) / 12), seconds_per_chord, 6, 1.5, 1.2), at, 0.2)
            for k in range(4):  # melody: chord tones on strong beats, scale steps between
                if k % 2 == 0:
                    note = notes[int(rng.integers(0, 3))] + 12
                else:
                    note = tonic + 12 + steps[int(rng.integers(0, 7))]
                _add(out, _tone(440 * 2 ** ((note - 69) / 12), seconds_per_chord / 4, 6, 4.0),
                     at + k * seconds_per_chord / 4, 0.1)
    return (0.7 * out / np.max(np.abs(out))).astype(np.float32)




_FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}


def pitch_class(name: str) -> int:
    """0 for C ... 11 for B; flats as their enharmonic sharps (Essentia says Eb, Ab, Bb)."""
    return PITCH_CLASSES.index(_FLATS.get(name, name))


def mirex_key_score(estimated: tuple[str, str] | None, truth: tuple[str, str]) -> float:
    """MIREX's weighted key score: 1 right, 0.5 a fifth away in the same mode, 0.3 the relative
    key, 0.2 the parallel key, 0 otherwise (and for no key at all)."""
    if estimated is None or estimated[0] is None:
        return 0.0
    (tonic, scale), (true_tonic, true_scale) = estimated, truth
    a, b = pitch_class(tonic), pitch_class(true_tonic)
    if (a, scale) == (b, true_scale):
        return 1.0
    if scale == true_scale and (a - b) % 12 in (5, 7):
        return 0.5
    if true_scale == "major" and scale == "minor" and (a - b) % 12 == 9:
        return 0.3
    if true_scale == "minor" and scale == "major" and (a - b) % 12 == 3:
        return 0.3
    if a == b:
        return 0.2
    return 0.0
