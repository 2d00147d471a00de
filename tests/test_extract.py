"""`muscat extract` end to end: jobs, identity, failures, interruption, plugins, views."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio import chord_progression, click_track, sine, write
from conftest import assert_intact, rows, run_muscat

import catalog

PLUGINS = Path(__file__).resolve().parent / "plugins"
CPU_SET = ["chromaprint", "hpcp", "key", "loudness", "rhythm", "spectral"]  # on by default
DUCKDB_15_CLI = Path(sys.executable).parent / "duckdb"


def extracted(library, tmp_path):
    root, files = library
    db = tmp_path / "cat.duckdb"
    assert run_muscat("scan", str(root), db=db).returncode == 0
    result = run_muscat("extract", "--workers", "2", "--json", db=db)
    return db, root, files, result


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """One library, scanned and extracted once, shared by the read-only checks below."""
    from audio import build_library

    tmp = tmp_path_factory.mktemp("done")
    root = tmp / "Music"
    files = build_library(root)
    write(root / "Tracks" / "click.wav", click_track(128, 12))
    write(root / "Tracks" / "chords.flac", chord_progression())
    return extracted((root, files), tmp)


def test_extract_runs_everything_once_and_records_each_broken_file(done):
    db, root, files, result = done
    assert result.returncode == 1  # done, but some files failed
    summary = json.loads(result.stdout)
    good = len(files["good"]) + 2
    assert summary["files"] == good + len(files["broken"])  # one job per file: one decode each
    assert summary["probed"] == good and summary["failed"] == len(files["broken"])
    assert summary["ok"] == good * len(CPU_SET)
    failed = rows(catalog.Database(db), "SELECT path, extractor, error, attempts FROM failed ORDER BY path")
    assert [(Path(p).name, x, n) for p, x, _, n in failed] == [
        ("empty.flac", "probe", 1), ("notes.mp3", "probe", 1), ("random.wav", "probe", 1)]
    assert all(error for _, _, error, _ in failed)
    for path in files["broken"]:
        assert path.name in result.stderr  # each failure is reported to the user too
    assert_intact(catalog.Database(db))


def test_nothing_left_to_do_afterwards(done):
    db, *_ = done
    again = run_muscat("extract", "--json", db=db)
    assert again.returncode == 0 and json.loads(again.stdout)["files"] == 0
    status = json.loads(run_muscat("status", "--json", db=db).stdout)
    assert all(c["pending"] == 0 for c in status["extractors"].values())
    assert status["extractors"]["probe"]["failed"] == 3
    assert status["extractors"]["rhythm"]["done"] == status["audio"]


def test_feature_views(done):
    db, root, files, _ = done
    database = catalog.Database(db)
    click, chords = str(root / "Tracks" / "click.wav"), str(root / "Tracks" / "chords.flac")
    features = dict(rows(database, "SELECT feature, coalesce(value::VARCHAR, text) FROM features WHERE path = ?",
                         [chords]))
    assert features["key"] == "C" and features["scale"] == "major"
    assert rows(database, "SELECT value, unit, stale FROM features WHERE path = ? AND feature = 'bpm'", [click]) == [
        (pytest.approx(128, abs=1), "BPM", False)]
    chroma = rows(database, "SELECT vector FROM feature_vectors WHERE path = ? AND feature = 'chroma'", [chords])
    assert len(chroma[0][0]) == 12 and sum(chroma[0][0]) == pytest.approx(1, abs=1e-5)
    track = rows(database, "SELECT bpm, key, loudness_integrated, chroma, duration, codec FROM track_features "
                           "WHERE path = ?", [click])[0]
    assert track[0] == pytest.approx(128, abs=1) and track[3] is not None and track[5] == "wav"
    types = dict(rows(database, "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'track_features'"))
    assert types["chroma"] == "FLOAT[12]" and types["bpm"] == "DOUBLE" and types["key"] == "VARCHAR"
    library = rows(database, "SELECT duration_s, sample_rate, channels, codec FROM library WHERE path = ?", [click])
    assert library == [(pytest.approx(12.0), 44100, 1, "wav")]
    units = rows(database, "SELECT count(*), count(*) FILTER (WHERE description <> '') FROM feature_units")
    assert units[0][0] >= 60 and units[0][0] == units[0][1]


def test_feature_stats_cli(done):
    db, *_ = done
    text = run_muscat("stats", db=db).stdout.splitlines()
    assert text[0].split() == ["Feature", "Unit", "Count", "Mean", "Std", "Min", "Max"]
    data = json.loads(run_muscat("stats", "bpm", "chroma", "--json", db=db).stdout)
    by_name = {d["feature"]: d for d in data}
    assert len(data) == 13 and by_name["bpm"]["unit"] == "BPM"
    assert set(data[0]) == {"feature", "unit", "count", "mean", "std", "min", "max"}
    assert [d["feature"] for d in data if d["feature"].startswith("chroma")][:2] == ["chroma[C]", "chroma[C#]"]


def test_catalogue_with_features_opens_in_duckdb_15(done):
    db, *_ = done
    out = subprocess.run([str(DUCKDB_15_CLI), "-readonly", "-csv", str(db), "-c",
                          "SELECT count(*) AS n FROM features; SELECT count(chroma) > 0 AS has FROM track_features; "
                          "SELECT count(*) AS n FROM feature_stats"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert int(lines[1]) > 100 and lines[3] == "true" and int(lines[5]) > 60


def test_copies_and_retags_are_not_extracted_again(tmp_path):
    root = tmp_path / "Music"
    pcm = (chord_progression()[: 44100 * 5] * 32767).astype(np.int16)
    original = root / "a" / "song.flac"
    original.parent.mkdir(parents=True)

    def tag(title: str) -> None:
        with sf.SoundFile(original, "w", 44100, 1, subtype="PCM_16", format="FLAC") as f:
            f.title = title
            f.write(pcm)

    tag("Song")
    db = tmp_path / "cat.duckdb"
    run_muscat("scan", str(root), db=db)
    first = json.loads(run_muscat("extract", "--json", db=db).stdout)
    assert first["ok"] == len(CPU_SET)

    copy = root / "b" / "copy.flac"
    copy.parent.mkdir()
    copy.write_bytes(original.read_bytes())
    before = original.read_bytes()
    tag("Song (retagged with a much longer title)")  # new bytes, same sound
    assert original.read_bytes() != before
    scan = json.loads(run_muscat("scan", str(root), "--json", db=db).stdout)
    assert scan["changed"] == 1 and scan["added"] == 1
    second = json.loads(run_muscat("extract", "--json", db=db).stdout)
    assert second["probed"] == 2 and second["ok"] == 0 and second["skipped"] == 2
    database = catalog.Database(db)
    assert rows(database, "SELECT count(DISTINCT audio_id), count(*) FROM library") == [(1, 2)]
    assert rows(database, "SELECT count(*) FROM runs WHERE extractor <> 'probe'") == [(len(CPU_SET),)]
    # Two files of one audio: the features show for both, the statistics count it once.
    assert rows(database, "SELECT count(*) FROM features WHERE feature = 'bpm'") == [(2,)]
    assert rows(database, "SELECT count FROM feature_stats WHERE feature = 'bpm'") == [(1,)]


def test_two_new_copies_in_one_pass_are_extracted_once(tmp_path):
    root = tmp_path / "Music"
    first = write(root / "one.wav", sine(330, 3.0))
    (root / "two.wav").write_bytes(first.read_bytes())
    db = tmp_path / "cat.duckdb"
    run_muscat("scan", str(root), db=db)
    report = json.loads(run_muscat("extract", "--workers", "2", "--json", db=db).stdout)
    assert report["probed"] == 2 and report["ok"] == len(CPU_SET) and report["skipped"] == 1


def test_only_and_switched_off_extractors(tmp_path):
    root = tmp_path / "Music"
    write(root / "one.wav", click_track(120, 6))
    db = tmp_path / "cat.duckdb"
    (tmp_path / "muscat.toml").write_text("[extractors.spectral]\nenabled = false\n")
    run_muscat("scan", str(root), db=db)
    only = json.loads(run_muscat("extract", "--only", "rhythm", "--json", db=db).stdout)
    assert only["probed"] == 1 and only["ok"] == 1
    listing = {e["name"]: e for e in json.loads(run_muscat("extractors", "--json", db=db).stdout)}
    assert listing["spectral"]["enabled"] is False
    rest = json.loads(run_muscat("extract", "--json", db=db).stdout)
    assert rest["ok"] == len(CPU_SET) - 2  # not rhythm again, not spectral at all
    assert rows(catalog.Database(db), "SELECT count(*) FROM pending") == [(0,)]
    bad = run_muscat("extract", "--only", "rhytm", db=db)
    assert bad.returncode == 2 and "no extractor named 'rhytm'" in bad.stderr


def test_extractors_json_shape(tmp_path):
    data = json.loads(run_muscat("extractors", "--json", db=tmp_path / "c.duckdb").stdout)
    assert [d["name"] for d in data] == ["probe"] + sorted(CPU_SET + ["bass_notes", "bass_pitch", "demucs", "drums",
                                                                      "notes"])
    for d in data:
        assert {"name", "version", "device", "params_hash", "available", "reason"} <= set(d)
        # Transcription is opt-in (it costs about twice the CPU set); the rest is on until switched off.
        assert d["enabled"] is (d["name"] not in ("notes", "bass_notes"))
        assert (d["off_reason"] or "").startswith("off by default") is (not d["enabled"])
        assert len(d["params_hash"]) == 16
        if d["name"] in ("demucs", "drums"):  # no model folder or weights configured
            assert d["device"] == "gpu" and d["available"] is False and d["reason"]
        elif d["name"] in ("bass_pitch", "bass_notes"):  # their weights ship in wheels; they need the stems
            assert d["available"] is False and d["reason"].startswith("needs demucs")
            assert d["device"] == ("gpu" if d["name"] == "bass_pitch" else "cpu")
        else:
            assert d["device"] == "cpu" and d["available"] is True


def test_unavailable_device_is_exit_2(tmp_path):
    result = run_muscat("extract", "--device", "cuda:7", db=tmp_path / "c.duckdb")
    assert result.returncode == 2 and "not available" in result.stderr
    assert run_muscat("extract", "--device", "tpu", db=tmp_path / "c.duckdb").returncode == 2
    several = run_muscat("extract", "--device", "cpu,cuda:7", db=tmp_path / "c.duckdb")  # each one is checked
    assert several.returncode == 2 and "'cuda:7' is not available" in several.stderr
    alone = run_muscat("extract", "--device", "auto,cpu", db=tmp_path / "c.duckdb")
    assert alone.returncode == 2 and "auto stands alone" in alone.stderr


def test_too_long_files_fail_clearly_and_retry_failed(tmp_path):
    root = tmp_path / "Music"
    write(root / "long.wav", sine(440, 3.0))
    db = tmp_path / "cat.duckdb"
    (tmp_path / "muscat.toml").write_text("max_duration = 1\n")
    run_muscat("scan", str(root), db=db)
    result = run_muscat("extract", "--only", "loudness", db=db)
    assert result.returncode == 1 and "longer than max_duration" in result.stderr
    assert rows(catalog.Database(db), "SELECT duration_s FROM library") == [(3.0,)]  # probed all the same
    (tmp_path / "muscat.toml").write_text("max_duration = 10\n")
    assert json.loads(run_muscat("extract", "--only", "loudness", "--json", db=db).stdout)["files"] == 0
    retried = json.loads(run_muscat("extract", "--only", "loudness", "--retry-failed", "--json", db=db).stdout)
    assert retried["ok"] == 1 and retried["failed"] == 0
    assert rows(catalog.Database(db), "SELECT status, attempts FROM runs WHERE extractor = 'loudness'") == [("ok", 2)]


def test_third_party_extractor_and_a_crashing_worker(tmp_path):
    root = tmp_path / "Music"
    for name in ("a", "b", "crash-me", "d"):
        write(root / f"{name}.wav", sine(440, 2.0))
        write(root / f"{name}.wav", sine(200 + len(name) * 50 + ord(name[0]), 2.0))
    db = tmp_path / "cat.duckdb"
    (tmp_path / "muscat.toml").write_text('[extractors.peakiness]\ncrash_on = "crash-me"\n')
    env = {"PYTHONPATH": str(PLUGINS)}
    listing = json.loads(run_muscat("extractors", "--json", db=db, env=env).stdout)
    assert "peakiness" in [e["name"] for e in listing]
    run_muscat("scan", str(root), db=db, env=env)
    result = run_muscat("extract", "--only", "peakiness", "--workers", "2", "--json", db=db, env=env)
    assert result.returncode == 1
    assert json.loads(result.stdout)["ok"] == 3
    database = catalog.Database(db)
    failed = rows(database, "SELECT path, extractor, error FROM failed")
    assert len(failed) == 1 and failed[0][0].endswith("crash-me.wav") and "SIGSEGV" in failed[0][2]
    assert rows(database, "SELECT count(*) FROM features WHERE feature = 'peakiness'") == [(3,)]
    assert rows(database, "SELECT unit FROM feature_units WHERE feature = 'peakiness'") == [("",)]
    run_muscat("status", db=db, env=env)
    assert rows(database, "SELECT count(peakiness) FROM track_features") == [(3,)]


def test_interrupt_keeps_finished_results_and_redoes_the_rest(tmp_path):
    root = tmp_path / "Music"
    files = 16  # enough that a loaded machine cannot finish them all before the interrupt
    for i in range(files):
        write(root / f"{i:02d}.flac", click_track(100 + i * 5, 20))
    db = tmp_path / "cat.duckdb"
    run_muscat("scan", str(root), db=db)
    from conftest import MUSCAT

    def as_from_a_terminal() -> None:  # what the test process inherited or set must not reach muscat
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    proc = subprocess.Popen([str(MUSCAT), "--db", str(db), "extract", "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # The first flush (a second in: a probe perhaps alone; a batch run's next flushes are
        # spaced by their cost), as a reader in another process sees it.
        out = run_muscat("sql", "SELECT count(*) FROM runs", "--format", "csv", db=db)
        if out.returncode == 0 and int(out.stdout.split()[1]) >= 1:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError("no result was written within 120 s")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    database = catalog.Database(db)
    assert_intact(database)
    assert rows(database, "SELECT count(*) FROM runs WHERE status = 'failed'") == [(0,)]
    assert rows(database, "SELECT count(*) FROM runs")[0][0] >= 1  # what was written stays
    finished = rows(database, "SELECT count(*) FROM runs WHERE extractor = 'rhythm'")[0][0]
    assert finished < files
    rest = json.loads(run_muscat("extract", "--json", db=db, timeout=300).stdout)
    assert rest["failed"] == 0
    assert rows(database, "SELECT extractor, count(*) FROM runs GROUP BY ALL ORDER BY 1") == [
        (name, files) for name in sorted(["probe"] + CPU_SET)]


def run_until_idle(engine: catalog.Engine) -> None:
    while not engine.idle:
        engine.step(timeout=0.5)


def test_a_file_moved_before_its_job_is_not_failed(tmp_path):
    """A file renamed between planning and decoding: nothing recorded, probed at its new path."""
    root = tmp_path / "Music"
    write(root / "a.wav", sine(440, 1.0))
    write(root / "b.wav", sine(550, 1.0))
    settings = catalog.load_settings(db=tmp_path / "cat.duckdb")
    database = catalog.Database(settings.db_path)
    catalog.scan(database, [str(root)], settings)
    engine = catalog.Engine(database, settings, only=["loudness"])
    engine.start_workers(1)
    try:
        engine.plan()
        (root / "a.wav").rename(root / "a2.wav")
        run_until_idle(engine)
        assert engine.report.vanished == 1 and engine.report.failed == 0
        assert rows(database, "SELECT count(*) FROM runs WHERE status = 'failed'") == [(0,)]
        report = catalog.scan(database, [str(root)], settings)
        assert report.moved == 1
        engine.plan(file_ids=[])  # what the watcher does after a scan with no changed file
        run_until_idle(engine)
    finally:
        engine.stop()
    assert rows(database, "SELECT name FROM files JOIN runs r USING (file_id) WHERE r.extractor = 'loudness'"
                " ORDER BY 1") == [("a2.wav",), ("b.wav",)]
    assert_intact(database)
    database.close()


def test_a_file_moved_before_its_audio_job_is_not_probed_again(tmp_path):
    """A probed file renamed between planning an extractor for its audio and decoding: its
    probe still holds (a rename keeps size and mtime), so the extractor runs at the new path
    and the probe is not redone (the watch crash campaign's "attempted twice")."""
    root = tmp_path / "Music"
    write(root / "a.wav", sine(440, 1.0))
    settings = catalog.load_settings(db=tmp_path / "cat.duckdb")
    database = catalog.Database(settings.db_path)
    catalog.scan(database, [str(root)], settings)
    catalog.extract(database, settings, only=["loudness"], workers=1)
    engine = catalog.Engine(database, settings, only=["spectral"])
    engine.start_workers(1)
    try:
        assert engine.plan() == 1
        (root / "a.wav").rename(root / "a2.wav")
        run_until_idle(engine)
        assert engine.report.vanished == 1 and engine.report.failed == 0
        assert catalog.scan(database, [str(root)], settings).moved == 1
        engine.plan(file_ids=[])  # what the watcher does after a scan with no changed file
        run_until_idle(engine)
    finally:
        engine.stop()
    assert rows(database, "SELECT r.extractor, r.attempts, f.name FROM runs r JOIN files f USING (file_id)"
                " ORDER BY 1") == [("loudness", 1, "a2.wav"), ("probe", 1, "a2.wav"), ("spectral", 1, "a2.wav")]
    assert_intact(database)
    database.close()


def test_cpu_workers_run_below_the_coordinator(tmp_path):
    """CPU workers lower their priority (WORKER_NICENESS) as they start: with every core
    extracting, the coordinator (the watcher taking a change, the writer) still gets a core."""
    import os

    from catalog import workers

    settings = catalog.load_settings(db=tmp_path / "cat.duckdb")
    worker = workers.Worker(settings)
    try:
        expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + workers.WORKER_NICENESS)
        deadline = time.monotonic() + 60
        while os.getpriority(os.PRIO_PROCESS, worker.process.pid) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.getpriority(os.PRIO_PROCESS, worker.process.pid) == expected
        assert worker.process.is_alive()
    finally:
        worker.kill()
