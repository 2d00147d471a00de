"""The CPU extractors on synthesised audio with known answers, through the real decoder."""

from __future__ import annotations

import math

import numpy as np
import pytest
from audio import NOTE, chord_progression, click_track, sine, sine_at_rms, white_noise, write, write_m4a

import catalog
from catalog import decode, registry
from catalog.errors import ConfigError
from catalog.extractor import Extractor, Inputs, Output, check_outputs


@pytest.fixture(scope="module")
def extractors(tmp_path_factory):
    import essentia

    essentia.log.warningActive = False
    settings = catalog.load_settings(db=tmp_path_factory.mktemp("x") / "x.duckdb")
    return {e.name: e for e in registry.load_extractors(settings)}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    return {
        "click": write(d / "click128.wav", click_track(128, 30)),
        "chords": write(d / "c_major.flac", chord_progression()),
        "sine": write(d / "sine_-23.wav", sine_at_rms(-23, 1000, 10)),
        "sine_stereo": write(d / "sine_-23_stereo.wav", sine_at_rms(-23, 1000, 10, channels=2)),
        "silence": write(d / "silence.wav", np.zeros((44100 * 10, 1), np.float32)),
        "noise": write(d / "noise.flac", white_noise(20)),
        "m4a": write_m4a(d / "tone.m4a", sine(440, 2.0, channels=2)),
    }


def run(extractors, name, path):
    # Artifacts (notes' MIDI) beside the audio, in the test's folder, not the working directory.
    inputs = Inputs(artifacts_dir=str(path.parent / "artifacts"))
    return extractors[name].run(decode.decode(str(path)), inputs).values


def test_click_track_at_128_bpm(extractors, files):
    result = run(extractors, "rhythm", files["click"])
    assert result["bpm"] == pytest.approx(128, abs=1)
    assert result["beat_interval_mean"] == pytest.approx(60 / 128, abs=0.01)
    assert result["beat_confidence"] > 3.5  # two trackers agree on a click track
    assert result["bpm_first_peak_weight"] > 0.5


def test_multifeature_beat_tracker_gives_a_confidence(extractors, files):
    rhythm = extractors["rhythm"]
    result = rhythm.module.extract(decode.decode(str(files["click"])), {**rhythm.params, "method": "multifeature"})
    assert result["bpm"] == pytest.approx(128, abs=1) and result["beat_confidence"] > 2


def test_c_major_progression(extractors, files):
    key = run(extractors, "key", files["chords"])
    assert (key["key"], key["scale"]) == ("C", "major")
    hpcp = run(extractors, "hpcp", files["chords"])
    chroma = np.array(hpcp["chroma"])
    assert chroma.sum() == pytest.approx(1.0, abs=1e-6)
    top = {list(NOTE)[i] for i in np.argsort(-chroma)[:3]}
    assert top == {"C", "E", "G"}
    assert hpcp["chroma_entropy"] < 3.0 and hpcp["chroma_source"] == "mix"


def test_mono_sine_at_minus_23_dbfs_reads_minus_23_lufs(extractors, files):
    mono = run(extractors, "loudness", files["sine"])
    assert mono["loudness_integrated"] == pytest.approx(-23, abs=0.3)  # not -20: fed as [m, 0]
    assert mono["rms"] == pytest.approx(-23, abs=0.1)
    assert mono["sample_peak"] == pytest.approx(-20, abs=0.1)
    assert mono["true_peak"] == pytest.approx(-20, abs=0.2)
    stereo = run(extractors, "loudness", files["sine_stereo"])
    assert stereo["loudness_integrated"] == pytest.approx(-20, abs=0.3)  # BS.1770 sums channels


def test_silence_gives_documented_floors_and_no_nan(extractors, files):
    results = {name: run(extractors, name, files["silence"]) for name, e in extractors.items() if e.available}
    loud = results["loudness"]
    assert loud["loudness_integrated"] == -70.0 and loud["sample_peak"] == -120.0
    assert results["rhythm"]["bpm"] == 0.0 and results["rhythm"]["beats"] == []
    assert results["key"]["key"] is None
    assert results["hpcp"]["chroma"] == pytest.approx([1 / 12] * 12)
    assert results["spectral"]["spectral_centroid_mean"] is None
    for values in results.values():
        for value in values.values():
            for number in value if isinstance(value, list) else [value]:
                assert not (isinstance(number, float) and math.isnan(number))


def test_white_noise_is_recognised_as_noise(extractors, files):
    spectral = run(extractors, "spectral", files["noise"])
    assert spectral["spectral_flatness_mean"] > 0.7
    assert spectral["spectral_centroid_mean"] == pytest.approx(11025, rel=0.05)
    hpcp = run(extractors, "hpcp", files["noise"])
    assert hpcp["chroma_entropy"] > 3.4  # near log2(12): no pitch class stands out
    assert run(extractors, "rhythm", files["noise"])["bpm_first_peak_weight"] < 0.5


def test_probe_facts_and_m4a_through_essentia(extractors, files):
    wav = run(extractors, "probe", files["sine"])
    assert wav == {"duration": 10.0, "sample_rate": 44100, "channels": 1, "bit_depth": 16,
                   "bitrate": pytest.approx(705.6, abs=1), "codec": "wav"}
    m4a = run(extractors, "probe", files["m4a"])
    assert m4a["codec"] == "aac" and m4a["channels"] == 2 and m4a["duration"] == pytest.approx(2.0, abs=0.1)


