"""Tags, read with mutagen: per container, on new and changed files only, through retags,
broken tags, upgrades from a catalogue without tags, kills mid-way, and the watcher.

Files are made as a user's are: audio encoded by FFmpeg's encoders (PyAV), tags written by
mutagen as a tagger writes them, in each container's own tag format.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import time
from contextlib import closing
from fractions import Fraction
from pathlib import Path

import duckdb
import mutagen
import numpy as np
import pytest
from audio import sine, write
from conftest import assert_intact, rows, run_muscat

import catalog
from catalog import migrations, tags

MBID_TRACK = "5b11f4ce-a62d-471e-81fc-a69a8278c7da"
MBID_ALBUM = "f5093c06-23e3-404f-aeaa-40f72885ee3a"
MBID_ARTIST = "a74b1b7f-71a5-4011-9441-d0b5e4122711"
COVER = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8  # a picture: binary, never a tag value

# The tags every container gets (in its own format), and what `library` shows of them.
LIBRARY = {"artist": "Ärtist Ñame", "album": "Albüm", "albumartist": "Various Artists", "title": "Tïtle 曲",
           "genre": "Rock", "date": "2001-05-03", "track_number": 3, "disc_number": 1}


# -- making files --------------------------------------------------------------------------------


def encode(path: Path, codec: str, muxer: str, seconds: float = 1.0, rate: int = 44100, channels: int = 1,
           freq: float = 440.0, **options: str) -> Path:
    """A sine through FFmpeg's `codec` into its `muxer` (PyAV), with no tags of ours."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    layout = "mono" if channels == 1 else "stereo"
    n = int(seconds * rate)
    signal = (0.25 * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)
    with av.open(str(path), "w", format=muxer) as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.layout = layout
        if codec in ("wmav2", "vorbis"):
            stream.bit_rate = 128000
        for start in range(0, n, 1024):
            block = np.repeat(signal[None, start : start + 1024], channels, 0)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def id3_frames(v23: bool = False) -> list:
    from mutagen import id3

    return [
        id3.TPE1(encoding=3, text=["Ärtist Ñame"]), id3.TALB(encoding=3, text=["Albüm"]),
        id3.TPE2(encoding=3, text=["Various Artists"]), id3.TIT2(encoding=3, text=["Tïtle 曲"]),
        id3.TCON(encoding=3, text=["Rock", "Pop"]), id3.TDRC(encoding=3, text=["2001-05-03"]),
        id3.TRCK(encoding=3, text=["3/12"]), id3.TPOS(encoding=3, text=["1/2"]),
        id3.UFID(owner="http://musicbrainz.org", data=MBID_TRACK.encode()),
        id3.TXXX(encoding=3, desc="MusicBrainz Album Id", text=[MBID_ALBUM]),
        id3.TXXX(encoding=3, desc="MusicBrainz Artist Id", text=[MBID_ARTIST]),
        id3.TXXX(encoding=3, desc="CATALOGNUMBER", text=["CAT-001"]),
        id3.TXXX(encoding=3, desc="My Own Tag", text=["mine"]),
        id3.COMM(encoding=3, lang="eng", desc="", text=["a comment"]),
        id3.APIC(encoding=3, mime="image/png", type=3, desc="front", data=COVER),
    ]


def tag_mp3_id3(path: Path, version: int) -> None:
    from mutagen.id3 import ID3

    tags_ = ID3()
    for frame in id3_frames():
        tags_.add(frame)
    tags_.save(path, v2_version=version)  # v2.3: TDRC becomes TYER + TDAT, multiple values '/'-joined


def tag_id3_chunk(path: Path) -> None:  # WAV, AIFF: an ID3 chunk
    f = mutagen.File(path)
    f.add_tags()
    for frame in id3_frames():
        f.tags.add(frame)
    f.save()


def tag_vorbis(path: Path, split_total: bool = False) -> None:
    f = mutagen.File(path)
    f.tags.update({"ARTIST": ["Ärtist Ñame"], "ALBUM": ["Albüm"], "ALBUMARTIST": ["Various Artists"],
                   "TITLE": ["Tïtle 曲"], "GENRE": ["Rock", "Pop"], "DATE": ["2001-05-03"],
                   "MUSICBRAINZ_TRACKID": [MBID_TRACK], "MUSICBRAINZ_ALBUMID": [MBID_ALBUM],
                   "MUSICBRAINZ_ARTISTID": [MBID_ARTIST], "CATALOGNUMBER": ["CAT-001"],
                   "My Own Tag": ["mine"]})
    if split_total:  # as most taggers write Vorbis comments
        f.tags.update({"TRACKNUMBER": ["3"], "TRACKTOTAL": ["12"], "DISCNUMBER": ["1"], "DISCTOTAL": ["2"]})
    else:
        f.tags.update({"TRACKNUMBER": ["3/12"], "DISCNUMBER": ["1/2"]})
    if hasattr(f, "add_picture"):
        from mutagen.flac import Picture

        picture = Picture()
        picture.type, picture.mime, picture.data = 3, "image/png", COVER
        f.add_picture(picture)
    f.save()


