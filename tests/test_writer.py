"""The result writer's pacing: a flush that takes long spaces out the next ones (WRITE_SHARE),
so that the coordinator leaves the cores to the workers; a quick one brings back
`flush_seconds`. The clock is the writer's own, made to advance by hand."""

from __future__ import annotations

import time
import types

import catalog
from catalog import writer as writer_module


def test_a_slow_flush_spaces_out_the_next_and_a_quick_one_does_not(tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(writer_module, "time", types.SimpleNamespace(monotonic=lambda: now[0], sleep=time.sleep))
    db = catalog.Database(tmp_path / "cat.duckdb")
    writer = writer_module.ResultWriter(db, flush_seconds=1.0)
    cost = [0.1]  # seconds each flush takes, on the writer's clock
    written: list[float] = []

    def write_probed(con):
        now[0] += cost[0]
        written.append(now[0])

    monkeypatch.setattr(writer, "_write_probed", write_probed)

    def buffer_and_try(advance: float) -> None:
        now[0] += advance
        writer.add_reprobe(1)  # a file to probe again: written with the batch (no such file: no row)
        writer.maybe_flush()

    buffer_and_try(0.5)
    assert written == [] and writer.buffered == 1  # before flush_seconds
    buffer_and_try(0.5)
    assert len(written) == 1 and writer.buffered == 0
    # That flush took 0.1 s: the next waits 0.1 / WRITE_SHARE, more than flush_seconds.
    spacing = 0.1 / writer_module.WRITE_SHARE
    assert spacing > 1.0
    buffer_and_try(spacing - 0.01)
    assert len(written) == 1 and writer.buffered == 1
    cost[0] = 0.001
    buffer_and_try(0.02)
    assert len(written) == 2 and writer.buffered == 0
    # A quick flush: flush_seconds again.
    buffer_and_try(1.0)
    assert len(written) == 3
    writer.close()
    db.close()


def test_without_a_write_share_results_are_written_every_flush_seconds(tmp_path, monkeypatch):
    """As watch's engine writes them (prompt_results): someone is waiting for each."""
    now = [1000.0]
    monkeypatch.setattr(writer_module, "time", types.SimpleNamespace(monotonic=lambda: now[0], sleep=time.sleep))
    db = catalog.Database(tmp_path / "cat.duckdb")
    writer = writer_module.ResultWriter(db, flush_seconds=1.0, write_share=None)
    written: list[float] = []

    def write_probed(con):
        now[0] += 0.5  # a slow flush
        written.append(now[0])

    monkeypatch.setattr(writer, "_write_probed", write_probed)
    for expected in (1, 2, 3):
        now[0] += 1.0
        writer.add_reprobe(1)
        writer.maybe_flush()
        assert len(written) == expected
    writer.close()
    db.close()
