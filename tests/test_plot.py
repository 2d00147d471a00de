"""`muscat plot`: histograms and scatters drawn by matplotlib into valid PNG, SVG and HTML files,
with the unit on each axis and the declared normal range shaded, on the extracted dataset of
tests/pieces.py."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from contextlib import closing

import pytest
from conftest import rows, run_muscat

import catalog

SVG = "{http://www.w3.org/2000/svg}"


def svg_texts(path):
    """Every <text> of an SVG file (matplotlib keeps text as text with svg.fonttype none)."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return [t.text for t in root.iter(f"{SVG}text") if t.text]


def plot(db, *args):
    result = run_muscat("plot", *args, db=db)
    assert result.returncode == 0, result.stderr
    return result


def test_histogram_png_is_a_valid_image_with_the_unit_on_the_axis(pieces_catalogue, tmp_path):
    from PIL import Image

    db, _ = pieces_catalogue
    out = tmp_path / "bpm.png"
    result = plot(db, "bpm", "--out", str(out))
    assert "10 files" in result.stdout  # every present file but the broken one
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.size[0] > 600 and image.size[1] > 400
        assert image.info["Description"] == "x: bpm (BPM); y: files"
        pixels = image.convert("RGB").getcolors(1 << 20)
    # drawn, not blank: the bars' colour and the shaded range's are there among others
    assert len(pixels) > 20


def test_histogram_svg_has_the_unit_and_the_declared_range(pieces_catalogue, tmp_path):
    db, _ = pieces_catalogue
    out = tmp_path / "loudness.svg"
    plot(db, "loudness_integrated", "--out", str(out))
    texts = svg_texts(out)
    assert "loudness_integrated (LUFS)" in texts and "files" in texts
    assert "normal loudness_integrated: -70 to 0 LUFS (declared)" in texts
    # a dimensionless feature says so, rather than showing no unit
    plot(db, "spectral_flatness_mean", "--out", str(out))
    assert "spectral_flatness_mean (no unit)" in svg_texts(out)


def test_scatter_has_both_units_and_colours_by_genre(pieces_catalogue, tmp_path):
    db, _ = pieces_catalogue
    out = tmp_path / "scatter.svg"
    result = plot(db, "bpm", "onset_rate", "--by", "genre", "--out", str(out))
    assert "pop 5" in result.stdout and "(no genre) 1" in result.stdout  # the WAV has no tags
    texts = svg_texts(out)
    assert "bpm (BPM)" in texts and "onset_rate (onsets/s)" in texts
    assert {"pop", "rock", "ambient", "techno", "(no genre)"} <= set(texts)
    assert any("normal bpm: 40 to 208 BPM" in t and "normal onset_rate: 0 to 10 onsets/s" in t for t in texts)


def test_categorical_features_and_vector_elements(pieces_catalogue, tmp_path):
    db, _ = pieces_catalogue
    out = tmp_path / "key.svg"
    plot(db, "key", "--out", str(out))
    texts = svg_texts(out)
    assert {"C", "E", "F", "Bb", "key (category)"} <= set(texts)
    plot(db, "chroma[G]", "--out", str(out))
    assert "chroma[G] (no unit)" in svg_texts(out)
    plot(db, "mfcc_mean[3]", "--out", str(out))
    assert "mfcc_mean[3] (no unit)" in svg_texts(out)


def test_html_is_one_self_contained_page(pieces_catalogue, tmp_path):
    db, _ = pieces_catalogue
    out = tmp_path / "bpm.html"
    plot(db, "bpm", "--out", str(out))
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text and "bpm (BPM)" in text
    assert "<script" not in text and " src=" not in text and "<link" not in text


def test_by_split_uses_the_splits_view_when_there_is_one(pieces_catalogue, tmp_path):
    db, files = pieces_catalogue
    copy = tmp_path / "with-splits.duckdb"
    shutil.copyfile(db, copy)
    out = tmp_path / "split.svg"
    result = run_muscat("plot", "bpm", "--by", "split", "--out", str(out), db=copy)
    assert result.returncode == 2 and "no splits yet" in result.stderr
    made = run_muscat("split", "--by", "audio", "--ratios", "50,50", "--json", db=copy)
    assert made.returncode == 0, made.stderr
    parts = json.loads(made.stdout)["splits"]
    assert set(parts) == {"train", "test"} and all(parts.values())
    result = run_muscat("plot", "bpm", "--by", "split", "--out", str(out), db=copy)
    assert result.returncode == 0, result.stderr
    # one value per present file with a bpm, counted per part as the split placed them
    with closing(catalog.Database(copy)) as database:
        placed = dict(rows(database, "SELECT s.split, count(*) FROM splits s JOIN track_features t USING (path) "
                                     "WHERE t.bpm IS NOT NULL GROUP BY ALL"))
    assert f"train {placed['train']:,}" in result.stdout and f"test {placed['test']:,}" in result.stdout
    assert {"train", "test"} <= set(svg_texts(out))
    result = run_muscat("plot", "bpm", "--by", "split", "--split-name", "other", "--out", str(out), db=copy)
    assert result.returncode == 2 and "no such split" in result.stderr and "default" in result.stderr


@pytest.mark.parametrize("args, message", [
    (("bmp", "--out", "{tmp}/x.png"), "bmp: no such feature (did you mean bpm?)"),
    (("chroma", "--out", "{tmp}/x.png"), "plot one element, e.g. 'chroma[C]'"),
    (("chroma[H]", "--out", "{tmp}/x.png"), "chroma has no element 'H'"),
    (("beats", "--out", "{tmp}/x.png"), "varying length"),
    (("bpm[1]", "--out", "{tmp}/x.png"), "bpm is not a vector"),
    (("key", "bpm", "--out", "{tmp}/x.png"), "key is categorical"),
    (("bpm", "--out", "{tmp}/x.jpg"), "must end in .png, .svg, .html"),
    (("bpm", "--out", "{tmp}/no/such/folder/x.png"), "does not exist"),
    (("bpm", "onset_rate", "danceability", "--out", "{tmp}/x.png"), "one feature (a histogram) or two"),
    (("bpm", "--by", "mood", "--out", "{tmp}/x.png"), "Invalid value for '--by'"),
    (("bpm",), "Missing option '--out'"),
])
def test_bad_arguments_are_exit_2_with_the_reason(pieces_catalogue, tmp_path, args, message):
    db, _ = pieces_catalogue
    result = run_muscat("plot", *[a.format(tmp=tmp_path) for a in args], db=db)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob(".x.*"))


def test_a_feature_with_no_values_yet_names_the_extractor_to_run(pieces_catalogue, tmp_path):
    db, _ = pieces_catalogue
    result = run_muscat("plot", "bass_f0_mean", "--out", str(tmp_path / "x.png"), db=db)
    assert result.returncode == 2 and "no file has a value for bass_f0_mean" in result.stderr


def test_no_catalogue_is_exit_2_and_none_is_made(tmp_path):
    result = run_muscat("plot", "bpm", "--out", str(tmp_path / "x.png"), db=tmp_path / "none.duckdb")
    assert result.returncode == 2 and "no catalogue here yet" in result.stderr
    assert not (tmp_path / "none.duckdb").exists() and not (tmp_path / "x.png").exists()