def tag_mp4(path: Path) -> None:
    from mutagen.mp4 import MP4, MP4Cover, MP4FreeForm

    f = MP4(path)
    freeform = "----:com.apple.iTunes:"
    f.tags.update({"\xa9ART": ["Ärtist Ñame"], "\xa9alb": ["Albüm"], "aART": ["Various Artists"],
                   "\xa9nam": ["Tïtle 曲"], "\xa9gen": ["Rock", "Pop"], "\xa9day": ["2001-05-03"],
                   "trkn": [(3, 12)], "disk": [(1, 2)],
                   freeform + "MusicBrainz Track Id": [MP4FreeForm(MBID_TRACK.encode())],
                   freeform + "MusicBrainz Album Id": [MP4FreeForm(MBID_ALBUM.encode())],
                   freeform + "MusicBrainz Artist Id": [MP4FreeForm(MBID_ARTIST.encode())],
                   freeform + "CATALOGNUMBER": [MP4FreeForm(b"CAT-001")],
                   freeform + "My Own Tag": [MP4FreeForm(b"mine")],
                   "covr": [MP4Cover(COVER, imageformat=MP4Cover.FORMAT_PNG)]})
    f.save()


def tag_ape(path: Path) -> None:
    from mutagen.apev2 import APEv2, APEValue, BINARY

    f = APEv2()
    f.update({"Artist": "Ärtist Ñame", "Album": "Albüm", "Album Artist": "Various Artists", "Title": "Tïtle 曲",
              "Genre": ["Rock", "Pop"], "Year": "2001-05-03", "Track": "3/12", "Disc": "1/2",
              "MUSICBRAINZ_TRACKID": MBID_TRACK, "MUSICBRAINZ_ALBUMID": MBID_ALBUM,
              "MUSICBRAINZ_ARTISTID": MBID_ARTIST, "CatalogNumber": "CAT-001", "My Own Tag": "mine"})
    f["Cover Art (Front)"] = APEValue(b"front.png\x00" + COVER, BINARY)
    f.save(path)


def tag_asf(path: Path) -> None:
    from mutagen.asf import ASF, ASFByteArrayAttribute

    f = ASF(path)
    f.tags.update({"Title": ["Tïtle 曲"], "Author": ["Ärtist Ñame"], "WM/AlbumTitle": ["Albüm"],
                   "WM/AlbumArtist": ["Various Artists"], "WM/Genre": ["Rock", "Pop"], "WM/Year": ["2001-05-03"],
                   "WM/TrackNumber": ["3/12"], "WM/PartOfSet": ["1/2"], "MusicBrainz/Track Id": [MBID_TRACK],
                   "MusicBrainz/Album Id": [MBID_ALBUM], "MusicBrainz/Artist Id": [MBID_ARTIST],
                   "WM/CatalogNo": ["CAT-001"], "My Own Tag": ["mine"],
                   "WM/Picture": [ASFByteArrayAttribute(b"\x03" + COVER)]})
    f.save()


# name -> (file name, codec, muxer, encoder options, tagger); each a different container/tag format.
CONTAINERS = {
    "mp3-id3v2.4": ("v24.mp3", "libmp3lame", "mp3", {}, lambda p: tag_mp3_id3(p, 4)),
    "mp3-id3v2.3": ("v23.mp3", "libmp3lame", "mp3", {}, lambda p: tag_mp3_id3(p, 3)),
    "mp3-apev2": ("ape.mp3", "libmp3lame", "mp3", {}, tag_ape),
    "flac": ("song.flac", "flac", "flac", {}, lambda p: tag_vorbis(p, split_total=True)),
    "opus": ("song.opus", "libopus", "opus", {}, tag_vorbis),
    "ogg-vorbis": ("song.ogg", "vorbis", "ogg", {"strict": "experimental"}, tag_vorbis),
    "m4a": ("song.m4a", "aac", "ipod", {}, tag_mp4),
    "wavpack": ("song.wv", "wavpack", "wv", {}, tag_ape),
    "wma": ("song.wma", "wmav2", "asf", {}, tag_asf),
    "wav-id3": ("song.wav", "pcm_s16le", "wav", {}, tag_id3_chunk),
    "aiff-id3": ("song.aiff", "pcm_s16be", "aiff", {}, tag_id3_chunk),
}


def make(folder: Path, name: str) -> Path:
    filename, codec, muxer, options, tagger = CONTAINERS[name]
    rate = 48000 if codec == "libopus" else 44100
    channels = 2 if codec == "vorbis" else 1  # FFmpeg's own vorbis encoder takes stereo only
    path = encode(folder / name / filename, codec, muxer, rate=rate, channels=channels, **options)
    tagger(path)
    return path


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """One library with a tagged file of each container, scanned once."""
    root = tmp_path_factory.mktemp("tagged") / "Music"
    made = {name: make(root, name) for name in CONTAINERS}
    settings = catalog.load_settings(db=root.parent / "cat.duckdb")
    db = catalog.Database(settings.db_path)
    report = catalog.scan(db, [str(root)], settings)
    assert report.problems == []
    yield db, settings, made
    db.close()


def values(db, path: Path, key: str) -> list[str]:
    return [v for (v,) in rows(db, "SELECT value FROM tags WHERE path = ? AND key = ? ORDER BY ordinal",
                                [str(path), key])]


