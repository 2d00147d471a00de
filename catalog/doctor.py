"""`muscat doctor`: what is wrong with a catalogue and its surroundings, and how to fix it.

Checks, each a Finding with a fix a person can act on:
- catalogue: it opens, its schema is current, the invariants of catalog/integrity.py hold,
  recorded artifacts are on disk whole, no leftover temporary files of interrupted writes;
- decoders: libsndfile (WAV, AIFF, FLAC) and FFmpeg through PyAV (everything else);
- devices: the configured --device exists; room in /dev/shm for the GPU worker's transfers;
- models: every switched-on extractor can run (weights and model folders in place); an optional
  model that is not installed is `off`, with the command that gets it (`muscat models`), and
  only what is configured and broken (a missing file, a checksum that no longer matches, a
  checkpoint that does not load) fails. No catalogue yet is `off` too: a fresh install passes.
- watching: inotify limits against the number of folders in the catalogue;
- disk: free space where the catalogue and the artifacts live.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MuscatError

if TYPE_CHECKING:
    from .config import Settings
    from .database import Database

# Below this much free space, stems and the catalogue's growth may not fit.
LOW_DISK_BYTES = 2 * 1024**3

# What to do when an invariant of catalog/integrity.py does not hold.
INTEGRITY_FIXES = {
    "a recorded artifact is missing, of another size, or a temporary file":
        "files under artifacts_dir were deleted or changed outside muscat; the results that list them "
        "stay recorded. To make them again, change that extractor's parameters (a new identity) and "
        "run `muscat reindex`, or restore the files from a backup",
}
DEFAULT_INTEGRITY_FIX = ("this should never happen: keep a copy of the catalogue and report it with the "
                         "output of `muscat doctor --json`")


@dataclass
class Finding:
    area: str  # catalogue | decoders | devices | models | watching | disk
    ok: bool  # false only for what is wrong (state "fail")
    what: str
    fix: str | None = None
    # "off": nothing wrong, something optional not there (a model not installed, no catalogue yet);
    # `fix` says how to get it. It does not count against the exit status.
    off: bool = False

    @property
    def state(self) -> str:
        return "off" if self.off else ("ok" if self.ok else "fail")

    def to_json(self) -> dict[str, Any]:
        found = asdict(self)
        del found["off"]
        return {**found, "state": self.state}


def off(area: str, what: str, fix: str) -> Finding:
    return Finding(area, True, what, fix, off=True)


def doctor(db: Database, settings: Settings) -> list[Finding]:
    """Every check; problems have ok=False and a fix."""
    findings: list[Finding] = []
    findings += _catalogue(db, settings)
    findings += _decoders()
    findings += _devices(settings)
    findings += _models(settings)
    findings += _watching(db)
    findings += _disk(settings)
    return findings


# -- the checks ------------------------------------------------------------------------------


def _catalogue(db: Database, settings: Settings) -> list[Finding]:
    from . import migrations
    from .integrity import violations
    from .maintenance import leftover_temporaries

    if not db.path.exists():
        return [off("catalogue", f"there is no catalogue at {db.path} yet",
                    "run `muscat scan FOLDER` or `muscat watch FOLDER` to create it, or pass --db")]
    try:
        if migrations.needs_upgrade(db):
            return [Finding("catalogue", False, f"{db.path} has an older schema than this muscat",
                            "any writing command (scan, extract) upgrades it, after a backup copy")]
        with db.read() as con:
            broken = violations(con)
    except MuscatError as exc:
        return [Finding("catalogue", False, str(exc), "see the message; `lock_timeout` in muscat.toml "
                        "sets how long muscat waits for another process")]
    findings = [Finding("catalogue", True, f"{db.path} opens and its schema is current")]
    for name, rows in broken.items():
        findings.append(Finding("catalogue", False, f"{name}: {rows[:3]}",
                                INTEGRITY_FIXES.get(name, DEFAULT_INTEGRITY_FIX)))
    if not broken:
        findings.append(Finding("catalogue", True, "every invariant holds (files, runs, features, artifacts)"))
    leftovers = leftover_temporaries(settings.artifacts_dir)
    if leftovers:
        findings.append(Finding(
            "catalogue", False,
            f"{len(leftovers)} temporary files of interrupted writes under {settings.artifacts_dir} "
            f"(e.g. {leftovers[0]})",
            "they are never referenced: `muscat gc` deletes them"))
    return findings


# What the decoders must read (FFmpeg's decoder names), as users know the formats.
_FFMPEG_DECODERS = {
    "mp3float": "MP3", "mp2": "MP2", "aac": "AAC", "alac": "ALAC", "opus": "Opus", "vorbis": "Vorbis",
    "wmav2": "WMA", "wavpack": "WavPack", "ape": "Monkey's Audio", "musepack8": "Musepack",
    "tta": "TTA", "tak": "TAK", "dsd_lsbf": "DSD", "ac3": "AC-3", "eac3": "E-AC-3", "speex": "Speex",
    "flac": "FLAC",
}


def _decoders() -> list[Finding]:
    import soundfile as sf

    findings = []
    library = sf.__libsndfile_version__
    if {"WAV", "AIFF", "FLAC"} <= set(sf.available_formats()):
        findings.append(Finding("decoders", True, f"libsndfile {library} reads WAV, AIFF and FLAC"))
    else:
        findings.append(Finding("decoders", False, f"libsndfile {library} lacks WAV, AIFF or FLAC (FFmpeg reads them, slower)",
                                "reinstall soundfile (its wheel bundles libsndfile with FLAC)"))
    try:
        import av
    except ImportError as exc:
        return findings + [Finding("decoders", False, f"PyAV cannot be loaded: {exc}",
                                   "`uv sync` reinstalls the av wheel (FFmpeg is inside it)")]
    missing = []
    for name, label in _FFMPEG_DECODERS.items():
        try:
            av.codec.Codec(name, "r")
        except Exception:  # noqa: BLE001 - PyAV raises a plain exception type per build
            missing.append(label)
    version = f"FFmpeg {av.ffmpeg_version_info} (PyAV {av.__version__})"
    if missing:
        findings.append(Finding("decoders", False, f"{version} cannot decode {', '.join(missing)}",
                                "`uv sync` reinstalls the av wheel, whose FFmpeg has every decoder"))
    else:
        findings.append(Finding("decoders", True, f"{version} reads everything else: "
                                + ", ".join(sorted(set(_FFMPEG_DECODERS.values()) - {"FLAC"}))))
    return findings


def _devices(settings: Settings) -> list[Finding]:
    from .devices import prepare_environment, split

    prepare_environment()
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return [Finding("devices", False, f"torch cannot be loaded: {exc}", "`uv sync` reinstalls it")]
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(gpus)) or "none"
    findings = [Finding("devices", True, f"torch {torch.__version__}; GPUs: {names}")]
    requested = settings.device
    for device in split(requested):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if device.startswith("cuda") and index >= gpus:
            findings.append(Finding("devices", False, f"device {device} is configured but this machine has "
                                    f"{gpus} GPU{'s' if gpus != 1 else ''}",
                                    "use --device auto (a GPU when there is one) or --device cpu"))
    if requested == "auto" and not gpus:
        findings.append(Finding("devices", True, "--device auto runs model-based extractors on the CPU here (slow)"))
    if gpus or settings.gpu_worker:
        findings.append(_shared_memory())
    return findings


# Below this, the GPU worker's windows and stems travel pickled through its socket instead.
LOW_SHM_BYTES = 1024**3


def _shared_memory() -> Finding:
    from .gpu_worker import shm_room

    room = shm_room()
    if room < LOW_SHM_BYTES:
        return Finding("devices", False, f"only {room / 1024**2:.0f} MiB free in /dev/shm: the GPU worker's "
                       "transfers fall back to slower pickles through its socket",
                       "give /dev/shm more room (in a container: docker run --shm-size=8g)")
    return Finding("devices", True, f"{room / 1024**3:.0f} GiB free in /dev/shm for the GPU worker's transfers")


def _models(settings: Settings) -> list[Finding]:
    from .registry import load_extractors

    try:
        loaded = load_extractors(settings)
    except MuscatError as exc:
        return [Finding("models", False, str(exc), f"correct {settings.config_path or 'muscat.toml'}")]
    from .models import NotInstalled

    findings = []
    by_name = {e.name: e for e in loaded}
    for extractor in loaded:
        if not extractor.enabled:
            if not extractor.declaration.on_by_default:  # a user may not know it is there
                findings.append(off("models", f"{extractor.name} is off by default",
                                    f"`enabled = true` under [extractors.{extractor.name}] in "
                                    f"{settings.config_path or 'muscat.toml'} switches it on"))
            continue
        reason = extractor.unavailable_reason
        waits_for = [n for n in extractor.declaration.needs if n in by_name and (
            not by_name[n].enabled or isinstance(by_name[n].unavailable_reason, NotInstalled))]
        if extractor.available:
            findings.append(Finding("models", True, f"{extractor.name} can run"))
        elif isinstance(reason, NotInstalled):
            findings.append(off("models", f"{extractor.name} is off: {reason}",
                                f"`{reason.command}`, or switch it off with enabled = false under "
                                f"[extractors.{extractor.name}]; `muscat models` lists what each model needs"))
        elif waits_for:
            needed = by_name[waits_for[0]]
            findings.append(off(
                "models", f"{extractor.name} is off: it needs {needed.name}, which is "
                + (needed.off_reason if not needed.enabled else "not installed"),
                f"switch {needed.name} on" if not needed.enabled else f"`{needed.unavailable_reason.command}`"))
        else:
            findings.append(Finding(
                "models", False, f"{extractor.name} cannot run: {extractor.unavailable_reason}",
                f"set its files under [extractors.{extractor.name}] in {settings.config_path or 'muscat.toml'}, "
                f"or switch it off there with enabled = false"))
    return findings


def _watching(db: Database) -> list[Finding]:
    limits = Path("/proc/sys/fs/inotify")
    if not limits.is_dir():
        return [Finding("watching", True, "no inotify here: `muscat watch` polls")]
    watches = int((limits / "max_user_watches").read_text())
    instances = int((limits / "max_user_instances").read_text())
    folders = 0
    if db.path.exists():
        try:
            with db.read() as con:
                folders = con.execute("SELECT count(*) FROM dirs").fetchone()[0]
        except MuscatError:
            pass
    findings = [Finding("watching", True, f"inotify: {watches:,} watches, {instances} instances per user; "
                                          f"the catalogue has {folders:,} folders")]
    if folders and watches < folders * 1.2:
        findings.append(Finding(
            "watching", False, f"{folders:,} folders need more inotify watches than the {watches:,} allowed "
            "(`muscat watch` would fall back to polling)",
            f"sudo sysctl fs.inotify.max_user_watches={max(524288, folders * 2)} (and in /etc/sysctl.d/ to keep it)"))
    return findings


def _disk(settings: Settings) -> list[Finding]:
    findings = []
    for label, path in (("catalogue", settings.db_path.parent), ("artifacts", settings.artifacts_dir)):
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        free = shutil.disk_usage(existing).free
        if free < LOW_DISK_BYTES:
            findings.append(Finding("disk", False, f"only {free / 1024**3:.1f} GiB free for the {label} ({path})",
                                    "free space there, or move it (--db / artifacts_dir in muscat.toml)"))
        else:
            findings.append(Finding("disk", True, f"{free / 1024**3:.0f} GiB free for the {label} ({path})"))
    return findings
