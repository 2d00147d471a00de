"""muscat export, split and duplicates: through real `muscat scan` + `extract` on files made by
real encoders (FFmpeg's FLAC, LAME's MP3) and tagged with mutagen; splits over a library of 30
tagged artists (scanned, not extracted: a split needs tags, not features)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import rows, run_muscat
from formats import music, write_wav16

import catalog

RATE = 44100


def tag(path: Path, artist: str, title: str) -> None:
    import mutagen
    from mutagen.id3 import ID3, TIT2, TPE1

    if path.suffix == ".mp3":
        tags = ID3()
        tags.add(TPE1(encoding=3, text=[artist]))
        tags.add(TIT2(encoding=3, text=[title]))
        tags.save(path)
    elif path.suffix == ".wav":
        f = mutagen.File(path)
        f.add_tags()
        f.tags.add(TPE1(encoding=3, text=[artist]))
        f.tags.add(TIT2(encoding=3, text=[title]))
        f.save()
    else:
        f = mutagen.File(path)
        f["artist"], f["title"] = [artist], [title]
        f.save()


def encode(wav: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".mp3":
        subprocess.run(["lame", "--quiet", "-b", "128", str(wav), str(out)], check=True)
    else:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """One piece as FLAC (FFmpeg) and as MP3 (LAME), tagged as two artists; another piece as
    FLAC; a file too short to fingerprint. Scanned and extracted for real."""
    base = tmp_path_factory.mktemp("export")
    root = base / "Music"
    piece = music(12.0)
    other = np.ascontiguousarray(music(12.0)[::-1] * 0.8)  # the same notes backwards: another piece
    encode(write_wav16(base / "piece.wav", piece, RATE), root / "Band" / "piece.flac")
    encode(base / "piece.wav", root / "Band feat. Guest" / "piece.mp3")
    encode(write_wav16(base / "other.wav", other, RATE), root / "Other" / "other.flac")
    encode(write_wav16(base / "short.wav", music(1.0), RATE), root / "Other" / "short.flac")
    tag(root / "Band" / "piece.flac", "Band", "Piece")
    tag(root / "Band feat. Guest" / "piece.mp3", "Band feat. Guest", "Piece (MP3)")
    tag(root / "Other" / "other.flac", "Other", "Other")  # short.flac: no tags at all
    db = base / "cat.duckdb"
    assert run_muscat("scan", str(root), db=db).returncode == 0
    result = run_muscat("extract", "--only", "chromaprint,key,hpcp", "--workers", "1", "--json", db=db, timeout=600)
    assert result.returncode == 0, result.stderr
    return db, root, base


def test_a_flac_mp3_pair_of_one_piece_is_a_near_duplicate_and_split_together(extracted):
    db, root, _ = extracted
    result = run_muscat("duplicates", "--json", db=db)
    assert result.returncode == 0, result.stderr
    groups = json.loads(result.stdout)
    pair = sorted([str(root / "Band" / "piece.flac"), str(root / "Band feat. Guest" / "piece.mp3")])
    assert [g["paths"] for g in groups] == [pair]
    assert len(set(groups[0]["audio_ids"])) == 2  # two encodings: two audio, one recording
    # The short file has no fingerprint (too short to tell apart), the other piece no partner.
    short = rows(catalog.Database(db), "SELECT text FROM features WHERE feature = 'chromaprint' AND path LIKE '%short%'")
    assert short == [(None,)]
    # By artist the two are different groups; as one recording they share a part, on every seed.
    for seed in range(6):
        split = run_muscat("split", "--by", "artist", "--ratios", "50,50", "--seed", str(seed), "--json", db=db)
        assert split.returncode == 0, split.stderr
        assert sum(json.loads(split.stdout)["splits"].values()) == 4
        parts = dict(rows(catalog.Database(db), "SELECT path, split FROM splits WHERE name = 'default'"))
        assert parts[pair[0]] == parts[pair[1]], seed
    text = run_muscat("duplicates", db=db).stdout
    assert pair[0] in text and "2 files, 2 audio" in text


def test_parquet_export_keeps_every_value_unit_and_null(extracted, tmp_path):
    db, root, _ = extracted
    out = tmp_path / "features.parquet"
    result = run_muscat("export", str(out), "--json", db=db)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == 4
    database = catalog.Database(db)
    scalars = rows(database, "SELECT path, feature, value, text FROM features WHERE NOT stale")
    vectors = rows(database, "SELECT path, feature, vector FROM feature_vectors WHERE NOT stale")
    units = dict(rows(database, "SELECT feature, unit FROM feature_units"))
    tags = {r[0]: r[1:] for r in rows(database, "SELECT path, artist, title, audio_id FROM library")}
    table = pq.read_table(out)
    exported = {r["path"]: r for r in table.to_pylist()}
    assert set(exported) == set(tags)
    for path, (artist, title, audio_id) in tags.items():  # NULL tags stay NULL
        assert (exported[path]["artist"], exported[path]["title"], exported[path]["audio_id"]) == (artist, title, audio_id)
    for path, feature, value, text in scalars:
        assert exported[path][feature] == (value if text is None and value is not None else text), (path, feature)
    for path, feature, vector in vectors:
        assert exported[path][feature] == pytest.approx(vector), (path, feature)
    # Features never computed (rhythm did not run) are NULL columns, not absent.
    assert all(r["bpm"] is None for r in exported.values())
    schema = table.schema
    for name in ("key_strength", "chroma", "duration", "chromaprint_seconds", "bpm"):
        meta = schema.field(name).metadata
        assert meta[b"unit"].decode() == units[name] and meta[b"description"], name
    assert schema.field("chroma").metadata[b"labels"] == json.dumps(["C", "C#", "D", "D#", "E", "F", "F#", "G",
                                                                     "G#", "A", "A#", "B"]).encode()
    assert json.loads(schema.metadata[b"muscat"])["features"]
    # DuckDB reads the same values and NULLs back.
    with duckdb.connect() as con:
        back = dict(con.execute(f"SELECT path, key_strength FROM read_parquet('{out}')").fetchall())
        chroma = dict(con.execute(f"SELECT path, chroma FROM read_parquet('{out}')").fetchall())
        nulls = con.execute(f"SELECT count(*) FROM read_parquet('{out}') WHERE bpm IS NULL").fetchone()[0]
    assert back == {p: v for p, f, v, _ in scalars if f == "key_strength"} | {p: None for p in tags if p not in
                                                                             {p for p, f, *_ in scalars if f == "key_strength"}}
    assert all(math.isclose(sum(c), 1, abs_tol=1e-3) for c in chroma.values() if c is not None)
    assert nulls == 4


def test_csv_and_jsonl_exports_with_features_json_and_where(extracted, tmp_path):
    db, root, _ = extracted
    out = tmp_path / "rows.csv"
    result = run_muscat("export", str(out), "--format", "csv", "--features", "key,chroma,duration",
                        "--where", "duration > 5", db=db)
    assert result.returncode == 0, result.stderr
    import csv

    with open(out, newline="") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 3  # the 1 s file is left out
    assert {"path", "artist", "key", "chroma", "duration"} <= set(lines[0]) and "key_strength" not in lines[0]
    assert all(len(json.loads(line["chroma"])) == 12 for line in lines)
    sidecar = json.loads((tmp_path / "features.json").read_text())
    assert sidecar["features"]["duration"]["unit"] == "s" and sidecar["features"]["chroma"]["size"] == 12
    out = tmp_path / "rows.jsonl"
    assert run_muscat("export", str(out), "--format", "jsonl", db=db).returncode == 0
    objects = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(objects) == 4 and all(len(o["chroma"]) == 12 for o in objects if o["chroma"] is not None)


def test_an_hf_export_loads_with_datasets(extracted, tmp_path):
    db, root, _ = extracted
    assert run_muscat("split", "--by", "audio", "--ratios", "50,50", db=db).returncode == 0
    parts = dict(rows(catalog.Database(db), "SELECT path, split FROM splits WHERE name = 'default'"))
    out = tmp_path / "hf"
    result = run_muscat("export", str(out), "--format", "hf", "--audio", "copy", "--json", db=db)
    assert result.returncode == 0, result.stderr
    import datasets

    loaded = datasets.load_dataset("audiofolder", data_dir=str(out))
    assert set(loaded) == set(parts.values())
    for part, ds in loaded.items():
        ds = ds.cast_column("audio", datasets.Audio(decode=False))
        assert sorted(ds["path"]) == sorted(p for p, s in parts.items() if s == part)
        for row in ds:
            assert Path(row["audio"]["path"]).read_bytes() == Path(row["path"]).read_bytes()
            assert row["split"] == part and len(row["chroma"]) == 12
    # Linked audio: symbolic links to the library's files.
    linked = tmp_path / "linked"
    assert run_muscat("export", str(linked), "--format", "hf", db=db).returncode == 0
    assert all(p.is_symlink() for p in linked.rglob("*.flac"))
    assert datasets.load_dataset("audiofolder", data_dir=str(linked)).num_rows == loaded.num_rows


def test_bad_export_arguments_are_exit_2_naming_them(extracted, tmp_path):
    db, _, _ = extracted
    cases = [
        (["--where", "no_such_column > 1"], "--where"),
        (["--where", "1 = 1; DROP TABLE files"], "--where"),
        (["--features", "bpmm"], "did you mean bpm"),
        (["--format", "xml"], "xml"),
        (["--stems"], "--stems"),
    ]
    for args, needle in cases:
        result = run_muscat("export", str(tmp_path / "x.parquet"), *args, db=db)
        assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
        assert not (tmp_path / "x.parquet").exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "something").write_text("x")
    result = run_muscat("export", str(full), "--format", "hf", db=db)
    assert result.returncode == 2 and "new or empty" in result.stderr
    result = run_muscat("export", str(full), db=db)
    assert result.returncode == 2 and "is a folder" in result.stderr
    assert rows(catalog.Database(db), "SELECT count(*) FROM files") == [(4,)]  # nothing dropped


# -- splits over 30 artists ----------------------------------------------------------------------


def make_artists(root: Path, artists: range, per_artist: int, start: int = 0) -> list[Path]:
    """Tiny tagged WAVs: a split reads tags only. Artist i has per_artist files (numbered from start)."""
    import soundfile as sf

    made = []
    for a in artists:
        for n in range(start, start + per_artist):
            path = root / f"artist{a:02d}" / f"track{n}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, np.full((64, 1), (a * 100 + n) / 10000, np.float32), RATE, subtype="PCM_16")
            tag(path, f"Artist {a:02d}" if n % 2 else f"  artist {a:02d} ", f"Track {n}")  # spacing and case vary
            made.append(path)
    return made


def split_of(db: Path, name: str = "default") -> dict[str, str]:
    return dict(rows(catalog.Database(db), "SELECT path, split FROM splits WHERE name = ?", [name]))


def test_a_split_of_30_artists_is_deterministic_grouped_stable_and_near_the_ratios(tmp_path):
    root = tmp_path / "Music"
    make_artists(root, range(30), 4)
    first, second = tmp_path / "one.duckdb", tmp_path / "two.duckdb"
    for db in (first, second):
        assert run_muscat("scan", str(root), db=db).returncode == 0
    ratios = {"train": 0.8, "validation": 0.1, "test": 0.1}
    for seed in (0, 1, 7):
        result = run_muscat("split", "--by", "artist", "--ratios", "80,10,10", "--seed", str(seed), "--json",
                            db=first)
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["name"] == "default" and data["by"] == "artist" and data["seed"] == seed
        assert sum(data["splits"].values()) == 120
        for part, share in ratios.items():  # within 5 points of the asked ratios
            assert abs(data["splits"][part] / 120 - share) <= 0.05, (seed, data)
        placed = split_of(first)
        by_artist: dict[str, set[str]] = {}
        for path, part in placed.items():
            by_artist.setdefault(Path(path).parent.name, set()).add(part)
        assert len(by_artist) == 30 and all(len(parts) == 1 for parts in by_artist.values())
        # The same library in another catalogue, the same seed: the same split.
        assert run_muscat("split", "--by", "artist", "--ratios", "80,10,10", "--seed", str(seed), db=second).returncode == 0
        assert split_of(second) == placed
    # 10 new files: 5 of artists placed already, 5 of new artists. Nothing moves.
    before = split_of(first)
    make_artists(root, range(25, 30), 1, start=4)
    make_artists(root, range(30, 35), 1)
    assert run_muscat("scan", str(root), db=first).returncode == 0
    assert rows(catalog.Database(first), "SELECT count(*) FROM track_features WHERE split IS NULL") == [(10,)]
    result = run_muscat("split", "--by", "artist", "--ratios", "80,10,10", "--seed", "7", db=first)
    assert result.returncode == 0 and "120 kept their place, 10 placed" in result.stdout, result.stdout
    after = split_of(first)
    assert {p: after[p] for p in before} == before and len(after) == 130
    for a in range(25, 30):  # a new file of an artist goes where the artist is
        assert after[str(root / f"artist{a:02d}" / "track4.wav")] == after[str(root / f"artist{a:02d}" / "track0.wav")]
    assert rows(catalog.Database(first), "SELECT count(*) FROM track_features WHERE split IS NULL") == [(0,)]
    # Another name keeps its own split; files without an artist are grouped by audio.
    assert run_muscat("split", "--by", "album", "--name", "albums", "--names", "a,b", "--ratios", "0.5,0.5",
                      db=first).returncode == 0
    assert set(split_of(first, "albums").values()) <= {"a", "b"} and split_of(first) == after


def test_bad_split_arguments_are_exit_2_naming_them(tmp_path):
    db = tmp_path / "cat.duckdb"
    cases = [
        (["--ratios", "80,10"], "sum to 100"),
        (["--ratios", "80,ten,10"], "'ten' is not a number"),
        (["--ratios", "100"], "two parts"),
        (["--ratios", "90,10,0"], "positive"),
        (["--ratios", "70,10,10,10"], "--names"),
        (["--names", "a,b"], "2 names for 3 ratios"),
        (["--names", "a,a,b"], "twice"),
        (["--by", "genre"], "genre"),
        (["--name", " "], "--name"),
    ]
    for args, needle in cases:
        result = run_muscat("split", *args, db=db)
        assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)


def test_stale_values_only_with_include_stale_and_marked(extracted, tmp_path):
    db, root, _ = extracted
    copy = tmp_path / "cat.duckdb"
    copy.write_bytes(db.read_bytes())
    (tmp_path / "muscat.toml").write_text('[extractors.key]\nprofile = "edma"\n')  # key's results go stale
    keys = dict(rows(catalog.Database(db), "SELECT path, text FROM features WHERE feature = 'key'"))
    assert keys and any(v is not None for v in keys.values())
    plain, marked = tmp_path / "plain.parquet", tmp_path / "marked.parquet"
    assert run_muscat("export", str(plain), db=copy).returncode == 0
    assert run_muscat("export", str(marked), "--include-stale", db=copy).returncode == 0
    plain_rows = {r["path"]: r for r in pq.read_table(plain).to_pylist()}
    marked_rows = {r["path"]: r for r in pq.read_table(marked).to_pylist()}
    assert all(r["key"] is None and r["key_strength"] is None for r in plain_rows.values())
    assert "stale_features" not in pq.read_schema(plain).names
    for path, key in keys.items():
        assert marked_rows[path]["key"] == key
        assert "key" in marked_rows[path]["stale_features"] and "chroma" not in marked_rows[path]["stale_features"]
        assert marked_rows[path]["chroma"] == plain_rows[path]["chroma"]  # current values: in both
    assert pq.read_schema(marked).field("stale_features").metadata[b"description"]


def test_an_hf_export_without_audio_is_metadata_only(extracted, tmp_path):
    db, root, _ = extracted
    out = tmp_path / "meta"
    assert run_muscat("export", str(out), "--format", "hf", "--audio", "none", db=db).returncode == 0
    assert not [p for p in out.rglob("*") if p.is_file() and p.name != "metadata.parquet"]
    import datasets

    loaded = datasets.load_dataset("parquet", data_dir=str(out))
    assert sum(loaded.num_rows.values()) == 4 and "file_name" not in loaded[next(iter(loaded))].column_names


def test_an_hf_export_with_stems_gives_each_stem_an_audio_column(extracted, tmp_path):
    """A demucs result recorded for one audio (its stem: a real FLAC), as the writer records one."""
    db, root, base = extracted
    copy = tmp_path / "cat.duckdb"
    copy.write_bytes(db.read_bytes())
    stem = encode(base / "other.wav", tmp_path / "stems" / "bass.flac")
    database = catalog.Database(copy)
    catalog.sync_extractors(database, catalog.load_settings(db=copy))
    path = str(root / "Other" / "other.flac")
    with database.write() as con:
        con.execute(
            """
            INSERT INTO runs BY NAME
            SELECT 999999 AS run_id, l.audio_id, l.file_id, c.extractor, c.version, c.params_hash, 'mix' AS input,
                   'ok' AS status, 1 AS attempts, now() AS started_at, now() AS finished_at, 1.0 AS seconds,
                   'cpu' AS device, 'test' AS host
            FROM library l, extractor_current c WHERE l.path = ? AND c.extractor = 'demucs'
            """, [path])
        con.execute("INSERT INTO run_artifacts VALUES (999999, 'stem:bass', 'flac', ?, ?)", [str(stem), stem.stat().st_size])
    out = tmp_path / "hf"
    result = run_muscat("export", str(out), "--format", "hf", "--stems", "--audio", "copy", db=copy)
    assert result.returncode == 0, result.stderr
    import datasets

    by_path = {}
    for part in datasets.load_dataset("audiofolder", data_dir=str(out)).values():  # whatever split there is
        part = part.cast_column("audio", datasets.Audio(decode=False)).cast_column("bass", datasets.Audio(decode=False))
        by_path.update({row["path"]: row for row in part})
    assert len(by_path) == 4
    assert Path(by_path[path]["bass"]["path"]).read_bytes() == stem.read_bytes()
    assert all(row["bass"] is None for p, row in by_path.items() if p != path)
