"""The run protocol and the extractor contract, seen from a worker's side."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from audio import sine, write

import catalog
from catalog import protocol
from catalog.extractor import Extractor, Output, bind
from catalog.registry import load_extractors
from catalog.workers import run_job


def _module(source: str) -> types.ModuleType:
    module = types.ModuleType("plugin_under_test")
    exec(compile("from catalog.extractor import Extractor, Output\n"
                 "EXTRACTOR = Extractor(name='thing', version=1, device='cpu', "
                 "outputs=[Output('thing_value', '', None, 'scalar', 'x')])\n" + source,
                 "plugin_under_test", "exec"), module.__dict__)
    return module


def test_a_misspelt_hook_is_an_error_at_load() -> None:
    with pytest.raises(TypeError, match=r"weights_fingerprnt\(\): a misspelt weights_fingerprint\(\)"):
        bind(_module("def extract(audio, params, inputs):\n    return {'thing_value': 1.0}\n"
                     "def weights_fingerprnt(params):\n    return 'x'\n"))
    with pytest.raises(TypeError, match=r"extrac\(\): a misspelt extract\(\)"):
        bind(_module("def extrac(audio, params, inputs):\n    return {}\n"))


def test_half_the_stages_is_an_error_at_load() -> None:
    with pytest.raises(TypeError, match="defines prepare, forward but not load_model, finish"):
        bind(_module("def prepare(audio, params, info, inputs):\n    pass\n"
                     "def forward(model, batch):\n    pass\n"))


def test_helpers_with_other_names_are_fine() -> None:
    declaration = bind(_module("def extract(audio, params, inputs):\n    return {'thing_value': 1.0}\n"
                               "def onset_curve(x):\n    return x\n"))
    assert isinstance(declaration, Extractor) and declaration.outputs[0] == Output(
        "thing_value", "", None, "scalar", "x")


def test_a_job_is_a_conversation_of_typed_messages(tmp_path: Path) -> None:
    """What any executor's worker says for a probe job: each message one protocol class."""
    path = write(tmp_path / "a.wav", sine(440, 2.0))
    settings = catalog.load_settings(db=tmp_path / "cat.duckdb")
    extractors = {e.name: e for e in load_extractors(settings)}
    said: list = []
    replies = iter([protocol.RunThese(7, ["loudness", "key"])])
    run_job(protocol.Job(7, bytes(path), 1, probe=True), extractors, settings, None, said.append,
            lambda: next(replies), "here")
    kinds = [type(m).__name__ for m in said]
    assert kinds == ["Identified", "Started", "Result", "Started", "Result", "Done"]
    identified, results = said[0], [m for m in said if isinstance(m, protocol.Result)]
    assert identified.facts.duration == pytest.approx(2.0) and identified.host == "here"
    assert {r.extractor for r in results} == {"key", "loudness"} and all(r.error is None for r in results)
    assert all(r.input == "mix" and r.artifacts == [] for r in results)


def test_an_unreadable_file_is_one_message_and_done(tmp_path: Path) -> None:
    path = tmp_path / "broken.flac"
    path.write_bytes(b"fLaC" + bytes(100))
    settings = catalog.load_settings(db=tmp_path / "cat.duckdb")
    said: list = []
    run_job(protocol.Job(1, bytes(path), 1, probe=True), {e.name: e for e in load_extractors(settings)},
            settings, None, said.append, lambda: None, "here")
    assert [type(m) for m in said] == [protocol.Unreadable, protocol.Done]
    assert said[0].reason
