"""Scanning a library: what is taken, what changes, moves, deletions, offline roots, odd input."""

from __future__ import annotations

import builtins
import os
import shutil
from pathlib import Path

import pytest
from audio import sine, write
from conftest import assert_intact, rows, run_muscat

import catalog
from catalog import walker


def scan(db, settings, *paths):
    report = catalog.scan(db, [str(p) for p in paths], settings)
    assert_intact(db)
    return report


def present(db) -> set[str]:
    return {p for (p,) in rows(db, "SELECT path FROM library")}


def file_ids(db) -> dict[str, int]:
    return dict(rows(db, "SELECT path, file_id FROM library"))


def test_cold_scan_takes_audio_files_only(library, db, settings):
    root, files = library
    report = scan(db, settings, root)
    expected = {str(p) for p in files["good"] + files["broken"]}
    assert present(db) == expected
    assert report.to_json() == {"added": len(expected), "changed": 0, "moved": 0, "missing": 0,
                                "unchanged": 0, "errors": 0}
    # Paths in `library` are absolute, and sizes are the files' own.
    for path, size in rows(db, "SELECT path, size FROM library"):
        assert os.path.isabs(path) and os.path.getsize(path) == size


def test_rescan_of_unchanged_library_reads_no_file_contents(library, db, settings, monkeypatch):
    root, files = library
    scan(db, settings, root)

    def no_reading(path, *args, **kwargs):
        if str(root) in os.fsdecode(path if not isinstance(path, int) else b""):
            raise AssertionError(f"a rescan opened {path}")
        return real_open(path, *args, **kwargs)

    real_open, real_os_open = builtins.open, os.open
    monkeypatch.setattr(builtins, "open", no_reading)

    def no_os_open(path, flags, *args, **kwargs):
        if not flags & os.O_DIRECTORY and str(root) in os.fsdecode(path):  # a folder is listed, not read
            raise AssertionError(f"a rescan opened {path}")
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_os_open)
    report = scan(db, settings, root)
    assert report.unchanged == len(files["good"] + files["broken"])
    assert report.added == report.changed == report.moved == report.missing == 0


def test_changed_deleted_and_returning_files(library, db, settings):
    root, files = library
    scan(db, settings, root)
    ids = file_ids(db)
    changed, deleted = files["good"][0], files["good"][1]
    write(changed, sine(100, 1.0))  # new content, new size
    saved = deleted.read_bytes()
    deleted.unlink()
    report = scan(db, settings, root)
    assert (report.changed, report.missing, report.added) == (1, 1, 0)
    assert file_ids(db)[str(changed)] == ids[str(changed)]  # same row, new stat
    assert str(deleted) not in present(db)
    assert rows(db, "SELECT status FROM files WHERE file_id = ?", [ids[str(deleted)]]) == [("missing",)]

    deleted.write_bytes(saved)
    report = scan(db, settings, root)
    assert report.added == 1 and report.missing == 0
    assert file_ids(db)[str(deleted)] == ids[str(deleted)]


def test_rename_and_folder_move_keep_identity(library, db, settings):
    root, files = library
    scan(db, settings, root)
    with db.write() as con:  # as if probed: the audio identity must follow the file
        con.execute("INSERT INTO audio (audio_id, first_seen) SELECT 'a-' || file_id, now() FROM files")
        con.execute("UPDATE files SET audio_id = 'a-' || file_id")
    before = dict(rows(db, "SELECT path, audio_id FROM library"))

    renamed = files["good"][0].with_name("01 Intro (remaster).flac")
    files["good"][0].rename(renamed)
    (root / "Artist B").rename(root / "Artist B (moved)")
    report = scan(db, settings, root)
    assert report.moved == 4 and report.added == 0 and report.missing == 0

    after = dict(rows(db, "SELECT path, audio_id FROM library"))
    assert after[str(renamed)] == before[str(files["good"][0])]
    live = root / "Artist B (moved)" / "Live" / "01 Opener.ogg"
    assert after[str(live)] == before[str(root / "Artist B" / "Live" / "01 Opener.ogg")]
    assert rows(db, "SELECT count(*) FROM files WHERE status = 'missing'") == [(0,)]


