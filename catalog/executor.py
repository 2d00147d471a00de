"""The executor interface: run these jobs somewhere, and tell me what happened.

The coordinator (catalog/extraction.py) plans jobs, decides what each identified audio needs
and passes results to the one writer; an executor runs the jobs: worker processes on this
machine (catalog/local_executor.py) or actors on a Ray cluster (catalog/ray_executor.py). They
speak the run protocol of catalog/protocol.py, and either way the coordinator's process is the
only writer of the catalogue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .config import Settings
    from .extractor import LoadedExtractor
    from .protocol import Event, Job, RunThese


class Executor(Protocol):
    size: int  # the workers it keeps (CPU workers; GPU workers come with them as needed)

    def start(self, size: int | None) -> None:
        """Start workers up to `size` (None: as many as it has cores for); their start-up
        overlaps the coordinator's planning."""

    def free(self) -> int:
        """How many more jobs it can take now."""

    def busy(self) -> int:
        """How many jobs it holds (running or handed to a worker)."""

    def submit(self, job: Job) -> None:
        """Run `job`; what happens arrives from `events`."""

    def answer(self, reply: RunThese) -> None:
        """The coordinator's answer to a job's Identified."""

    def events(self, timeout: float) -> list[Event]:
        """What the workers said since last asked, waiting up to `timeout` s for something."""

    def trim(self, keep: int) -> None:
        """Stop idle workers beyond `keep` (a short run needs no full pool)."""

    def notices(self) -> list[str]:
        """Things the user should be told since last asked (a GPU worker started again)."""

    def stop(self) -> dict[str, Any] | None:
        """Stop every worker; work in flight is dropped. What the GPU workers did, if any."""


def make_executor(settings: Settings, extractors: list[LoadedExtractor]) -> Executor:
    """The executor the settings ask for (`executor = "local" | "ray"`)."""
    if settings.executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(settings, extractors)
    from .local_executor import LocalExecutor

    return LocalExecutor(settings, extractors)