# -- what each container's tags become ------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONTAINERS))
def test_library_shows_the_first_tags_of_each_container(tagged, name):
    db, _, made = tagged
    columns = list(LIBRARY)
    got = rows(db, f"SELECT {', '.join(columns)} FROM library WHERE path = ?", [str(made[name])])
    expected = dict(LIBRARY, genre="Rock/Pop") if name == "mp3-id3v2.3" else LIBRARY  # see below
    assert got == [tuple(expected.values())]
    types = dict(rows(db, "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'library'"))
    assert {types[c] for c in columns[:6]} == {"VARCHAR"} and types["track_number"] == types["disc_number"] == "INTEGER"


@pytest.mark.parametrize("name", list(CONTAINERS))
def test_tags_view_has_every_value_under_easy_names(tagged, name):
    db, _, made = tagged
    path = made[name]
    # ID3v2.3 has no multiple values: a tagger joins them ('Rock/Pop'), and muscat does not split
    # them again (that would cut 'AC/DC').
    assert values(db, path, "genre") == (["Rock/Pop"] if name == "mp3-id3v2.3" else ["Rock", "Pop"])
    assert values(db, path, "musicbrainz_trackid") == [MBID_TRACK]
    assert values(db, path, "musicbrainz_albumid") == [MBID_ALBUM]
    assert values(db, path, "musicbrainz_artistid") == [MBID_ARTIST]
    assert values(db, path, "catalognumber") == ["CAT-001"]
    assert values(db, path, "my own tag") == ["mine"]  # no easy name: kept, lowercased
    expected_track = "3" if name == "flac" else "3/12"
    assert values(db, path, "tracknumber") == [expected_track]
    assert values(db, path, "date") == ["2001-05-03"]
    assert values(db, path, "artist") == ["Ärtist Ñame"]
    if name == "flac":
        assert values(db, path, "tracktotal") == ["12"]
    keys = {k for (k,) in rows(db, "SELECT key FROM tags WHERE path = ?", [str(path)])}
    assert keys == {k.lower() for k in keys}
    # Cover art is binary: never a value.
    assert rows(db, "SELECT count(*) FROM tags WHERE path = ? AND length(value) > 200", [str(path)]) == [(0,)]
    assert not keys & {"apic", "covr", "cover art (front)", "wm/picture", "metadata_block_picture"}
    assert rows(db, "SELECT DISTINCT audio_id IS NULL FROM tags WHERE path = ?", [str(path)]) == [(True,)]


def test_track_features_has_the_first_tags(tagged):
    db, settings, made = tagged
    catalog.sync_extractors(db, settings)
    got = rows(db, "SELECT artist, album, albumartist, title, genre, date FROM track_features WHERE path = ?",
               [str(made["m4a"])])
    assert got == [tuple(list(LIBRARY.values())[:6])]
    columns = [c for (c,) in rows(db, "SELECT column_name FROM duckdb_columns() WHERE table_name = 'track_features'")]
    assert columns[:8] == ["path", "audio_id", "artist", "album", "albumartist", "title", "genre", "date"]


def test_id3_names_are_easyid3s(tmp_path):
    """Where EasyID3 has a name for a frame, the reader gives that name and EasyID3's values."""
    from mutagen.easyid3 import EasyID3
    from mutagen.id3 import ID3

    path = encode(tmp_path / "a.mp3", "libmp3lame", "mp3")
    tag_mp3_id3(path, 4)
    easy = EasyID3(path)
    easy.update({"composer": ["Cömposer"], "bpm": ["120"], "isrc": ["USRC17607839"], "originaldate": ["1999"],
                 "performer:guitar": ["Gui Tarist"], "website": ["https://example.org/"], "barcode": ["0123"],
                 "replaygain_track_gain": ["-6.5 dB"], "replaygain_track_peak": ["0.9"]})
    easy.save()
    pairs, problem = tags.read(path)
    assert problem is None
    mine: dict[str, list[str]] = {}
    for key, value in pairs:
        mine.setdefault(key, []).append(value)
    expected = dict(EasyID3(path))
    assert {k: mine[k] for k in expected} == expected
    # And the frames EasyID3 has no name for are kept under the documented names.
    assert mine["comment"] == ["a comment"] and mine["my own tag"] == ["mine"]
    assert set(mine) - set(expected) <= {"comment", "my own tag", "encoder"}
    assert ("encoder" in mine) == ("TSSE" in ID3(path))


@pytest.mark.parametrize("value,number", [("3/12", 3), ("03", 3), (" 7 ", 7), ("12/", 12), ("A1", None),
                                          ("two", None), ("3 of 12", None), ("99999999999", None)])
def test_track_numbers_are_integers_or_null(tmp_path, db, settings, value, number):
    path = encode(tmp_path / "Music" / "a.flac", "flac", "flac", seconds=0.2)
    f = mutagen.File(path)
    f["tracknumber"] = [value]
    f["discnumber"] = [value]
    f.save()
    catalog.scan(db, [str(tmp_path / "Music")], settings)
    assert rows(db, "SELECT track_number, disc_number FROM library") == [(number, number)]
    assert values(db, path, "tracknumber") == [value.strip("\x00")]


# -- what is not a problem, and what is ------------------------------------------------------------


