"""Tempo accuracy on a held-out synthesised set: muscat's rhythm against Essentia's
RhythmExtractor2013 (multifeature and degara) on the same audio, in one run.

The set is tests/music.py's random_tempo_set(HELD_OUT_SEED, --pieces): the grooves of the test
set at tempi drawn within where each is played, a seed no threshold was set on. accuracy1: within
4%; accuracy2: also at double, half, triple or a third.

    uv run python bench/tempo.py [--pieces 36]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


class Mono:
    def __init__(self, samples: np.ndarray) -> None:
        self.samples = samples

    def mono(self) -> np.ndarray:
        return self.samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pieces", type=int, default=36)
    parser.add_argument("--seed", type=int, default=None, help="another set (default: the held-out seed)")
    args = parser.parse_args()

    import essentia

    essentia.log.warningActive = False
    essentia.log.infoActive = False
    import essentia.standard as es
    from music import HELD_OUT_SEED, accuracy, random_tempo_set, tempo_piece

    from extractors import rhythm

    pieces = random_tempo_set(HELD_OUT_SEED if args.seed is None else args.seed, args.pieces)
    scores: dict[str, list[tuple[bool, bool]]] = {"muscat": [], "multifeature": [], "degara": []}
    print(f"{'piece':28} {'truth':>6} {'muscat':>7} {'multif.':>7} {'degara':>7}")
    for piece in pieces:
        samples = tempo_piece(piece)
        found = {
            "muscat": rhythm.extract(Mono(samples), dict(rhythm.EXTRACTOR.params))["bpm"],
            "multifeature": float(es.RhythmExtractor2013(method="multifeature")(samples)[0]),
            "degara": float(es.RhythmExtractor2013(method="degara")(samples)[0]),
        }
        for name, bpm in found.items():
            scores[name].append(accuracy(bpm, piece.bpm))
        print(f"{piece.name:28} {piece.bpm:6.1f}", *(f"{found[n]:7.1f}" for n in scores), flush=True)
    print()
    for name, results in scores.items():
        a1, a2 = np.mean([a for a, _ in results]), np.mean([b for _, b in results])
        print(f"{name:13} accuracy1 {a1:6.1%}  accuracy2 {a2:6.1%}")
    best = max(np.mean([a for a, _ in scores[n]]) for n in ("multifeature", "degara"))
    ours = np.mean([a for a, _ in scores["muscat"]])
    print(f"\nmuscat's accuracy1 against Essentia's better: {ours / best:.2f}x ({len(pieces)} pieces)")


if __name__ == "__main__":
    main()
