"""Audio identity that does not move: not with the decoder, not with a retag, not with an upgrade.

Lossless audio is identified by its decoded samples (the same PCM in any container and through
either decoder gives one id), lossy audio by its encoded packets (tags and container headers
left out). A catalogue written before the packets rule keeps its ids' meaning: its lossy audio
is carried over to the new ids with every result, and nothing is analysed again.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from contextlib import closing
from pathlib import Path

import duckdb
import mutagen
import pytest

import catalog
from catalog import registry
from catalog.decode import _decode_ffmpeg, decode
from conftest import assert_intact, rows, run_muscat
from formats import encode_av

BEFORE = Path(__file__).resolve().parent / "data" / "before-packets"


# -- one id whichever decoder reads lossless audio ------------------------------------------------

LOSSLESS = [
    ("song.wav", "pcm_s16le", "wav", {}),
    ("song.flac", "flac", "flac", {}),
    ("song24.flac", "flac", "flac", {"sample_fmt": "s32"}),
    ("song.aiff", "pcm_s16be", "aiff", {}),
    ("song.m4a", "alac", "ipod", {}),
    ("song.wv", "wavpack", "wv", {"sample_fmt": "s16p"}),
    ("song.tta", "tta", "tta", {"sample_fmt": "s16"}),
    ("song.w64", "pcm_s16le", "w64", {}),
    ("song.caf", "pcm_s16le", "caf", {}),
    ("song.mka", "pcm_s16le", "matroska", {}),
]


def test_the_same_pcm_has_one_id_in_every_lossless_container_and_decoder(tmp_path: Path) -> None:
    ids = {}
    for name, codec, muxer, extra in LOSSLESS:
        path = tmp_path / name
        encode_av(path, codec, muxer, seconds=2.0, **extra)
        audio = decode(str(path))
        assert audio.id_rule == "pcm", name
        ids[name] = audio.audio_id
        # The same file through FFmpeg, where libsndfile would have read it: the same id.
        assert _decode_ffmpeg(str(path), path.stat().st_size, 3600).audio_id == audio.audio_id, name
    assert len(set(ids.values())) == 1, ids


# -- lossy audio: the packets, not the tags --------------------------------------------------------


def _retag(path: Path, **tags: str) -> None:
    f = mutagen.File(path, easy=True)
    if f.tags is None:
        f.add_tags()
    for key, value in tags.items():
        f[key] = value
    f.save()


@pytest.mark.parametrize("name,codec,muxer", [
    ("song.mp3", "libmp3lame", "mp3"),
    ("song.m4a", "aac", "ipod"),
    ("song.opus", "libopus", "ogg"),
    ("song.ogg", "vorbis", "ogg"),
    ("song.wma", "wmav2", "asf"),
])
def test_lossy_ids_come_from_packets_and_survive_retags(tmp_path: Path, name: str, codec: str, muxer: str) -> None:
    path = tmp_path / name
    encode_av(path, codec, muxer, seconds=2.0, strict=codec == "vorbis", bit_rate=128000,
              rate=48000 if codec == "libopus" else 44100)
    before = decode(str(path))
    assert before.id_rule == "packets"
    size = path.stat().st_size
    _retag(path, artist="Someone Else", title="A much longer title than before " * 8)
    assert path.stat().st_size != size  # the bytes moved: the tags grew
    assert decode(str(path)).audio_id == before.audio_id


def test_mp3_id_survives_id3v1_id3v2_padding_and_ape_tags(tmp_path: Path) -> None:
    from mutagen.apev2 import APEv2
    from mutagen.id3 import ID3, TIT2

    path = tmp_path / "song.mp3"
    encode_av(path, "libmp3lame", "mp3", seconds=2.0)
    original = decode(str(path)).audio_id
    tags = ID3()
    tags.add(TIT2(encoding=3, text="title"))
    tags.save(path, v1=2, padding=lambda info: 256 * 1024)  # ID3v2 with a big padding, and ID3v1
    assert path.read_bytes()[-128:-125] == b"TAG"
    assert decode(str(path)).audio_id == original
    ape = APEv2()
    ape["Artist"] = "ape tagged"
    ape.save(path)
    assert decode(str(path)).audio_id == original


def test_another_encoding_is_another_audio(tmp_path: Path) -> None:
    encode_av(tmp_path / "a.mp3", "libmp3lame", "mp3", seconds=2.0, bit_rate=128000)
    encode_av(tmp_path / "b.mp3", "libmp3lame", "mp3", seconds=2.0, bit_rate=192000)
    assert decode(str(tmp_path / "a.mp3")).audio_id != decode(str(tmp_path / "b.mp3")).audio_id


# -- a catalogue written before the packets rule ---------------------------------------------------


@pytest.fixture
def before(tmp_path: Path) -> tuple[Path, Path]:
    """tests/data/before-packets, laid out so that its files are unchanged for a scan."""
    lib, db_path = tmp_path / "lib", tmp_path / "catalogue.duckdb"
    lib.mkdir()
    with gzip.open(BEFORE / "catalogue.duckdb.gz") as src, open(db_path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    con = duckdb.connect(str(db_path))
    con.execute("UPDATE roots SET path = ?", [str(lib)])
    for name, mtime_ns in con.execute("SELECT name, mtime_ns FROM files").fetchall():
        shutil.copyfile(BEFORE / name, lib / name)
        os.utime(lib / name, ns=(mtime_ns, mtime_ns))
        st = (lib / name).stat()
        con.execute("UPDATE files SET dev = ?, inode = ? WHERE name = ?", [st.st_dev, st.st_ino, name])
    # Its loudness results stand for those of today's loudness: these tests are about the audio id
    # rule, and a newer loudness version re-analyses by design (tests/test_reindex.py).
    loudness = {e.name: e for e in registry.load_extractors(catalog.load_settings(db=db_path))}["loudness"]
    for table in ("runs", "extractor_identities"):
        con.execute(f"UPDATE {table} SET version = ?, params_hash = ? WHERE extractor = 'loudness'",
                    [loudness.version, loudness.params_hash])
    con.close()
    return lib, db_path


def _ids(db_path: Path) -> dict[str, str]:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return dict(con.execute("SELECT name, audio_id FROM files").fetchall())
    finally:
        con.close()


def _loudness_runs(db: catalog.Database) -> list[tuple]:
    return rows(db, "SELECT audio_id, started_at, attempts FROM runs WHERE extractor = 'loudness' ORDER BY 1")


def test_a_catalogue_from_before_keeps_its_results_when_extractors_need_its_audio(before) -> None:
    lib, db_path = before
    old = _ids(db_path)
    scanned = run_muscat("scan", str(lib), "--json", db=db_path)
    assert scanned.returncode == 0, scanned.stderr
    assert json.loads(scanned.stdout)["unchanged"] == 4  # after the upgrade (a migration): nothing to redo
    with closing(catalog.Database(db_path)) as db:
        loudness_before = _loudness_runs(db)
    # A new extractor to run on every audio: each file is decoded under the new rule.
    out = run_muscat("extract", "--only", "loudness,key", "--json", db=db_path, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["failed"] == 0 and report["probed"] == 0
    new = _ids(db_path)
    assert new["song.flac"] == old["song.flac"]  # lossless: the rule did not change
    for name in ("song.mp3", "song.m4a", "song.opus"):
        expected = decode(str(lib / name))
        assert new[name] == expected.audio_id != old[name], name
    with closing(catalog.Database(db_path)) as db:
        # Every loudness result kept (the same rows, now under the new ids); key ran once each.
        assert sorted((started, attempts) for _, started, attempts in _loudness_runs(db)) == sorted(
            (started, attempts) for _, started, attempts in loudness_before)
        assert sorted(a for a, _, _ in _loudness_runs(db)) == sorted(new.values())
        assert rows(db, "SELECT count(*) FROM runs WHERE extractor = 'key' AND status = 'ok'") == [(4,)]
        assert rows(db, "SELECT count(*) FROM audio") == [(4,)]
        assert rows(db, "SELECT count(*) FROM pending WHERE extractor IN ('loudness', 'key')") == [(0,)]
        assert rows(db, "SELECT count(*) FROM features WHERE feature = 'loudness_integrated' AND NOT stale") == [(4,)]
        assert_intact(db)


def test_a_catalogue_from_before_keeps_its_results_through_a_retag(before) -> None:
    lib, db_path = before
    old = _ids(db_path)
    _retag(lib / "song.mp3", title="Retagged after the upgrade")
    _retag(lib / "song.m4a", title="Retagged after the upgrade")
    assert run_muscat("scan", str(lib), db=db_path).returncode == 0
    out = run_muscat("extract", "--only", "loudness", "--json", db=db_path, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["probed"] == 2 and report["ok"] == 0 and report["failed"] == 0  # nothing analysed again
    new = _ids(db_path)
    assert new["song.mp3"] != old["song.mp3"] and new["song.m4a"] != old["song.m4a"]
    assert new["song.opus"] == old["song.opus"]  # not touched: not decoded, still the old id
    with closing(catalog.Database(db_path)) as db:
        assert rows(db, "SELECT count(*) FROM runs WHERE extractor = 'loudness'") == [(4,)]
        assert rows(db, "SELECT count(*) FROM pending WHERE extractor = 'loudness'") == [(0,)]
        assert_intact(db)


def test_new_content_under_an_old_name_is_analysed_again(before) -> None:
    lib, db_path = before
    old = _ids(db_path)
    encode_av(lib / "song.mp3", "libmp3lame", "mp3", seconds=2.0)  # another recording, same name
    assert run_muscat("scan", str(lib), db=db_path).returncode == 0
    out = run_muscat("extract", "--only", "loudness", "--json", db=db_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ok"] == 1
    assert _ids(db_path)["song.mp3"] != old["song.mp3"]
    with closing(catalog.Database(db_path)) as db:
        assert_intact(db)
