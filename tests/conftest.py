from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import catalog  # noqa: E402
from audio import build_library  # noqa: E402
from catalog.integrity import violations  # noqa: E402

MUSCAT = Path(sys.executable).parent / "muscat"


@pytest.fixture(autouse=True)
def own_models_dir(tmp_path_factory, monkeypatch):
    """Each test its own user data folder: models a developer fetched for real (into
    ~/.local/share/muscat/models) never reach a test, nor a test's models the next test."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))


@pytest.fixture
def library(tmp_path: Path) -> tuple[Path, dict[str, list[Path]]]:
    root = tmp_path / "Music"
    return root, build_library(root)


@pytest.fixture
def settings(tmp_path: Path) -> catalog.Settings:
    return catalog.load_settings(db=tmp_path / "cat.duckdb")


@pytest.fixture
def db(settings: catalog.Settings):
    database = catalog.Database(settings.db_path, lock_timeout=10)
    yield database
    database.close()


# The suite runs in parallel processes (pytest-xdist: `-n auto --dist loadgroup` in pyproject.toml),
# each test file in one process, so that a file's module fixtures (a Ray cluster, encoded
# libraries) are made once; files sharing a session fixture form one group.
SHARED_GROUPS = {"test_similar": "pieces", "test_plot": "pieces", "test_report": "pieces"}
# The groups that take longest (45 s to 105 s in one process), handed out first, longest first:
# a long group started last would leave the other processes idle at the end. The rest follow
# in file order (`--no-loadscope-reorder`: xdist would order by number of tests).
SLOWEST_FIRST = ["pieces", "test_ray", "test_crash", "test_reindex", "test_gpu_worker", "test_extract",
                 "test_demucs", "test_notes", "test_watch", "test_disk_full"]


def pytest_xdist_auto_num_workers(config):
    # A process more than there are cores: the tests wait (for muscat's processes to start, for
    # Ray, for watch's settle time, between the kills of the crash tests) about a third of the time.
    return len(os.sched_getaffinity(0)) + 1


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        if not any(item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(SHARED_GROUPS.get(item.path.stem, item.path.stem)))

    def rank(item) -> int:
        group = next(item.iter_markers("xdist_group")).args[0]
        return SLOWEST_FIRST.index(group) if group in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)  # stable: each file's tests keep their order


def pytest_sessionfinish(session, exitstatus):
    # DuckDB connections still referenced at interpreter exit make its bindings print leak
    # warnings after pytest's summary: free them while the interpreter is whole.
    import gc

    gc.collect()


def run_muscat(*args: str, db: Path | None = None, cwd: Path | None = None, env: dict | None = None,
               timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run the installed `muscat` console script, as a user would. The timeout guards against a
    hang; it is generous because the suite runs in parallel processes on few cores."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("MUSCAT_DB", "MUSCAT_CONFIG")}
    full_env.update(env or {})
    cmd = [str(MUSCAT)] + (["--db", str(db)] if db else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout, **kw)


def assert_intact(db: catalog.Database) -> None:
    with db.read() as con:
        assert violations(con) == {}


def rows(db: catalog.Database, sql: str, params: list | None = None) -> list[tuple]:
    with db.read() as con:
        return con.execute(sql, params or []).fetchall()


@pytest.fixture(scope="session")
def pieces_catalogue(tmp_path_factory):
    """tests/pieces.py's dataset, scanned and extracted once for the tests that read it
    (similar, plot, report): (catalogue path, {name: file path})."""
    import pieces

    return pieces.catalogue(tmp_path_factory.mktemp("pieces"))
