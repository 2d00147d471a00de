"""Hostile and odd input: fuzzed malformed audio, crashing workers, odd names and paths.

The fuzz run is seeded; a short version runs by default, the long one with `pytest -m campaign`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from audio import sine, write, write_m4a
from conftest import MUSCAT, assert_intact, rows, run_muscat
from hostile import cases
from models import tiny_demucs_repo

import catalog

PLUGINS = Path(__file__).resolve().parent / "plugins"

# Runs muscat and prints the peak resident memory of any one process under it (the CLI or one
# of its workers), as the kernel accounts it once they have exited.
MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def extract_measured(db: Path, env: dict) -> tuple[int, int]:
    """(exit status, peak RSS in MiB of the largest process) of `muscat extract`."""
    cmd = [sys.executable, "-c", MEASURE, str(MUSCAT), "--db", str(db), "extract", "--workers", "2",
           "--only", "loudness,peakiness"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    code, kib = out.stdout.split()
    return int(code), int(kib) // 1024


def fuzz(tmp_path: Path, seed: int, count: int) -> None:
    rng = random.Random(seed)
    root = tmp_path / "Fuzz"
    root.mkdir()
    made = cases(rng, count)
    for name, data, _ in made:
        (root / name).write_bytes(data)
    for i in range(3):
        write(root / f"good-{i}.flac", sine(300 + 100 * i, 1.0))
    write(root / "crash-me.wav", sine(1000, 1.0))  # its worker dies mid-extraction
    db = tmp_path / "cat.duckdb"
    (tmp_path / "muscat.toml").write_text('[extractors.peakiness]\ncrash_on = "crash-me"\n')
    env = {"PYTHONPATH": str(PLUGINS)}
    assert run_muscat("scan", str(root), db=db, env=env).returncode == 0
    code, peak_mib = extract_measured(db, env)
    assert code == 1, f"seed {seed}"  # some files failed, and the run finished

    database = catalog.Database(db)
    assert_intact(database)
    failed: dict[str, list[str]] = {}
    for path, extractor, error in rows(database, "SELECT path, extractor, error FROM failed"):
        failed.setdefault(Path(path).name, []).append(f"{extractor}: {error}")
    for name, _, must_fail in made:
        reasons = failed.get(name, [])
        if must_fail:
            assert len(reasons) == 1, f"seed {seed}: {name}: {reasons}"
        for reason in reasons:  # one line a person can read, naming what is wrong
            assert "\n" not in reason and "Traceback" not in reason and 10 < len(reason) < 400, \
                f"seed {seed}: {name}: {reason!r}"
    assert failed["crash-me.wav"] == ["peakiness: the worker process died of signal SIGSEGV while running peakiness"]
    assert rows(database, "SELECT count(*) FROM features "
                          "WHERE feature = 'loudness_integrated' AND path LIKE '%/good-%'") == [(3,)]
    # Nothing about a broken file makes any process hold much: a worker with its libraries is
    # about 400 MB here; a header that claims hours or gigabytes must not be believed.
    assert peak_mib < 1200, f"seed {seed}: {peak_mib} MiB"
    database.close()


@pytest.mark.parametrize("seed", [7])
def test_fuzzed_malformed_audio_fails_once_each_with_a_readable_reason(tmp_path, seed):
    fuzz(tmp_path, seed, 84)


@pytest.mark.campaign
@pytest.mark.parametrize("seed", [71, 72])
def test_fuzz_campaign(tmp_path, seed):
    fuzz(tmp_path, seed, 1400)


def test_memory_does_not_grow_with_the_number_of_broken_files(tmp_path):
    peaks = []
    for count in (40, 400):
        folder = tmp_path / str(count)
        root = folder / "Fuzz"
        root.mkdir(parents=True)
        for name, data, _ in cases(random.Random(count), count):
            (root / name).write_bytes(data)
        db = folder / "cat.duckdb"
        run_muscat("scan", str(root), db=db)
        peaks.append(extract_measured(db, {"PYTHONPATH": str(PLUGINS)})[1])
    assert peaks[1] < peaks[0] * 1.2 + 30, peaks  # ten times the files, about the same memory


# -- odd names and paths ------------------------------------------------------------------------


ODD_NAMES = ["new\nline.wav", "quote's \"double\".wav", "-leading-dash.wav", "--help.wav",
             "semi;colon $(rm -rf).wav", "back\\slash.wav", "emoji 🎵 ünïcödé.wav", " spaces .wav"]


def test_odd_names_long_paths_and_a_symlinked_root_end_to_end(tmp_path):
    real = tmp_path / "real library"
    deep = real
    for level in range(6):  # each name legal (< 255 bytes), the path well past 255 in total
        deep = deep / (f"level{level}-" + "ä" * 60)
    for i, name in enumerate(ODD_NAMES):
        write(real / name, sine(200 + 37 * i, 1.0))
    write(deep / "deep.wav", sine(990, 1.0))
    raw = os.fsencode(real) + b"/caf\xe9-latin1.wav"  # not valid UTF-8
    with open(raw, "wb") as out:
        out.write(write(tmp_path / "src.wav", sine(1234, 1.0)).read_bytes())
    with open(raw.replace(b".wav", b".m4a"), "wb") as out:  # decoded by Essentia, not soundfile
        out.write(write_m4a(tmp_path / "src.m4a", sine(777, 1.0)).read_bytes())
    assert len(os.fsencode(deep / "deep.wav")) > 600
    link = tmp_path / "-Music"  # the root itself is a symbolic link, with a leading dash
    link.symlink_to(real, target_is_directory=True)
    repo = tiny_demucs_repo(tmp_path / "models")
    artifacts = tmp_path / "artifacts"
    (tmp_path / "muscat.toml").write_text(
        f'artifacts_dir = "{artifacts}"\n[extractors.demucs]\nrepo = "{repo}"\nmodel = "tiny"\nshifts = 0\n')
    db = tmp_path / "cat.duckdb"

    scanned = run_muscat("scan", "--json", "--", str(link), db=db)
    assert scanned.returncode == 0, scanned.stderr
    files = len(ODD_NAMES) + 3
    assert json.loads(scanned.stdout)["added"] == files
    result = run_muscat("extract", "--workers", "2", "--only", "loudness,demucs", "--json", db=db)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["failed"] == 0

    listed = json.loads(run_muscat("sql", "SELECT path FROM library ORDER BY path", "--format", "json", db=db).stdout)
    names = {os.path.basename(row["path"]) for row in listed}
    assert set(ODD_NAMES) | {"deep.wav", "caf\\xe9-latin1.wav", "caf\\xe9-latin1.m4a"} == names
    database = catalog.Database(db)
    assert rows(database, "SELECT count(*) FROM features WHERE feature = 'loudness_integrated'") == [(files,)]
    stems = [Path(p) for (p,) in rows(database, "SELECT artifact FROM artifacts")]
    assert len(stems) == 4 * files
    for stem in stems:  # inside artifacts_dir whatever the source was called
        assert stem.resolve().is_relative_to(artifacts.resolve()) and stem.is_file()
    # CSV quotes a name with a newline in it: a CSV reader gets every row back whole.
    import csv
    import io

    csv_out = run_muscat("sql", "SELECT path FROM library ORDER BY path", "--format", "csv", db=db).stdout
    assert {os.path.basename(row[0]) for row in list(csv.reader(io.StringIO(csv_out)))[1:]} == names
    # The same library through the link and through its real path is one library.
    again = json.loads(run_muscat("scan", "--json", str(real), db=db).stdout)
    assert again["added"] == 0 and again["missing"] == 0
    assert rows(database, "SELECT count(*) FROM library") == [(files,)]
    assert_intact(database)
    database.close()
