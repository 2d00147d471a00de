"""The scan state: a rescan that finds nothing changed answers without opening the catalogue,
and any change, to the files, the settings, the catalogue or the state itself, takes the normal
path (catalog/scan_state.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mutagen
import pytest
from audio import sine, write
from conftest import rows, run_muscat

import catalog
from catalog import scan_state


def scan(db, settings, root):
    return catalog.scan(db, [str(root)], settings)


def counts(report) -> dict[str, int]:
    return report.to_json()


def test_unchanged_rescan_comes_from_the_state_with_the_normal_paths_counts(library, db, settings):
    root, files = library
    first = scan(db, settings, root)
    assert not first.from_state
    state = scan_state.state_path(settings.db_path)
    assert state.exists()
    before = scan_state.catalogue_identity(settings.db_path)
    again = scan(db, settings, root)
    assert again.from_state
    expected = len(files["good"] + files["broken"])
    assert counts(again) == {"added": 0, "changed": 0, "moved": 0, "missing": 0, "unchanged": expected,
                             "errors": 0}
    # Nothing was written to the catalogue: the state still holds, a third rescan takes it too.
    assert scan_state.catalogue_identity(settings.db_path) == before
    assert scan(db, settings, root).from_state
    # Taking the state away gives the same counts by the normal path.
    state.unlink()
    normal = scan(db, settings, root)
    assert not normal.from_state and counts(normal) == counts(again)


def test_the_cli_rescan_does_not_load_duckdb_and_prints_the_same(library, tmp_path):
    root, _ = library
    db = tmp_path / "cli.duckdb"
    first = run_muscat("scan", "--json", str(root), db=db)
    # The first `status` registers the extractors: a write, after which the next scan is normal.
    assert run_muscat("status", db=db).returncode == 0
    normal = run_muscat("scan", "--json", str(root), db=db)  # by the normal path: saves the state
    assert first.returncode == normal.returncode == 0
    # The third, as a process that reports which modules it loaded.
    code = ("import sys, cli; sys.argv = ['muscat', '--db', sys.argv[1], 'scan', '--json', sys.argv[2]]\n"
            "try:\n    cli.main()\n"
            "except SystemExit as e:\n"
            "    print('duckdb' in sys.modules, 'pyarrow' in sys.modules, e.code, file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MUSCAT_DB", "MUSCAT_CONFIG")}
    fast = subprocess.run([sys.executable, "-c", code, str(db), str(root)], capture_output=True, text=True,
                          env=env, cwd=os.path.dirname(catalog.__path__[0]), timeout=120)
    assert fast.stderr.strip().splitlines()[-1] == "False False 0", fast.stderr
    assert json.loads(fast.stdout) == json.loads(normal.stdout)
    # `muscat status` shows that look as the root's last scan.
    checked = json.loads(scan_state.state_path(db).read_text())["checked_at"]
    shown = run_muscat("status", "--json", db=db)
    assert json.loads(shown.stdout)["roots"][0]["last_scan_at"] == checked


def _edit_in_place(root, files, settings):
    """New bytes, same size, and the folder's mtime put back: only the file's own stat says so."""
    path = files["good"][0]
    folder = os.stat(path.parent)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path.parent, ns=(folder.st_atime_ns, folder.st_mtime_ns))
    return settings, {"changed": 1}


def _add(root, files, settings):
    write(root / "Artist A" / "Album 2" / "02 New.flac", sine(300, 0.3))
    return settings, {"added": 1}


def _remove(root, files, settings):
    files["good"][1].unlink()
    return settings, {"missing": 1}


def _rename(root, files, settings):
    path = files["good"][0]
    path.rename(path.with_name("01 Intro (remaster).flac"))
    return settings, {"moved": 1}


def _retag(root, files, settings):
    audio = mutagen.File(files["good"][0], easy=True)
    audio["artist"] = "Someone Else"
    audio.save()
    return settings, {"changed": 1}


def _extensions(root, files, settings):
    less = tuple(e for e in settings.audio_extensions if e.lstrip(".").lower() != "wav")
    return settings.replace(audio_extensions=less), {"missing": 3}  # 02 Song, random, inside


def _catalogue_written(root, files, settings):
    """Another command's write (as a killed scan leaves it): the next scan must read tags again."""
    db = catalog.Database(settings.db_path)
    with db.write() as con:
        con.execute("UPDATE files SET tags_read_at = NULL WHERE name = '01 Intro.flac'")
    db.close()
    return settings, {}


def _catalogue_written_same_size_and_mtime(root, files, settings):
    st = os.stat(settings.db_path)
    _catalogue_written(root, files, settings)
    os.utime(settings.db_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return settings, {}


def _corrupt_state(root, files, settings):
    scan_state.state_path(settings.db_path).write_bytes(b'{"key": {"format": 1, "roo')
    return settings, {}


def _other_format(root, files, settings):
    path = scan_state.state_path(settings.db_path)
    state = json.loads(path.read_text())
    state["key"]["format"] = scan_state.FORMAT + 1
    path.write_text(json.dumps(state))
    return settings, {}


@pytest.mark.parametrize("change", [
    _edit_in_place, _add, _remove, _rename, _retag, _extensions, _catalogue_written,
    _catalogue_written_same_size_and_mtime, _corrupt_state, _other_format,
], ids=lambda f: f.__name__.strip("_"))
def test_any_change_takes_the_normal_path(library, db, settings, change):
    root, files = library
    scan(db, settings, root)
    assert scan(db, settings, root).from_state
    db.close()
    settings, expected = change(root, files, settings)
    report = scan(db, settings, root)
    assert not report.from_state
    done = {k: v for k, v in counts(report).items() if k not in ("unchanged", "errors") and v}
    assert done == expected
    assert report.errors == 0
    if change in (_catalogue_written, _catalogue_written_same_size_and_mtime):  # the normal path did its part
        assert rows(db, "SELECT count(*) FROM files WHERE tags_read_at IS NULL") == [(0,)]
    # And the scan after it may take the state again.
    assert scan(db, settings, root).from_state


def test_other_roots_take_the_normal_path(library, db, settings, tmp_path):
    root, _ = library
    other = tmp_path / "Other"
    write(other / "a.flac", sine(200, 0.3))
    scan(db, settings, root)
    assert scan(db, settings, root).from_state
    assert not catalog.scan(db, [str(root), str(other)], settings).from_state
    assert not scan(db, settings, root / "Artist A").from_state  # a folder inside the root


def test_a_scan_with_problems_saves_no_state_and_reports_them_each_time(library, db, settings):
    root, _ = library
    os.symlink(root / "nowhere.flac", root / "Artist A" / "dangling.flac")
    for _ in range(3):
        report = scan(db, settings, root)
        assert not report.from_state
        assert [reason for _, reason in report.problems] == ["broken symbolic link"]
    assert not scan_state.state_path(settings.db_path).exists()