def test_files_without_tags_or_unknown_to_mutagen_or_cut_are_no_problem(library, db, settings, tmp_path):
    root, files = library  # soundfile's files, and broken ones: empty, text, random bytes
    encode(root / "untagged.wav", "pcm_s16le", "wav")
    (root / "odd.mka").write_bytes(b"\x1a\x45\xdf\xa3" + bytes(200))  # Matroska: mutagen has no reader
    # Files cut inside their tags: the decoder fails them as truncated; no tag problem besides.
    for name, keep in (("mp3-id3v2.4", 300), ("flac", 60), ("ogg-vorbis", 0.3)):
        whole = make(tmp_path / "whole", name).read_bytes()
        (root / "Cut" / f"cut-{name}").parent.mkdir(exist_ok=True)
        cut = whole[: keep if isinstance(keep, int) else int(len(whole) * keep)]
        (root / "Cut" / f"cut-{name}{Path(CONTAINERS[name][0]).suffix}").write_bytes(cut)
    report = catalog.scan(db, [str(root)], settings)
    assert report.problems == [] and report.errors == 0
    assert rows(db, "SELECT count(*) FROM scan_problems") == [(0,)]
    assert rows(db, "SELECT count(*) FROM library WHERE artist IS NOT NULL") == [(0,)]
    # Every file's tags were read (none left for the next scan to try again).
    assert rows(db, "SELECT count(*) FROM files WHERE tags_read_at IS NULL") == [(0,)]
    assert_intact(db)


def corrupt_id3(path: Path) -> None:
    """An ID3v2 header whose version mutagen refuses (FFmpeg still skips the tag by its size)."""
    data = bytearray(path.read_bytes())
    assert data[:3] == b"ID3"
    data[3] = 9
    path.write_bytes(bytes(data))


def corrupt_vorbis_comment(path: Path) -> None:
    """A VORBIS_COMMENT block whose vendor string claims 2 GB (the block's own size is intact)."""
    data = bytearray(path.read_bytes())
    offset = 4
    while True:
        header, size = data[offset], int.from_bytes(data[offset + 1 : offset + 4], "big")
        if header & 0x7F == 4:
            data[offset + 4 : offset + 8] = b"\xff\xff\xff\x7f"
            path.write_bytes(bytes(data))
            return
        assert not header & 0x80, "no VORBIS_COMMENT block"
        offset += 4 + size


def test_broken_tags_are_a_scan_problem_that_stays_and_the_audio_is_still_extracted(tmp_path):
    root = tmp_path / "Music"
    mp3 = make(root, "mp3-id3v2.4")
    flac = make(root, "flac")
    good = make(root, "opus")
    corrupt_id3(mp3)
    corrupt_vorbis_comment(flac)
    db_path = tmp_path / "cat.duckdb"
    first = run_muscat("scan", str(root), "--json", db=db_path)
    assert first.returncode == 1  # done, and something reported
    assert json.loads(first.stdout)["errors"] == 2
    assert f"{mp3}: tags: ID3: ID3v2.9 not supported" in first.stderr
    db = catalog.Database(db_path)
    problems = dict(rows(db, "SELECT path, reason FROM scan_problems"))
    assert set(problems) == {str(mp3), str(flac)}
    assert problems[str(mp3)] == "tags: ID3: ID3v2.9 not supported"
    assert problems[str(flac)].startswith("tags: FLAC: ")
    # Tags never affect extraction: both files are probed and measured.
    extracted = run_muscat("extract", "--only", "probe,loudness", "--json", db=db_path)
    assert extracted.returncode == 0, extracted.stderr
    assert rows(db, "SELECT count(*) FROM library WHERE duration_s BETWEEN 0.9 AND 1.1") == [(3,)]
    assert rows(db, "SELECT count(*) FROM failed") == [(0,)]
    assert rows(db, "SELECT count(DISTINCT path) FROM features WHERE extractor = 'loudness'") == [(3,)]
    assert values(db, good, "artist") == ["Ärtist Ñame"]
    # A rescan with nothing changed keeps the problems on view (and does not read the files again).
    again = run_muscat("scan", str(root), "--json", db=db_path)
    assert json.loads(again.stdout)["unchanged"] == 3
    assert dict(rows(db, "SELECT path, reason FROM scan_problems")) == problems
    # Also a scan of the folder alone, and a scan of another folder of the root.
    run_muscat("scan", str(mp3.parent), db=db_path)
    run_muscat("scan", str(good.parent), db=db_path)
    assert dict(rows(db, "SELECT path, reason FROM scan_problems")) == problems
    # Once a tagger has mended the file, the problem is gone.
    data = bytearray(mp3.read_bytes())
    data[3] = 4
    mp3.write_bytes(bytes(data))
    tag_mp3_id3(mp3, 4)
    fixed = run_muscat("scan", str(root), "--json", db=db_path)
    assert json.loads(fixed.stdout)["changed"] == 1
    assert dict(rows(db, "SELECT path, reason FROM scan_problems")) == {str(flac): problems[str(flac)]}
    assert values(db, mp3, "artist") == ["Ärtist Ñame"]
    # And a file that goes away takes its problem with it.
    flac.unlink()
    run_muscat("scan", str(root), db=db_path)
    assert rows(db, "SELECT count(*) FROM scan_problems") == [(0,)]
    assert_intact(db)


# -- new and changed files only --------------------------------------------------------------------


def count_reads(monkeypatch) -> list[bytes]:
    seen: list[bytes] = []
    real = tags.read

    def counting(path):
        seen.append(path)
        return real(path)

    monkeypatch.setattr(tags, "read", counting)
    return seen


