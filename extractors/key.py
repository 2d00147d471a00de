"""key: musical key and tuning (Essentia KeyExtractor, two key profiles).

No key is NULL, never a guess. KeyExtractor always answers: on near silence (its spectral peaks
all under its threshold) it says "A minor" with strength 0, and on noise it finds a key with a
strength as high as music's. So `key` (and the second profile's) is NULL, and `no_key_reason`
says why, when the track is
- digital silence: "silence";
- quieter than `min_level` (dBFS RMS over the track, -70 by default: inaudible at any sane
  gain): "below -70 dBFS RMS";
- without pitched content, the profile's strength 0: "no pitched content";
- noise: its chroma (hpcp's, from extractors/hpcp.py, one frame in 4) nearly flat, entropy at
  least `max_chroma_entropy` bits (3.4; log2 12 = 3.58 is flat; white, pink and brown noise read
  3.47-3.57, our synthesised music 2.1-2.8): "noise (chroma entropy 3.52 bits)".
"""

from __future__ import annotations

from catalog.extractor import Extractor, Output

EXTRACTOR = Extractor(
    name="key",
    version=2,  # 2: NULL key for silence, near silence, no pitch and noise
    device="cpu",
    description="Key and scale with Essentia's KeyExtractor (bgate and edma profiles), tuning frequency.",
    params={"profile": "bgate", "second_profile": "edma", "min_level": -70.0, "max_chroma_entropy": 3.4},
    outputs=[
        Output("key", "", None, "categorical",
               "Tonic: C, C#, D, Eb, E, F, F#, G, Ab, A, Bb, B (profile `profile`); NULL: see no_key_reason"),
        Output("scale", "", None, "categorical", "major or minor"),
        Output("key_strength", "", (0, 1), "scalar",
               "Correlation with the key profile; high on noise too (noise gets no key: see no_key_reason)"),
        Output("key_second", "", None, "categorical", "Tonic with the second profile (edma: electronic music)"),
        Output("scale_second", "", None, "categorical", "Scale with the second profile"),
        Output("key_strength_second", "", (0, 1), "scalar", "Strength with the second profile"),
        Output("tuning_frequency", "Hz", (430, 450), "scalar", "Estimated concert pitch of A4"),
        Output("tuning_cents", "cents", (-50, 50), "scalar", "Deviation of the tuning from 440 Hz"),
        Output("no_key_reason", "", None, "categorical",
               "Why key is NULL: silence, below the min_level, no pitched content or noise; NULL when there is a key"),
    ],
)


def _no_key(reason: str, strength: float = 0.0, strength2: float = 0.0) -> dict:
    return {"key": None, "scale": None, "key_strength": strength, "key_second": None, "scale_second": None,
            "key_strength_second": strength2, "tuning_frequency": None, "tuning_cents": None,
            "no_key_reason": reason}


def extract(audio, params):  # type: ignore[no-untyped-def]
    import essentia.standard as es
    import numpy as np

    from extractors import hpcp
    from extractors._levels import power_to_db

    mono = audio.mono()
    if not np.any(mono):
        return _no_key("silence")
    level = power_to_db(float(np.dot(mono, mono)) / len(mono))
    if level < params["min_level"]:
        return _no_key(f"below {params['min_level']:g} dBFS RMS")
    key, scale, strength = es.KeyExtractor(profileType=params["profile"])(mono)
    key2, scale2, strength2 = es.KeyExtractor(profileType=params["second_profile"])(mono)
    if strength <= 0:
        return _no_key("no pitched content")
    chroma = hpcp.mean_chroma(mono, {**hpcp.EXTRACTOR.params, "hop_size": 4 * hpcp.EXTRACTOR.params["hop_size"]})
    entropy = hpcp.entropy_bits(chroma)
    if entropy >= params["max_chroma_entropy"]:
        return _no_key(f"noise (chroma entropy {entropy:.2f} bits)", float(strength), float(strength2))
    frequencies = es.TuningFrequencyExtractor()(mono)
    tuning = float(np.median(frequencies)) if len(frequencies) else None
    return {
        "key": key, "scale": scale, "key_strength": float(strength),
        "key_second": key2, "scale_second": scale2, "key_strength_second": float(strength2),
        "tuning_frequency": tuning,
        "tuning_cents": 1200 * float(np.log2(tuning / 440.0)) if tuning else None,
        "no_key_reason": None,
    }
