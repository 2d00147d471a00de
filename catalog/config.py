"""Where the catalogue lives and what `muscat.toml` says.

Resolution order (contract): the database is `--db`, else `$MUSCAT_DB`, else
`./muscat.duckdb`; the configuration is `--config`, else `$MUSCAT_CONFIG`, else `muscat.toml`
beside the database when that file exists.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import ConfigError

TYPE_CHECKING = False  # typing's, without importing typing (a no-change rescan does not: console.py)
if TYPE_CHECKING:
    from typing import Any

DEFAULT_DB = "muscat.duckdb"
# Where Demucs publishes its models (demucs.pretrained.ROOT_URL); `[models] demucs_url` replaces it.
DEMUCS_URL = "https://dl.fbaipublicfiles.com/demucs/"
# What music libraries hold: everything FFmpeg decodes that people name as audio (and the
# video containers whose first audio stream is the music: mp4, webm).
DEFAULT_AUDIO_EXTENSIONS = (
    "wav", "flac", "mp3", "ogg", "opus", "m4a", "aac", "aif", "aiff", "aifc", "wma", "alac",
    "ape", "wv", "mpc", "dsf", "dff", "tta", "tak", "m4b", "mp4", "3g2", "mka", "webm", "oga", "spx",
    "ac3", "eac3", "caf", "w64", "mp2",
)


class Settings:
    """What the command line and muscat.toml set, each with its default (the class attributes).

    A plain class, not a dataclass: a no-change rescan loads its settings, and importing
    dataclasses would be a third of that command's time (see catalog/walker.py).
    `Settings(db_path, name=value, ...)` sets any of them; `replace()` gives a changed copy."""

    db_path: Path
    config_path: Path | None = None
    artifacts_dir: Path = Path("muscat-artifacts")
    workers: int  # default: the number of cores
    audio_extensions: tuple[str, ...] = DEFAULT_AUDIO_EXTENSIONS
    # Seconds a command waits for a catalogue held by another process before giving up.
    lock_timeout: float = 60.0
    # Longer files are identified but not analysed whole (memory: ~1.3 GB per stereo hour).
    max_duration: float = 3600.0
    # `[extractors.NAME]` tables, validated against the extractors' declared parameters
    # (default: none).
    extractors: dict[str, dict[str, Any]]
    # Where GPU extractors run: auto (a GPU when there is one), cpu, cuda, cuda:N (`--device`).
    device: str = "auto"
    # The GPU worker (catalog/gpu_worker.py): true, false, or unset: whenever the device is a GPU.
    gpu_worker: bool | None = None
    # Items per forward pass in the GPU worker (demucs: windows of a segment, 7.8 s for htdemucs);
    # halved by itself when the device runs out of memory.
    gpu_batch: int = 16
    # Seconds the GPU worker may go without finishing a batch (or waiting idle) before it is
    # taken for hung, killed and started again; what it held fails.
    gpu_timeout: float = 600.0
    # Where `muscat models fetch` and `muscat models add` put model files, a folder per extractor
    # (demucs without a `repo` reads `<models_dir>/demucs`). Default: default_models_dir().
    models_dir: Path
    # `[models]`: where `muscat models fetch demucs` downloads from (a mirror of Demucs' files).
    demucs_url: str = DEMUCS_URL
    # Where extraction runs: "local" (worker processes here) or "ray" (catalog/ray_executor.py).
    executor: str = "local"
    # `[ray]`: the cluster (`--ray-address`, else this, else $RAY_ADDRESS, else a local Ray for
    # the run), and how often a file may lose its worker before it is recorded as failed.
    ray_address: str | None = None
    ray_max_attempts: int = 3

    def __init__(self, db_path: Path, **values: Any) -> None:
        self.db_path = db_path
        self.workers = os.cpu_count() or 1
        self.extractors = {}
        self.models_dir = default_models_dir()
        for name, value in values.items():
            if name not in Settings.__annotations__:
                raise TypeError(f"Settings has no setting {name!r}")
            setattr(self, name, value)

    def values(self) -> dict[str, Any]:
        """Every setting by name, defaults included."""
        return {name: getattr(self, name) for name in Settings.__annotations__}

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` (what dataclasses.replace gave)."""
        return Settings(**{**self.values(), **changes})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self.values() == other.values()

    __hash__ = None  # type: ignore[assignment]  # changeable

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{name}={value!r}" for name, value in self.values().items()) + ")"