def test_a_rescan_reads_tags_of_new_and_changed_files_only(tmp_path, db, settings, monkeypatch):
    root = tmp_path / "Music"
    for i in range(6):
        make(root / f"album{i}", "mp3-id3v2.4")
    seen = count_reads(monkeypatch)
    catalog.scan(db, [str(root)], settings)
    assert len(seen) == 6
    seen.clear()
    report = catalog.scan(db, [str(root)], settings)
    assert report.unchanged == 6 and seen == []  # nothing changed: no file opened
    changed = root / "album2" / "mp3-id3v2.4" / "v24.mp3"
    f = mutagen.File(changed)
    f.tags["TIT2"] = mutagen.id3.TIT2(encoding=3, text=["Retitled"])
    f.save()
    write(root / "album0" / "new.flac", sine(300, 0.3))
    report = catalog.scan(db, [str(root)], settings)
    assert report.changed == 1 and report.added == 1
    assert sorted(os.path.basename(p) for p in seen) == [b"new.flac", b"v24.mp3"]
    assert rows(db, "SELECT title FROM library WHERE path = ?", [str(changed)]) == [("Retitled",)]
    assert_intact(db)


def test_a_move_keeps_tags_without_reading_them(tmp_path, db, settings, monkeypatch):
    root = tmp_path / "Music"
    path = make(root / "a", "m4a")
    catalog.scan(db, [str(root)], settings)
    seen = count_reads(monkeypatch)
    (root / "b").mkdir()
    path.rename(root / "b" / "moved.m4a")
    report = catalog.scan(db, [str(root)], settings)
    assert report.moved == 1 and seen == []
    assert values(db, root / "b" / "moved.m4a", "artist") == ["Ärtist Ñame"]


def test_a_catalogue_from_before_tags_gets_them_on_its_next_scan(tmp_path, settings):
    root = tmp_path / "Music"
    made = [make(root, name) for name in ("flac", "m4a", "mp3-id3v2.3")]
    # Catalogue the files with today's muscat, then copy its rows into a catalogue of schema
    # version 2 (the last before tags): what a user upgrading from that muscat has.
    current = tmp_path / "now.duckdb"
    assert run_muscat("scan", str(root), db=current).returncode == 0
    old = settings.db_path
    with closing(duckdb.connect(str(old))) as con:
        for migration in migrations.MIGRATIONS[:2]:
            con.execute(migration.read_text())
        con.execute("INSERT INTO schema_version VALUES (1, now()::TIMESTAMP, '0.1.0'), (2, now()::TIMESTAMP, '0.1.0')")
        con.execute(f"ATTACH '{current}' AS now (READ_ONLY)")
        for table in ("roots", "files", "dirs"):
            columns = [c for (c,) in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = 'cat' AND table_name = ? "
                "ORDER BY column_index", [table]).fetchall()]
            listed = ", ".join(columns)
            con.execute(f"INSERT INTO {table} ({listed}) SELECT {listed} FROM now.{table}")
        con.execute("DETACH now")
    db = catalog.Database(old)
    with db.read() as con:
        assert con.execute("SELECT count(*) FROM files WHERE tags_read_at IS NULL").fetchone() == (3,)
    assert rows(db, "SELECT count(*) FROM tags") == [(0,)]
    report = catalog.scan(db, [str(root)], settings)
    assert report.unchanged == 3 and report.added == report.changed == 0
    assert rows(db, "SELECT path, artist, track_number FROM library ORDER BY path") == sorted(
        (str(p), "Ärtist Ñame", 3) for p in made)
    assert old.with_name(old.name + ".bak-v2").exists()
    assert_intact(db)


def test_a_scan_killed_while_reading_tags_loses_nothing(tmp_path, db, settings, monkeypatch):
    root = tmp_path / "Music"
    for i in range(5):
        make(root / f"a{i}", "opus")
    monkeypatch.setattr(tags, "BATCH_FILES", 2)
    real = tags.read
    calls = []

    def dying(path):
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt  # Ctrl-C, or a kill, in the middle of the reading
        return real(path)

    monkeypatch.setattr(tags, "read", dying)
    with pytest.raises(KeyboardInterrupt):
        catalog.scan(db, [str(root)], settings)
    # The files are catalogued; the tags of the first batch are written, the rest are not.
    assert rows(db, "SELECT count(*), count(tags_read_at) FROM files") == [(5, 2)]
    monkeypatch.setattr(tags, "read", real)
    seen = count_reads(monkeypatch)
    report = catalog.scan(db, [str(root)], settings)
    assert report.unchanged == 5 and len(seen) == 3
    assert rows(db, "SELECT count(*) FROM library WHERE artist = 'Ärtist Ñame'") == [(5,)]
    assert_intact(db)


