"""`muscat similar`: nearest tracks by cosine distance over standardised features, through the
real scan and extract of tests/pieces.py's dataset (one piece in five encodings and gains, four
other pieces)."""

from __future__ import annotations

import json

import pytest
from conftest import run_muscat
from formats import encode_av
from pieces import PIECES, VARIANTS, render


def similar(db, path, *args):
    result = run_muscat("similar", str(path), "--json", *args, db=db)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("using", ["timbre", "harmony", "rhythm", "all"])
@pytest.mark.parametrize("query", ["a.flac", "a.mp3"])
def test_variants_of_a_piece_rank_first_and_its_own_copies_never(pieces_catalogue, using, query):
    db, files = pieces_catalogue
    found = similar(db, files[query], "--using", using, "-k", "20")
    names = [next(n for n, p in files.items() if str(p) == r["path"]) for r in found]
    own = {query, "a-copy.flac"} if query == "a.flac" else {query}
    variants = ({"a.flac", "a-copy.flac"} | set(VARIANTS)) - own
    if query == "a.flac":
        assert "a-copy.flac" not in names  # the same audio as the track: left out
    assert query not in names
    # every variant before every other piece; the other pieces all listed after them
    assert set(names[: len(variants)]) == variants, (using, found)
    assert set(names[len(variants):]) == {"b.flac", "c.flac", "d.flac", "e.flac"}, (using, found)
    distances = [r["distance"] for r in found]
    assert distances == sorted(distances)
    assert all(0 <= d <= 2 for d in distances)
    # the variants are near, the other pieces far: not a ranking by a hair
    assert max(distances[: len(variants)]) < 0.5 < min(distances[len(variants):])
    own_audio = run_muscat("sql", f"SELECT audio_id FROM library WHERE path = '{files[query]}'",
                           "--format", "csv", db=db).stdout.split()[1]
    assert own_audio not in {r["audio_id"] for r in found}


def test_k_limits_and_the_table_lists_paths_nearest_first(pieces_catalogue):
    db, files = pieces_catalogue
    assert len(similar(db, files["b.flac"], "-k", "3")) == 3
    table = run_muscat("similar", str(files["a.flac"]), "-k", "2", db=db)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["#", "distance", "path"]
    listed = [line.split()[-1] for line in lines[2:]]
    assert listed == [r["path"] for r in similar(db, files["a.flac"], "-k", "2")]


def test_a_relative_path_is_found(pieces_catalogue):
    db, files = pieces_catalogue
    result = run_muscat("similar", "a.mp3", "--json", "-k", "1", db=db, cwd=files["a.mp3"].parent)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["path"] != str(files["a.mp3"])


def test_bad_paths_and_options_are_exit_2_with_the_reason(pieces_catalogue, tmp_path):
    db, files = pieces_catalogue
    cases = [
        ((str(tmp_path / "nowhere.flac"),), "not in the catalogue"),
        ((str(files["broken.flac"]),), "failed to decode"),
        ((str(files["a.flac"]), "--using", "melody"), "Invalid value for '--using'"),
        ((str(files["a.flac"]), "-k", "0"), "Invalid value for '-k'"),
    ]
    for args, message in cases:
        result = run_muscat("similar", *args, db=db)
        assert result.returncode == 2, (args, result.stdout)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    result = run_muscat("similar", str(files["a.flac"]), db=tmp_path / "none.duckdb")
    assert result.returncode == 2 and "no catalogue here yet" in result.stderr
    assert not (tmp_path / "none.duckdb").exists()  # not made on the way


def test_a_track_without_the_features_says_which_extractor_to_run(tmp_path):
    music = tmp_path / "Music"
    music.mkdir()
    encode_av(music / "only-rhythm.flac", "flac", "flac", samples=render(PIECES["b"], seconds=3.0))
    db = tmp_path / "cat.duckdb"
    assert run_muscat("scan", str(music), db=db).returncode == 0
    assert run_muscat("extract", "--only", "rhythm", "--workers", "1", db=db).returncode == 0
    result = run_muscat("similar", str(music / "only-rhythm.flac"), "--using", "timbre", db=db)
    assert result.returncode == 2 and "no timbre features" in result.stderr and "--only spectral" in result.stderr
    result = run_muscat("similar", str(music / "only-rhythm.flac"), "--using", "all", db=db)
    assert result.returncode == 2 and "hpcp, key, rhythm, spectral" in result.stderr
    # rhythm it has; with no other track to compare, the list is empty (and said so)
    result = run_muscat("similar", str(music / "only-rhythm.flac"), "--using", "rhythm", db=db)
    assert result.returncode == 0 and "no other track" in result.stderr
    encode_av(music / "new.flac", "flac", "flac", samples=render(PIECES["c"], seconds=3.0))
    assert run_muscat("scan", str(music), db=db).returncode == 0
    result = run_muscat("similar", str(music / "new.flac"), db=db)
    assert result.returncode == 2 and "not analysed yet" in result.stderr
