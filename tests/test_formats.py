"""Every format muscat must read, end to end through the CLI, on files made by real encoders.

tests/formats.py makes one file per format (and the special cases: MP3s without a Xing frame,
with ID3v1+ID3v2, with large ID3 padding; Opus from libopus; variable-block FLAC; a video
container) and a cut copy of each. One library holds them all; it is scanned and probed once
(`muscat scan`, `muscat extract --only probe`), and each test reads what the catalogue says of
one file: a good file is probed with FFmpeg's duration (within 1 %), a codec and no failed row;
a cut copy has exactly one failed row that says it is truncated, and the run goes on.
Test ids are the formats' names: `pytest tests/test_formats.py -k opus`.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import rows, run_muscat
from formats import (CASES, decoded_pcm16, extensions, make_all, music, ogg_last_page_complete, packet_spans,
                     pcm16, reference_duration)

import catalog
from catalog.config import DEFAULT_AUDIO_EXTENSIONS

GOOD = [pytest.param(c.name, id=c.name) for c in CASES]
CUT_FAILS = [pytest.param(c.name, id=c.name) for c in CASES if c.cut == "fails"]
CUT_SHORTER = [pytest.param(c.name, id=c.name) for c in CASES if c.cut == "shorter"]
LOSSLESS = [pytest.param(c.name, id=c.name) for c in CASES if c.lossless and c.name != "wav"]


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """The library of every case, scanned and probed once through the CLI."""
    tmp = tmp_path_factory.mktemp("formats")
    root = tmp / "Music"
    made = make_all(root)
    # FFmpeg's durations of what must read as good now; of the other cut copies when asked.
    files = [m.path for m in made.values() if m.path]
    files += [m.cut_path for m in made.values() if m.cut_path and m.case.cut == "shorter"]
    with ThreadPoolExecutor(4) as pool:
        references = dict(zip(files, pool.map(reference_duration_or_none, files)))
    db = tmp / "cat.duckdb"
    # Every extension of the table, so that what the decoder does is seen even where the default
    # list lags (test_default_extensions_cover_every_format checks the defaults themselves).
    listed = sorted(set(DEFAULT_AUDIO_EXTENSIONS) | set(extensions()))
    (tmp / "muscat.toml").write_text(f"audio_extensions = {json.dumps(listed)}\n")
    scan = run_muscat("scan", str(root), "--json", db=db)
    assert scan.returncode == 0, scan.stderr
    extract = run_muscat("extract", "--only", "probe", "--workers", "2", "--json", db=db, timeout=300)
    database = catalog.Database(db)
    library = {Path(r[0]).name: r for r in rows(
        database, "SELECT path, duration_s, codec, sample_rate, channels, audio_id FROM library")}
    failed: dict[str, list[tuple[str, str]]] = {}
    for path, extractor, error in rows(database, "SELECT path, extractor, error FROM failed"):
        failed.setdefault(Path(path).name, []).append((extractor, error))
    database.close()
    return {"made": made, "references": references, "extract": extract, "library": library, "failed": failed}


def reference_duration_or_none(path: Path) -> float | None:
    try:
        return reference_duration(path)
    except RuntimeError:  # FFmpeg reads nothing of it (a cut MP4 whose index was at the end)
        return None


def _reference(probed, path: Path) -> float | None:
    if path not in probed["references"]:
        probed["references"][path] = reference_duration_or_none(path)
    return probed["references"][path]


def _made(probed, name):
    made = probed["made"][name]
    if made.skip:
        pytest.skip(made.skip)
    return made


def _catalogued(probed, path: Path) -> tuple:
    row = probed["library"].get(path.name)
    assert row is not None, f"{path.name} is not in the catalogue after the scan"
    return row


@pytest.mark.parametrize("name", GOOD)
def test_good_file_is_probed_with_ffmpegs_duration(probed, name):
    made = _made(probed, name)
    case, file = made.case, made.path.name
    _, duration, codec, rate, channels, audio_id = _catalogued(probed, made.path)
    failures = probed["failed"].get(file)
    assert failures is None, f"{file} ({case.how}) failed: {failures}"
    reference = probed["references"][made.path]
    assert duration is not None and audio_id, f"{file} was not probed"
    within = abs(duration - reference) <= 0.01 * reference
    assert within, f"{file}: muscat says {duration:.4f} s, FFmpeg decodes {reference:.4f} s"
    assert codec, f"{file}: no codec recorded"
    assert channels == case.channels, f"{file}: {channels} channels"
    if case.rate is not None:
        assert rate == case.rate, f"{file}: {rate} Hz"


@pytest.mark.parametrize("name", CUT_FAILS)
def test_cut_copy_fails_once_as_truncated(probed, name):
    made = _made(probed, name)
    file = made.cut_path.name
    _catalogued(probed, made.cut_path)
    failures = probed["failed"].get(file, [])

    def context() -> str:
        full, left = _reference(probed, made.path), _reference(probed, made.cut_path)
        return (f"(cut at byte {made.cut_bytes}: FFmpeg decodes {left} of {full} s from it; what shows the "
                f"cut: {made.case.cut_note})")

    assert len(failures) == 1, f"{file}: failed rows {failures} {context()}"
    extractor, error = failures[0]
    assert extractor == "probe"
    says_why = re.search(made.case.cut_reason, error, re.IGNORECASE) is not None
    assert says_why, f"{file}: the failure does not say it is cut: {error!r} {context()}"
    readable = "\n" not in error and "Traceback" not in error and len(error) < 400
    assert readable, f"{file}: {error!r}"


@pytest.mark.parametrize("name", CUT_SHORTER)
def test_cut_between_packets_is_a_good_shorter_file(probed, name):
    made = _made(probed, name)
    file = made.cut_path.name
    _, duration, *_ = _catalogued(probed, made.cut_path)
    failures = probed["failed"].get(file)
    assert failures is None, f"{file} failed: {failures}; but {made.case.cut_note}"
    reference = probed["references"][made.cut_path]
    within = duration is not None and abs(duration - reference) <= 0.01 * reference
    assert within, f"{file}: muscat says {duration} s, FFmpeg decodes {reference:.4f} s"
    assert duration < 0.8 * probed["references"][made.path]


def test_the_run_goes_on_past_the_cut_copies(probed):
    extract = probed["extract"]
    assert extract.returncode == 1, extract.stderr  # finished, with some files failed
    assert "Traceback" not in extract.stderr
    summary = json.loads(extract.stdout)
    good_names = {m.path.name for m in probed["made"].values() if m.path}
    good_names |= {m.cut_path.name for m in probed["made"].values() if m.cut_path and m.case.cut == "shorter"}
    wrongly_failed = sorted(set(probed["failed"]) & good_names)
    assert not wrongly_failed, f"good files failed: {wrongly_failed}"
    assert summary["failed"] == len(probed["failed"])
    assert summary["probed"] == len([n for n in probed["library"] if n not in probed["failed"]])


def test_flac_and_wav_of_the_same_pcm_share_the_audio_id(probed):
    library = probed["library"]
    wav, flac = library["wav.wav"][5], library["flac.flac"][5]
    assert wav and wav == flac, f"wav {wav}, flac {flac}"


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_file_shares_the_audio_id_of_the_wav(probed, name):
    """The lossless cases all store the same 16-bit PCM: one audio id whichever decoder reads them."""
    made = _made(probed, name)
    audio_id, wav = _catalogued(probed, made.path)[5], probed["library"]["wav.wav"][5]
    assert audio_id and audio_id == wav, f"{made.path.name}: {audio_id}, wav.wav: {wav}"


@pytest.mark.parametrize("name", [pytest.param(c.name, id=c.name) for c in CASES if c.lossless])
def test_lossless_fixture_holds_the_exact_pcm(probed, name):
    """The fixtures themselves (no muscat): FFmpeg decodes each lossless file to the PCM it was given."""
    made = _made(probed, name)
    same = np.array_equal(decoded_pcm16(made.path), pcm16(music()))
    assert same, f"{made.path.name} does not decode to the PCM it was made of"


@pytest.mark.parametrize("name", [pytest.param(c.name, id=c.name) for c in CASES if not c.skip])
def test_cut_copy_ends_where_the_case_says(probed, name):
    """The fixtures themselves: a "fails" copy ends inside a packet, a "shorter" one between two."""
    made = _made(probed, name)
    spans = packet_spans(made.path)
    inside = any(start < made.cut_bytes < start + size for start, size in spans)
    at_start = any(start == made.cut_bytes for start, _ in spans)
    if made.case.cut == "fails":
        assert inside and not at_start, f"{made.cut_path.name} ends at {made.cut_bytes}, not inside a packet"
    else:
        assert at_start, f"{made.cut_path.name} ends at {made.cut_bytes}, not between packets"
    if made.path.read_bytes()[:4] == b"OggS":
        assert not ogg_last_page_complete(made.cut_path) and ogg_last_page_complete(made.path)


def test_default_extensions_cover_every_format():
    wanted = set(extensions()) | {"aac", "wma", "alac"}
    missing = sorted(wanted - set(DEFAULT_AUDIO_EXTENSIONS))
    assert not missing, f"not scanned by default: {missing}"