def test_many_files_are_read_by_a_process_pool_with_the_same_result(tmp_path, db, settings, monkeypatch):
    root = tmp_path / "Music"
    sources = [make(tmp_path / "src", name) for name in ("mp3-id3v2.4", "flac", "m4a", "wma")]
    for i in range(160):
        source = sources[i % len(sources)]
        target = root / f"f{i % 8}" / f"{i}{source.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    monkeypatch.setattr(tags, "POOL_THRESHOLD", 10)
    monkeypatch.setattr(tags, "POOL_MIN_CORES", 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.setattr(tags, "CHUNK", 16)
    used = []
    real_pool = tags._read_all

    def spy(todo, workers):
        used.append(len(todo))
        yield from real_pool(todo, 2)

    started = []
    real_executor = concurrent.futures.ProcessPoolExecutor

    def executor(processes, **kwargs):
        started.append(processes)
        return real_executor(processes, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", executor)

    monkeypatch.setattr(tags, "_read_all", spy)
    catalog.scan(db, [str(root)], settings)
    assert used == [160] and started == [2]  # read by two processes
    pooled = rows(db, "SELECT path, key, ordinal, value FROM tags ORDER BY ALL")
    expected = []
    for path in sorted(root.rglob("*.*")):
        seen: dict[str, int] = {}
        for key, value in tags.read(str(path))[0]:
            expected.append((str(path), key, seen.get(key, 0), value))
            seen[key] = seen.get(key, 0) + 1
    assert pooled == sorted(expected)
    assert rows(db, "SELECT count(*) FROM library WHERE artist = 'Ärtist Ñame' AND track_number = 3") == [(160,)]


def expected_tags(root: Path) -> list[tuple[str, str, int, str]]:
    """(path, key, ordinal, value) of every file under `root`, as tags.read() gives them."""
    expected = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        seen: dict[str, int] = {}
        for key, value in tags.read(os.fsencode(path))[0]:
            # The catalogue's text for a name that is not UTF-8 has \\xNN escapes.
            expected.append((os.fsencode(path).decode("utf-8", "backslashreplace"), key, seen.get(key, 0), value))
            seen[key] = seen.get(key, 0) + 1
    return sorted(expected)


def test_the_walkers_read_the_tags_of_a_new_root_with_the_same_result(tmp_path):
    """On a root new to the catalogue the forked walkers read the tags (written with the files,
    stored as read at the scan's time); a known root's files are not read again."""
    first, second = tmp_path / "Music", tmp_path / "More"
    for name in ("mp3-id3v2.4", "flac", "m4a", "wma", "wav-id3", "mp3-apev2"):
        make(first / "a", name)
    broken = make(first / "b", "mp3-id3v2.3")
    corrupt_id3(broken)
    encode(first / "b" / "untagged.wav", "pcm_s16le", "wav", seconds=0.1)
    odd = os.fsencode(first / "b") + b"/caf\xe9 " + b"x" * 200 + b".flac"  # not UTF-8
    shutil.copy(first / "a" / "flac" / "song.flac", odd)
    for name in ("opus", "ogg-vorbis"):
        make(second, name)
    db_path = tmp_path / "cat.duckdb"
    scanned = run_muscat("scan", str(first), "--json", db=db_path)
    assert scanned.returncode == 1 and json.loads(scanned.stdout)["added"] == 9
    assert f"{broken}: tags: ID3: ID3v2.9 not supported" in scanned.stderr
    db = catalog.Database(db_path)
    got = "SELECT path, key, ordinal, value FROM tags ORDER BY ALL"
    assert rows(db, got) == expected_tags(first)
    # Read by the walkers: at the scan's time (the reading after the walk stores a later one).
    assert rows(db, "SELECT count(*), count(*) FILTER (WHERE tags_read_at = changed_at) FROM files") == [(9, 9)]
    assert rows(db, "SELECT path, reason FROM scan_problems") == [(str(broken), "tags: ID3: ID3v2.9 not supported")]
    assert rows(db, "SELECT count(*) FROM library WHERE artist = 'Ärtist Ñame' AND track_number = 3") == [(7,)]
    before = rows(db, "SELECT file_id, tags_read_at FROM files ORDER BY file_id")
    # A second root, new to the existing catalogue: its walkers read it, the first is not read.
    added = run_muscat("scan", str(first), str(second), "--json", db=db_path)
    assert json.loads(added.stdout) == dict(added=2, changed=0, moved=0, missing=0, unchanged=9, errors=0)
    assert rows(db, got) == sorted(expected_tags(first) + expected_tags(second))
    assert rows(db, "SELECT file_id, tags_read_at FROM files WHERE file_id IN (SELECT unnest(?)) ORDER BY file_id",
                [[f for f, _ in before]]) == before
    assert rows(db, "SELECT count(*) FROM files WHERE tags_read_at = changed_at") == [(11,)]
    assert run_muscat("scan", str(first), str(second), db=db_path).returncode == 0  # nothing read again
    assert rows(db, "SELECT path, reason FROM scan_problems") == [(str(broken), "tags: ID3: ID3v2.9 not supported")]
    assert_intact(db)


def test_a_walk_that_reads_tags_gives_what_reading_them_after_the_walk_gives(tmp_path):
    """The walkers of a new root read each file's tags through the open that stats it (walk's
    `tag_budget`): the same listings, tags, problems and columns as read_tags_of() after a plain
    walk. A link is read through; a FIFO, or a link to one, is neither opened nor listed."""
    from catalog import walker

    root = tmp_path / "Music"
    for name in CONTAINERS:
        make(root / "a", name)
    broken = make(root / "b", "mp3-id3v2.3")
    corrupt_id3(broken)
    (root / "b" / "empty.flac").write_bytes(b"")
    os.symlink(root / "a" / "flac" / "song.flac", root / "b" / "link.flac")
    os.mkfifo(root / "b" / "pipe.mp3")
    os.symlink(root / "b" / "pipe.mp3", root / "b" / "to-pipe.mp3")
    extensions = catalog.load_settings(db=tmp_path / "cat.duckdb").audio_extensions
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reading = pool.submit(walker.walk, str(root), extensions, tag_budget=walker.TAG_BUDGET)
        try:
            in_walk = reading.result(timeout=60)
        finally:
            if not reading.done():  # stuck opening the FIFO: a writer lets it go
                with open(root / "b" / "pipe.mp3", "wb"):
                    pass
    after = walker.walk(str(root), extensions)
    walker.read_tags_of(after)
    assert [(x.dir, x.blob, x.tags, x.parsed) for x in in_walk.listings] == \
        [(x.dir, x.blob, x.tags, x.parsed) for x in after.listings]
    assert in_walk.tag_bytes == sum(x.tags.nbytes for x in after.listings) > 0
    by_dir = {x.dir: x for x in in_walk.listings}
    assert by_dir[b"b"].names() == [b"empty.flac", b"link.flac"]
    link = by_dir[b"b"].tags
    assert link.counts[0] == 0 and link.counts[1] > 0 and link.errors is None
    assert list(by_dir[b"b/mp3-id3v2.3"].tags.errors.values()) == ["tags: ID3: ID3v2.9 not supported"]
    assert all(by_dir[f"a/{name}".encode()].tags.counts[0] > 0 for name in CONTAINERS)
    # Within a budget: the folders beyond it are left for the scanner to read.
    first = walker.walk(str(root), extensions, tag_budget=1)
    assert [x.tags is not None for x in first.listings] == [True] + [False] * (len(first.listings) - 1)
    assert [x.blob for x in first.listings] == [x.blob for x in after.listings]


def test_tags_beyond_the_walkers_budget_or_of_a_file_gone_are_read_after_the_walk(tmp_path, db, settings,
                                                                                   monkeypatch):
    from catalog import walker

    root = tmp_path / "Music"
    sources = [make(tmp_path / "src", name) for name in ("mp3-id3v2.4", "flac", "m4a")]
    for i in range(4):
        (root / f"f{i}").mkdir(parents=True)
        for j, source in enumerate(sources):
            shutil.copy(source, root / f"f{i}" / f"{j}{source.suffix}")
    real_start = walker.start_walk
    gone: list[Path] = []

    def start(roots, *args, read_tags=None, **kwargs):
        walks = real_start(roots, *args, **kwargs).result()  # in this process: duckdb is loaded
        assert read_tags == [True]  # a new catalogue: the walkers are told at once
        (w,) = walks
        first = w.listings[0]
        gone.append(root / os.fsdecode(first.dir) / os.fsdecode(first.names()[0]))
        gone[0].unlink()  # listed, then gone before its tags are read
        assert walker.read_tags_of(w, budget=1) > 0  # the first folder only
        assert [x.tags is not None for x in w.listings] == [True, False, False, False]
        return walker.InlineWalk(walks)

    monkeypatch.setattr(walker, "start_walk", start)
    report = catalog.scan(db, [str(root)], settings)
    assert report.added == 12 and report.problems == []
    files = ("WITH f AS (SELECT r.path || '/' || f.dir || '/' || f.name AS path, f.* "
             "FROM files f JOIN roots r USING (root_id)) ")
    assert rows(db, files + "SELECT path FROM f WHERE tags_read_at IS NULL") == [(str(gone[0]),)]
    by_walker = rows(db, files + "SELECT path FROM f WHERE tags_read_at = changed_at ORDER BY path")
    assert by_walker == sorted((str(p),) for p in gone[0].parent.iterdir())
    assert rows(db, files + "SELECT count(*) FROM f WHERE tags_read_at > changed_at") == [(9,)]
    assert rows(db, "SELECT path, key, ordinal, value FROM tags ORDER BY ALL") == expected_tags(root)
    monkeypatch.setattr(walker, "start_walk", real_start)
    again = catalog.scan(db, [str(root)], settings)
    assert again.missing == 1 and again.unchanged == 11
    assert_intact(db)


def test_a_file_moved_into_a_new_root_gets_the_walkers_tags_only_when_due(tmp_path, db, settings, monkeypatch):
    from catalog import walker

    old, new = tmp_path / "Old", tmp_path / "New"
    due, current = make(old / "a", "flac"), make(old / "b", "m4a")
    make(old / "c", "opus")  # stays: the old root is not emptied
    catalog.scan(db, [str(old)], settings)
    with db.write() as con:  # as a catalogue from before tags has it
        con.execute("UPDATE files SET tags_read_at = NULL WHERE name = 'song.flac'")
        con.execute("DELETE FROM file_tags WHERE file_id IN (SELECT file_id FROM files WHERE name = 'song.flac')")
    before = rows(db, "SELECT tags_read_at FROM files WHERE name = 'song.m4a'")
    real_start = walker.start_walk
    told = []

    def start(roots, *args, read_tags=None, **kwargs):
        walking = real_start(roots, *args, **kwargs)

        class Walking:
            inline = False  # as forked walkers: told whose tags to read

            def decide(self, flags):
                told.append(list(flags))

            def result(self):
                walks = walking.result()
                for w in walks:
                    walker.read_tags_of(w)
                return walks

            def abandon(self):
                walking.abandon()

        return Walking()

    monkeypatch.setattr(walker, "start_walk", start)
    new.mkdir()
    due.rename(new / "due.flac")
    current.rename(new / "current.m4a")
    report = catalog.scan(db, [str(old), str(new)], settings)
    assert told == [[False, True]] and report.moved == 2 and report.problems == []
    assert values(db, new / "due.flac", "artist") == ["Ärtist Ñame"]
    # The walkers' reading (counted as at the scan's time), not a reading after the walk.
    assert rows(db, "SELECT tags_read_at FROM files WHERE name = 'due.flac'") == [(report.scanned_at,)]
    assert values(db, new / "current.m4a", "artist") == ["Ärtist Ñame"]
    assert rows(db, "SELECT tags_read_at FROM files WHERE name = 'current.m4a'") == before  # not due: kept
    assert rows(db, "SELECT count(*) FROM files WHERE tags_read_at IS NULL") == [(0,)]
    assert rows(db, "SELECT path, key, ordinal, value FROM tags ORDER BY ALL") == sorted(
        expected_tags(old) + expected_tags(new))
    assert_intact(db)


# -- retags ----------------------------------------------------------------------------------------


def test_a_retag_updates_the_tags_and_keeps_every_feature(tmp_path):
    root = tmp_path / "Music"
    mp3 = make(root, "mp3-id3v2.4")
    flac = make(root, "flac")
    db_path = tmp_path / "cat.duckdb"
    assert run_muscat("scan", str(root), db=db_path).returncode == 0
    extracted = json.loads(run_muscat("extract", "--only", "probe,loudness", "--json", db=db_path).stdout)
    assert extracted["ok"] == 2
    db = catalog.Database(db_path)
    features = "SELECT path, audio_id, feature, value FROM features WHERE extractor = 'loudness' ORDER BY ALL"
    before = rows(db, features)
    ids = rows(db, "SELECT path, audio_id FROM library ORDER BY path")
    runs = rows(db, "SELECT count(*) FROM runs WHERE extractor = 'loudness'")
    assert before and runs == [(2,)]

    # A tagger rewrites the tags: new bytes, the same sound.
    f = mutagen.File(mp3)
    f.tags["TPE1"] = mutagen.id3.TPE1(encoding=3, text=["Somebody Else"])
    f.tags["TCON"] = mutagen.id3.TCON(encoding=3, text=["Jazz"])
    f.tags.delall("TXXX:My Own Tag")
    f.save()
    f = mutagen.File(flac)
    f["artist"] = ["Somebody Else", "And Another"]
    f["title"] = ["A new title that is a good deal longer than the old one " * 4]
    f.save()

    scanned = json.loads(run_muscat("scan", str(root), "--json", db=db_path).stdout)
    assert scanned["changed"] == 2
    assert values(db, mp3, "artist") == ["Somebody Else"] and values(db, mp3, "genre") == ["Jazz"]
    assert values(db, mp3, "my own tag") == []
    assert values(db, flac, "artist") == ["Somebody Else", "And Another"]
    assert rows(db, "SELECT artist, genre FROM library WHERE path = ?", [str(mp3)]) == [("Somebody Else", "Jazz")]
    assert rows(db, "SELECT artist, title LIKE 'A new title%' FROM library WHERE path = ?", [str(flac)]) == [
        ("Somebody Else", True)]
    # The next extract re-probes the changed files, finds the same audio, and computes nothing.
    again = json.loads(run_muscat("extract", "--only", "probe,loudness", "--json", db=db_path).stdout)
    assert again["ok"] == 0 and again["failed"] == 0
    assert rows(db, "SELECT path, audio_id FROM library ORDER BY path") == ids
    assert rows(db, "SELECT count(*) FROM runs WHERE extractor = 'loudness'") == runs
    assert rows(db, features) == before
    assert_intact(db)


def test_watch_updates_tags_within_seconds_of_a_retag(tmp_path):
    from test_watch import wait_for, watching

    root = tmp_path / "Music"
    path = make(root, "opus")
    with watching(tmp_path / "c.duckdb", root, "--no-extract") as (proc, database):
        wait_for(lambda: rows(database, "SELECT artist FROM library") == [("Ärtist Ñame",)])
        f = mutagen.File(path)
        f["artist"] = ["Retagged While Watched"]
        f.save()
        started = time.monotonic()
        wait_for(lambda: rows(database, "SELECT artist FROM library") == [("Retagged While Watched",)], timeout=20)
        assert time.monotonic() - started < 10
        assert values(database, path, "artist") == ["Retagged While Watched"]
    assert proc.returncode == 0


def test_missing_files_leave_the_views_and_gc_removes_their_tags(tmp_path, db, settings):
    root = tmp_path / "Music"
    path = make(root, "wavpack")
    kept = make(root, "opus")
    catalog.scan(db, [str(root)], settings)
    assert values(db, path, "artist") == ["Ärtist Ñame"]
    path.unlink()
    catalog.scan(db, [str(root)], settings)
    assert rows(db, "SELECT DISTINCT path FROM tags") == [(str(kept),)]
    stored = "SELECT count(DISTINCT file_id) FROM file_tags"
    assert rows(db, stored) == [(2,)]  # kept while the file is missing
    catalog.gc(db, settings, older_than_days=0)
    assert rows(db, stored) == [(1,)]
    assert_intact(db)
