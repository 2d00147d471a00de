"""The run protocol: what the coordinator and the workers of an executor say to each other.

Whatever runs the work — worker processes on this machine (catalog/local_executor.py) or
actors on a Ray cluster (catalog/ray_executor.py) — the conversation for one job is:

    coordinator -> worker   Job
    worker -> coordinator   Identified                probe jobs: the audio's id and probe values
    coordinator -> worker   RunThese                  what that audio still needs
    worker -> coordinator   Started, then Result      for each extractor
    worker -> coordinator   Done

or Unreadable when the file cannot be decoded, Vanished when it is no longer there, Changed
when an audio job finds other content than the catalogue expects (Rekeyed when it is the same
content under a newer id rule: catalog/legacy_identity.py), and NoSpace instead of a Result
when the disk (or a file-size limit) is full. WorkerLost comes from the executor, not a worker:
the worker holding the job died, and (where the executor retries) its attempts are used up.

Every message is a plain dataclass of plain values: they cross process and machine boundaries
by pickling, and only values and the records of files travel — never audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Union

from .extractor import Artifact


@dataclass
class Job:
    job_id: int
    path: bytes  # absolute, exact bytes
    file_id: int
    probe: bool  # identify the audio first, then ask which extractors to run
    previous_audio_id: str | None = None  # probe jobs: the audio the file held when last probed
    expected_audio_id: str | None = None  # audio jobs: the content the catalogue expects
    extractors: tuple[str, ...] = ()  # audio jobs: what to run
    # Results the audio has of extractors others read (stems): name -> its identity, and the
    # files of those results: name -> {kind: path}.
    upstream: dict[str, str] = field(default_factory=dict)
    upstream_artifacts: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class RunThese:
    """The coordinator's answer to Identified: the extractors the audio still needs."""

    job_id: int
    extractors: list[str]


@dataclass
class ProbeFacts:
    duration: float
    sample_rate: int
    channels: int
    codec: str
    head_tail_hash: str
    rekeyed_from: str | None = None  # the id this audio had under the rule before packets


@dataclass
class Identified:
    job_id: int
    audio_id: str
    values: dict[str, Any]  # the probe's outputs
    facts: ProbeFacts
    started_at: datetime
    seconds: float
    host: str


@dataclass
class Started:
    job_id: int
    extractor: str


@dataclass
class Result:
    job_id: int
    extractor: str
    values: dict[str, Any] | None  # None when it failed
    error: str | None
    started_at: datetime
    seconds: float
    audio_seconds: float
    input: str  # 'mix', or the upstream result it read, as 'extractor:version:params_hash'
    artifacts: list[Artifact]
    device: str
    host: str


@dataclass
class Done:
    job_id: int


@dataclass
class Unreadable:
    job_id: int
    reason: str
    started_at: datetime
    seconds: float
    host: str


@dataclass
class Vanished:
    job_id: int


@dataclass
class Changed:
    job_id: int
    audio_id: str


@dataclass
class Rekeyed:
    job_id: int
    old: str
    new: str


@dataclass
class NoSpace:
    job_id: int
    extractor: str
    error: str


@dataclass
class WorkerLost:
    job_id: int
    reason: str  # for a person: "the worker process died of signal SIGKILL", "worker lost 3 times: ..."
    # What it was running when it went (empty: it was decoding, or nothing is known): failed.
    extractors: list[str]


WorkerMessage = Union[Identified, Started, Result, Done, Unreadable, Vanished, Changed, Rekeyed, NoSpace]
Event = Union[WorkerMessage, WorkerLost]