def test_move_with_new_inode_is_matched_by_content_hash(library, db, settings):
    root, files = library
    scan(db, settings, root)
    source = files["good"][2]
    with db.write() as con:  # what probing records when it reads the file
        from catalog.identity import head_tail_hash

        for path in files["good"]:
            con.execute("UPDATE files SET head_tail_hash = ? WHERE name = ? AND dir = ?",
                        [head_tail_hash(path), path.name, str(path.parent.relative_to(root))])
    ids_before = file_ids(db)
    old_id = ids_before[str(source)]

    copy = root / "Elsewhere" / "copied.mp3"  # a copy is a new inode, as across devices
    copy.parent.mkdir()
    shutil.copy2(source, copy)
    source.unlink()
    # Same size, different bytes: must not be taken for a move of anything.
    impostor = root / "Elsewhere" / "impostor.flac"
    data = bytearray(files["good"][0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    impostor.write_bytes(bytes(data))
    report = scan(db, settings, root)
    assert (report.moved, report.added, report.missing) == (1, 1, 0)
    assert file_ids(db)[str(copy)] == old_id
    assert file_ids(db)[str(impostor)] not in ids_before.values()  # a new row, not a moved one


def test_offline_root_marks_nothing_missing(library, db, settings, tmp_path):
    root, files = library
    scan(db, settings, root)
    count = len(present(db))

    away = tmp_path / "unmounted"
    root.rename(away)
    report = scan(db, settings, root)
    assert report.offline and "does not exist" in report.offline[0][1]
    assert report.missing == 0 and len(present(db)) == count

    root.mkdir()  # an empty mount point
    report = scan(db, settings, root)
    assert report.offline and "empty" in report.offline[0][1]
    assert len(present(db)) == count
    assert rows(db, "SELECT last_scan_status FROM roots")[0][0].startswith("offline")

    root.rmdir()
    away.rename(root)
    report = scan(db, settings, root)
    assert not report.offline and report.unchanged == count


def test_offline_root_exits_nonzero_from_cli(library, tmp_path):
    root, _ = library
    dbfile = tmp_path / "cli.duckdb"
    assert run_muscat("scan", str(root), db=dbfile).returncode == 0
    shutil.rmtree(root)
    result = run_muscat("scan", str(root), "--json", db=dbfile)
    assert result.returncode == 1
    assert "does not exist" in result.stderr and "nothing marked missing" in result.stderr
    assert '"missing": 0' in result.stdout


def test_unreadable_folder_is_reported_and_its_files_kept(library, db, settings, monkeypatch):
    root, files = library
    scan(db, settings, root)
    count = len(present(db))
    locked = os.fsencode(root / "Artist A")
    real_open = os.open

    def open_folder(path, flags, *args, **kwargs):  # the walker opens each folder to list it
        if path == locked and flags & os.O_DIRECTORY:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(walker.os, "open", open_folder)
    report = scan(db, settings, root)
    assert [(p, r) for p, r in report.problems] == [(str(root / "Artist A"), "folder cannot be read: Permission denied")]
    assert report.missing == 0 and len(present(db)) == count
    assert rows(db, "SELECT path, reason FROM scan_problems") == [
        (str(root / "Artist A"), "folder cannot be read: Permission denied")
    ]
    monkeypatch.undo()
    report = scan(db, settings, root)
    assert report.problems == [] and rows(db, "SELECT count(*) FROM scan_problems") == [(0,)]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_unreadable_folder_by_permissions(library, db, settings):
    root, _ = library
    (root / "Artist A").chmod(0)
    try:
        report = scan(db, settings, root)
        assert any("cannot be read" in reason for _, reason in report.problems)
    finally:
        (root / "Artist A").chmod(0o755)


def test_symlink_loops_and_broken_links(library, db, settings):
    root, files = library
    (root / "Artist A" / "loop").symlink_to(root)
    (root / "Artist A" / "self").symlink_to(root / "Artist A")
    (root / "dangling.flac").symlink_to(root / "nowhere.flac")
    report = scan(db, settings, root)
    assert present(db) == {str(p) for p in files["good"] + files["broken"]}
    reasons = {Path(p).name: r for p, r in report.problems}
    assert reasons["dangling.flac"] == "broken symbolic link"
    assert "loop" in reasons and "self" in reasons


def test_odd_file_names(tmp_path, db, settings):
    root = tmp_path / "Odd"
    names = ["new\nline.wav", "quote's \"double\".wav", "-leading-dash.wav", "tab\there.wav",
             "emoji 🎵.wav", "a" * 200 + ".wav", "x.WAV"]
    for name in names:
        write(root / name, sine(440, 0.1))
    write(root / "..wav", sine(440, 0.1))  # a dot file: hidden, like ls hides it
    raw_name = b"caf\xe9 latin-1.wav"  # not valid UTF-8
    os.makedirs(os.fsencode(root / "bad") , exist_ok=True)
    with open(os.fsencode(root / "bad") + b"/" + raw_name, "wb") as f:
        f.write((root / names[0]).read_bytes())
    report = scan(db, settings, root)
    assert report.added == len(names) + 1 and report.errors == 0
    listed = present(db)
    for name in names:
        assert str(root / name) in listed
    assert str(root / "bad" / "caf\\xe9 latin-1.wav") in listed
    assert str(root / "..wav") not in listed
    assert rows(db, "SELECT raw_path FROM files WHERE raw_path IS NOT NULL") == [(b"bad/" + raw_name,)]
    again = scan(db, settings, root)
    assert again.unchanged == len(names) + 1 and again.added == again.changed == 0


def test_file_vanishing_mid_scan_does_not_stop_it(library, db, settings, monkeypatch):
    root, files = library
    victim = os.fsencode(files["good"][0])
    real_scandir = os.scandir

    class Vanishing:  # the walker lists each folder through an open descriptor
        def __init__(self, folder_fd):
            self._fd = folder_fd
            self._it = real_scandir(folder_fd)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._it.close()

        def __iter__(self):
            for entry in self._it:
                if os.fsencode(entry.name) == os.path.basename(victim) and os.path.exists(victim):
                    os.unlink(entry.name, dir_fd=self._fd)  # gone between listing and stat
                yield entry

    monkeypatch.setattr(walker.os, "scandir", Vanishing)
    report = scan(db, settings, root)
    assert report.added == len(files["good"] + files["broken"]) - 1
    assert str(files["good"][0]) not in present(db)


def test_catalogue_and_artifacts_inside_the_library_are_not_scanned(library, tmp_path):
    root, files = library
    stems = root / "muscat-artifacts" / "htdemucs_ft" / "01 Intro"
    write(stems / "drums.flac", sine(100, 0.1))
    result = run_muscat("scan", str(root), "--json", cwd=root)  # default ./muscat.duckdb, inside the root
    assert result.returncode == 0, result.stderr
    assert (root / "muscat.duckdb").exists()
    listed = run_muscat("sql", "SELECT path FROM library", "--format", "csv", cwd=root).stdout
    assert "muscat-artifacts" not in listed and "muscat.duckdb" not in listed
    assert len(listed.strip().splitlines()) == 1 + len(files["good"] + files["broken"])


def test_folder_inside_a_root_rescans_only_that_folder(library, db, settings):
    root, files = library
    scan(db, settings, root)
    files["good"][0].unlink()  # Artist A, not rescanned below
    write(root / "Artist B" / "Live" / "03 New.flac", sine(440, 0.1))
    report = scan(db, settings, root / "Artist B")
    assert (report.added, report.missing) == (1, 0)
    assert rows(db, "SELECT count(*) FROM roots") == [(1,)]
    assert str(files["good"][0]) in present(db)  # not rescanned yet
    report = scan(db, settings, root)
    assert report.missing == 1


def test_adding_a_parent_root_absorbs_the_inner_one(library, db, settings):
    root, files = library
    scan(db, settings, root / "Artist A")
    ids = file_ids(db)
    report = scan(db, settings, root)
    assert rows(db, "SELECT path FROM roots") == [(str(root),)]
    assert report.unchanged == len(ids)
    assert all(file_ids(db)[p] == i for p, i in ids.items())


def test_two_roots_in_one_scan_and_a_move_between_them(tmp_path, db, settings):
    a, b = tmp_path / "A", tmp_path / "B"
    track = write(a / "song.flac", sine(440, 0.3))
    write(a / "stays.flac", sine(220, 0.3))
    b.mkdir()
    scan(db, settings, a, b)
    old = file_ids(db)[str(track)]
    moved = b / "song.flac"
    track.rename(moved)
    report = scan(db, settings, a, b)
    assert (report.moved, report.added, report.missing) == (1, 0, 0)
    assert file_ids(db)[str(moved)] == old


def test_emptied_root_looks_unmounted(tmp_path, db, settings):
    a = tmp_path / "A"
    track = write(a / "song.flac", sine(440, 0.3))
    scan(db, settings, a)
    track.unlink()
    report = scan(db, settings, a)
    # Every file gone at once is what an unmounted drive looks like: nothing marked missing.
    assert report.offline and report.missing == 0 and len(present(db)) == 1
    assert "--allow-empty" in report.offline[0][1]
    report = catalog.scan(db, [a], settings, allow_empty=True)
    assert report.missing == 1 and not report.offline and present(db) == set()


def test_scan_cli_json_shape_and_counts(library, tmp_path):
    root, files = library
    result = run_muscat("scan", str(root), "--json", db=tmp_path / "x.duckdb")
    assert result.returncode == 0, result.stderr
    import json

    data = json.loads(result.stdout)
    assert data == {"added": len(files["good"] + files["broken"]), "changed": 0, "moved": 0,
                    "missing": 0, "unchanged": 0, "errors": 0}


def test_missing_path_given_to_scan_is_an_error(tmp_path):
    result = run_muscat("scan", str(tmp_path / "nope"), db=tmp_path / "x.duckdb")
    assert result.returncode == 1 and "does not exist" in result.stderr