def default_models_dir() -> Path:
    """The user's data folder: $XDG_DATA_HOME/muscat/models when set, else ~/.local/share/muscat/models
    (~/Library/Application Support/muscat/models on macOS)."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():
        base = Path(xdg)
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path.home() / ".local" / "share"
    return base / "muscat" / "models"


# Top-level keys of muscat.toml, with the type each must have.
_KEYS: dict[str, type | tuple[type, ...]] = {
    "artifacts_dir": str,
    "workers": int,
    "audio_extensions": list,
    "lock_timeout": (int, float),
    "max_duration": (int, float),
    "extractors": dict,
    "gpu_worker": bool,
    "gpu_batch": int,
    "gpu_timeout": (int, float),
    "models_dir": str,
    "models": dict,
    "executor": str,
    "ray": dict,
}
EXECUTORS = ("local", "ray")
# Keys of the `[ray]` table.
_RAY_KEYS: dict[str, type | tuple[type, ...]] = {
    "address": str,
    "max_attempts": int,
}
# Keys of the `[models]` table.
_MODEL_KEYS: dict[str, type | tuple[type, ...]] = {
    "demucs_url": str,
}


def resolve_db_path(db: str | os.PathLike[str] | None) -> Path:
    chosen = db if db is not None else os.environ.get("MUSCAT_DB") or DEFAULT_DB
    return Path(chosen).expanduser().absolute()


def resolve_config_path(config: str | os.PathLike[str] | None, db_path: Path) -> Path | None:
    chosen = config if config is not None else os.environ.get("MUSCAT_CONFIG")
    if chosen:
        path = Path(chosen).expanduser().absolute()
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist")
        return path
    beside = db_path.parent / "muscat.toml"
    return beside if beside.is_file() else None


def load_settings(db: str | os.PathLike[str] | None = None, config: str | os.PathLike[str] | None = None) -> Settings:
    db_path = resolve_db_path(db)
    config_path = resolve_config_path(config, db_path)
    settings = Settings(db_path=db_path, config_path=config_path)
    if config_path is not None:
        _apply(settings, _read_toml(config_path), config_path)
    if not settings.artifacts_dir.is_absolute():
        settings.artifacts_dir = db_path.parent / settings.artifacts_dir
    if not settings.models_dir.is_absolute():
        settings.models_dir = db_path.parent / settings.models_dir
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # only where there is a file to read: most `status` runs have none

    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None


def _apply(settings: Settings, data: dict[str, Any], path: Path) -> None:
    _checked(path, data, _KEYS)
    if "artifacts_dir" in data:
        settings.artifacts_dir = Path(data["artifacts_dir"]).expanduser()
    if "workers" in data:
        if data["workers"] < 1:
            raise ConfigError(f"{path}: 'workers' must be at least 1")
        settings.workers = data["workers"]
    if "audio_extensions" in data:
        exts = data["audio_extensions"]
        if not exts or not all(isinstance(e, str) and e.strip(".") for e in exts):
            raise ConfigError(f"{path}: 'audio_extensions' must be a non-empty list of extensions such as \"flac\"")
        settings.audio_extensions = tuple(e.lower().lstrip(".") for e in exts)
    if "gpu_worker" in data:
        settings.gpu_worker = data["gpu_worker"]
    if "gpu_batch" in data:
        if data["gpu_batch"] < 1:
            raise ConfigError(f"{path}: 'gpu_batch' must be at least 1")
        settings.gpu_batch = data["gpu_batch"]
    if "gpu_timeout" in data:
        if data["gpu_timeout"] <= 0:
            raise ConfigError(f"{path}: 'gpu_timeout' must be a positive number of seconds")
        settings.gpu_timeout = float(data["gpu_timeout"])
    if "lock_timeout" in data:
        settings.lock_timeout = float(data["lock_timeout"])
    if "max_duration" in data:
        settings.max_duration = float(data["max_duration"])
    if "models_dir" in data:
        if not data["models_dir"].strip():
            raise ConfigError(f"{path}: 'models_dir' must be a folder, not an empty string")
        settings.models_dir = Path(data["models_dir"]).expanduser()
    _check_table(path, data, "models", _MODEL_KEYS)
    if "demucs_url" in data.get("models", {}):
        url = data["models"]["demucs_url"]
        if not url.startswith(("http://", "https://", "file://")):
            raise ConfigError(f"{path}: 'models.demucs_url' must be an http://, https:// or file:// URL, not {url!r}")
        settings.demucs_url = url if url.endswith("/") else url + "/"
    if "executor" in data:
        if data["executor"] not in EXECUTORS:
            raise ConfigError(f"{path}: 'executor' must be one of {', '.join(EXECUTORS)}, not {data['executor']!r}")
        settings.executor = data["executor"]
    ray = _check_table(path, data, "ray", _RAY_KEYS)
    if "address" in ray:
        settings.ray_address = ray["address"] or None
    if "max_attempts" in ray:
        if ray["max_attempts"] < 1:
            raise ConfigError(f"{path}: 'ray.max_attempts' must be at least 1")
        settings.ray_max_attempts = ray["max_attempts"]
    for name, table in data.get("extractors", {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: 'extractors.{name}' must be a table ([extractors.{name}])")
        settings.extractors[name] = table


def _check_table(path: Path, data: dict[str, Any], table: str,
                 keys: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """The `[table]` of the file (empty when absent), its keys known and of the right types."""
    return _checked(path, data.get(table, {}), keys, table)


def _checked(path: Path, values: dict[str, Any], keys: dict[str, type | tuple[type, ...]],
             table: str | None = None) -> dict[str, Any]:
    """`values`, every key known and of the right type (errors name the key, `table.key` in a table)."""
    for key, value in values.items():
        name, known_in = (f"{table}.{key}", f" in [{table}]") if table else (key, "")
        expected = keys.get(key)
        if expected is None:
            raise ConfigError(f"{path}: unknown key '{name}' (known keys{known_in}: {', '.join(sorted(keys))})")
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ConfigError(f"{path}: '{name}' must be {_type_name(expected)}, not {type(value).__name__}")
    return values


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table",
             bool: "true or false"}
    if isinstance(expected, tuple):
        return " or ".join(names[t] for t in expected)
    return names[expected]
