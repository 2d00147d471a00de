"""Another commit's muscat for a before/after benchmark: its tree exported with `git archive`,
and the command that runs its CLI from there."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The CLI of the tree named by PYTHONPATH. -P: `-c` would otherwise put the current folder (this
# checkout, when run from the repository) before PYTHONPATH, and time this tree instead.
MUSCAT_AT = [sys.executable, "-P", "-c", "import sys; from cli import main; sys.exit(main())"]


def export(rev: str, into: Path) -> str:
    """The tree of `rev` under `into`; returns the commit it names."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], check=True,
                            capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit
