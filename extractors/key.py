"""key: musical key and tuning (Essentia KeyExtractor, two key profiles)."""

from __future__ import annotations

from catalog.extractor import Extractor, Output

EXTRACTOR = Extractor(
    name="key",
    version=1,
    device="cpu",
    description="Key and scale with Essentia's KeyExtractor (bgate and edma profiles), tuning frequency.",
    params={"profile": "bgate", "second_profile": "edma"},
    outputs=[
        Output("key", "", None, "categorical", "Tonic: C, C#, D, ..., B (profile `profile`)"),
        Output("scale", "", None, "categorical", "major or minor"),
        Output("key_strength", "", (0, 1), "scalar",
               "Correlation with the key profile; high on noise too: check chroma_entropy"),
        Output("key_second", "", None, "categorical", "Tonic with the second profile (edma: electronic music)"),
        Output("scale_second", "", None, "categorical", "Scale with the second profile"),
        Output("key_strength_second", "", (0, 1), "scalar", "Strength with the second profile"),
        Output("tuning_frequency", "Hz", (430, 450), "scalar", "Estimated concert pitch of A4"),
        Output("tuning_cents", "cents", (-50, 50), "scalar", "Deviation of the tuning from 440 Hz"),
    ],
)


def extract(audio, params):  # type: ignore[no-untyped-def]
    import essentia.standard as es
    import numpy as np

    mono = audio.mono()
    if not np.any(mono):
        return {"key": None, "scale": None, "key_strength": 0.0, "key_second": None, "scale_second": None,
                "key_strength_second": 0.0, "tuning_frequency": None, "tuning_cents": None}
    key, scale, strength = es.KeyExtractor(profileType=params["profile"])(mono)
    key2, scale2, strength2 = es.KeyExtractor(profileType=params["second_profile"])(mono)
    frequencies = es.TuningFrequencyExtractor()(mono)
    tuning = float(np.median(frequencies)) if len(frequencies) else None
    return {
        "key": key, "scale": scale, "key_strength": float(strength),
        "key_second": key2, "scale_second": scale2, "key_strength_second": float(strength2),
        "tuning_frequency": tuning,
        "tuning_cents": 1200 * float(np.log2(tuning / 440.0)) if tuning else None,
    }