def test_at_least_60_features_with_units_ranges_and_descriptions(extractors):
    outputs = [o for e in extractors.values() for o in e.declaration.outputs]
    assert len(outputs) >= 60
    names = {o.name for o in outputs}
    assert {"duration", "bpm", "key", "scale", "key_strength", "loudness_integrated", "loudness_range",
            "chroma"} <= names
    assert all(o.description for o in outputs)
    units = {o.name: o.unit for o in outputs}
    assert units["duration"] == "s" and units["bpm"] == "BPM" and units["loudness_integrated"] == "LUFS"
    assert units["loudness_range"] == "LU"
    chroma = next(o for o in outputs if o.name == "chroma")
    assert chroma.size == 12 and chroma.labels[0] == "C"


def test_same_samples_same_audio_id_whatever_the_container(tmp_path):
    import soundfile as sf

    pcm = (sine(440, 1.0, channels=2) * 32767).astype(np.int16)  # the same PCM in both files
    sf.write(tmp_path / "a.wav", pcm, 44100, subtype="PCM_16")
    sf.write(tmp_path / "b.flac", pcm, 44100, subtype="PCM_16")
    sf.write(tmp_path / "c.wav", pcm[::-1], 44100, subtype="PCM_16")
    a, b, c = (decode.decode(str(tmp_path / n)) for n in ("a.wav", "b.flac", "c.wav"))
    assert a.audio_id == b.audio_id != c.audio_id
    assert a.codec == "wav" and b.codec == "flac"


@pytest.mark.parametrize("name,content,reason", [
    ("empty.flac", b"", "empty"),
    ("text.mp3", b"this is not audio\n" * 10, "not a readable mp3 file"),
    ("random.wav", bytes(np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8)), "not a readable wav file"),
    ("random.m4a", bytes(np.random.default_rng(4).integers(0, 256, 4000, dtype=np.uint8)), "not a readable m4a file"),
    ("noise", bytes(np.random.default_rng(5).integers(0, 256, 4000, dtype=np.uint8)), "not a readable audio file"),
])
def test_broken_files_fail_with_a_readable_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(decode.DecodeError, match=reason):
        decode.decode(str(path))


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "aiff"])
def test_truncated_files_fail(tmp_path, ext):
    whole = write(tmp_path / f"whole.{ext}", sine(440, 3.0)).read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(decode.DecodeError):
        decode.decode(str(cut))


def test_long_files_are_identified_but_not_held(tmp_path, extractors):
    path = write(tmp_path / "long.wav", sine(440, 3.0))
    audio = decode.decode(str(path), max_seconds=1.0)
    assert audio.samples is None and audio.duration == 3.0 and audio.audio_id
    assert extractors["probe"].run(audio).values["duration"] == 3.0
    with pytest.raises(decode.TooLong, match="max_duration"):
        extractors["loudness"].run(audio)


def test_long_m4a_is_identified_but_not_held(tmp_path):
    path = write_m4a(tmp_path / "long.m4a", sine(440, 3.0, channels=2))
    audio = decode.decode(str(path), max_seconds=1.0)
    assert audio.samples is None and audio.duration == pytest.approx(3.0, abs=0.05) and audio.id_rule == "packets"


def test_outputs_are_checked_against_the_declaration():
    declaration = Extractor("x", 1, "cpu", [Output("a", "s", None, "scalar", "A"),
                                             Output("v", "", None, "vector", "V", size=2)])
    assert check_outputs(declaration, {"a": float("nan"), "v": [1, 2]}) == {"a": None, "v": [1.0, 2.0]}
    with pytest.raises(ValueError, match="undeclared"):
        check_outputs(declaration, {"a": 1, "v": [1, 2], "b": 3})
    with pytest.raises(ValueError, match="did not return"):
        check_outputs(declaration, {"a": 1})
    with pytest.raises(ValueError, match="expected 2 values"):
        check_outputs(declaration, {"a": 1, "v": [1]})


@pytest.mark.parametrize("toml,message", [
    ("[extractors.hpcp]\nharmonics = 'four'\n", "harmonics must be int"),
    ("[extractors.hpcp]\nharmonic = 4\n", "harmonic: unknown parameter"),
    ("[extractors.nope]\nx = 1\n", "[extractors.nope] names no extractor"),
    ("[extractors.rhythm]\nenabled = 'no'\n", "enabled must be true or false"),
    ("[extractors.probe]\nenabled = false\n", "cannot be disabled"),
])
def test_bad_extractor_configuration_names_the_key(tmp_path, toml, message):
    (tmp_path / "muscat.toml").write_text(toml)
    settings = catalog.load_settings(db=tmp_path / "x.duckdb")
    with pytest.raises(ConfigError) as error:
        registry.load_extractors(settings)
    assert message in str(error.value) and "muscat.toml" in str(error.value)


def test_parameters_change_the_identity(tmp_path):
    base = {e.name: e.params_hash for e in registry.load_extractors(catalog.load_settings(db=tmp_path / "x.duckdb"))}
    (tmp_path / "muscat.toml").write_text("[extractors.hpcp]\nharmonics = 5\n")
    changed = {e.name: e.params_hash for e in registry.load_extractors(catalog.load_settings(db=tmp_path / "x.duckdb"))}
    assert base["hpcp"] != changed["hpcp"]
    assert {k: v for k, v in base.items() if k != "hpcp"} == {k: v for k, v in changed.items() if k != "hpcp"}


def test_mono_is_the_float32_mean_of_the_channels(tmp_path):
    rng = np.random.default_rng(3)
    for channels in (1, 2, 6):
        samples = (0.1 * rng.standard_normal((44100, channels))).astype(np.float32)
        audio = decode.decode(str(write(tmp_path / f"c{channels}.wav", samples)))
        mono, decoded = audio.mono(), audio.whole()
        assert mono.dtype == np.float32 and np.abs(decoded - samples).max() < 1e-4  # 16-bit WAV
        np.testing.assert_array_equal(mono, decoded.sum(axis=1, dtype=np.float32) / np.float32(channels))
