"""The extractor contract.

An extractor is one module (in `extractors/`, or a third-party module registered under the
entry-point group `muscat.extractors`) that declares, at its top:

    EXTRACTOR = Extractor(
        name="loudness", version=1, device="cpu",
        params={"gate": -70.0},
        outputs=[Output("loudness_integrated", "LUFS", (-70, 0), "scalar", "EBU R128 ...")],
    )

and defines `extract(audio, params, inputs) -> Made` (the `ExtractorModule` protocol below): it
gets the decoded audio (catalog/decode.py), its effective parameters and its `Inputs` (the
results of other extractors it reads, where to write files, the device), and returns what it
made — its values (a float for scalars, a str for categorical values, a sequence of floats for
vectors), the files it wrote, and what it leaves in memory for the extractors after it in the
same job (demucs: the stems). It changes nothing it was given. A plain dict of values may be
returned instead of a `Made`, and `extract(audio, params)` without inputs is accepted too.
Modules import their heavy libraries (essentia, torch) inside functions, so listing
extractors stays fast. A model-based extractor may instead define the stages of
catalog/model_stage.py (load_model, prepare, forward, finish), so that the GPU worker can batch
its model over many files.

Optional hooks: `available(params) -> str | None` (why the extractor cannot run, e.g. a missing
weights file), `weights_fingerprint(params) -> str` (part of the identity of its results), and
`uses(params) -> list[str]` (narrows the declared `uses`). Loading checks the module against
this contract: a hook with a misspelt name, or half of the stages, is an error then.

The identity of a result is (name, version, params hash); the params hash covers the effective
parameters and, for model-based extractors, the fingerprint of the weights. Bump `version` on any
change that can alter outputs.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence

from .blake2 import blake2b
from .errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

Kind = Literal["scalar", "categorical", "vector"]

# Keys every extractor accepts in its [extractors.NAME] table, beside its declared params.
COMMON_KEYS = {"enabled": bool}


@dataclass(frozen=True)
class Output:
    """One feature an extractor produces."""

    name: str  # snake_case, no unit in the name
    unit: str  # "" for dimensionless values
    range: tuple[float, float] | None  # the normal range, for people and sanity checks
    kind: Kind
    description: str
    size: int | None = None  # vectors: the fixed length, or None when it varies (beat times)
    labels: tuple[str, ...] | None = None  # vectors: a name per element (chroma: C, C#, ...)


@dataclass(frozen=True)
class Extractor:
    """What an extractor module declares about itself."""

    name: str
    version: int
    device: Literal["cpu", "gpu"]
    outputs: Sequence[Output]
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    # Extractors whose results it reads when they exist for the audio (hpcp: demucs stems), so
    # that its results become stale (reason `input`) when those appear or change. A module may
    # narrow this by parameters with `uses(params) -> list[str]`.
    uses: Sequence[str] = ()
    # Of those, the ones it is pointless without (bass_pitch: the bass stem): while one of them
    # cannot run, neither can this one, and `muscat extractors` says why.
    needs: Sequence[str] = ()
    # "audio": results belong to the content; "file": to the file (probe: codec, bitrate).
    scope: Literal["audio", "file"] = "audio"
    # False: runs only once a user switches it on (`enabled = true` under [extractors.NAME]),
    # for what costs far more than it gives most libraries (notes: twice the CPU set's time).
    on_by_default: bool = True


@dataclass(frozen=True)
class Artifact:
    """A file an extractor wrote (a stem, a MIDI file), as the catalogue records it."""

    kind: str  # 'stem:bass', 'midi', ...
    format: str  # 'flac', 'mid', ...
    path: str
    bytes: int


@dataclass
class Upstream:
    """A result of another extractor, given to one that reads it (`uses`)."""

    identity: str  # 'demucs:1:0123abcd': recorded as the run's input
    artifacts: dict[str, str] = field(default_factory=dict)  # kind -> path of its files
    arrays: dict[str, Any] | None = None  # what it left in memory, when it ran in this job


@dataclass
class Inputs:
    """What an extractor is given besides the audio and its parameters."""

    upstream: dict[str, Upstream] = field(default_factory=dict)  # of its `uses`, where present
    artifacts_dir: str = ""  # where its files go (shared storage on a cluster)
    device: str = "cpu"  # for model-based extractors: catalog/devices.py

    @property
    def source(self) -> str:
        """What the result is computed from: 'mix', or the identity of the upstream result."""
        return next(iter(self.upstream.values())).identity if self.upstream else "mix"

    def stems_mono(self, upstream: str, kinds: tuple[str, ...]) -> np.ndarray | None:
        """The sum of some stems of an upstream extractor, mono at 44.1 kHz, if it gave them."""
        given = self.upstream.get(upstream)
        if given is None:
            return None
        import numpy as np

        from .decode import ANALYSIS_RATE, resample

        if given.arrays is not None:  # separated in this job: still in memory
            parts, rate = [given.arrays["stems"][k] for k in kinds], given.arrays["sample_rate"]
        else:
            import soundfile as sf

            parts, rate = [], ANALYSIS_RATE
            for kind in kinds:
                data, rate = sf.read(given.artifacts[f"stem:{kind}"], dtype="float32", always_2d=True)
                parts.append(data)
        mixed = np.sum([p.mean(axis=1) for p in parts], axis=0).astype(np.float32)
        return resample(mixed, rate, ANALYSIS_RATE)


@dataclass
class Made:
    """What one run of an extractor made."""

    values: dict[str, Any]
    artifacts: list[Artifact] = field(default_factory=list)
    # Left in memory for the extractors after it in the same job (demucs: its stems).
    leaves: dict[str, Any] | None = None


class ExtractorModule(Protocol):
    """What an extractor module is (checked by `bind` when it is loaded)."""

    EXTRACTOR: Extractor

    def extract(self, audio: Any, params: dict[str, Any], inputs: Inputs) -> Made | dict[str, Any]: ...


# Every name a module may define for muscat; `bind` flags near-misses of these.
HOOKS = ("extract", "available", "weights_fingerprint", "uses", "load_model", "model_info", "prepare",
         "forward", "finish")


@dataclass
class LoadedExtractor:
    """A declaration bound to its module, with the parameters in effect."""

    declaration: Extractor
    module: ModuleType
    params: dict[str, Any]
    enabled: bool = True
    unavailable_reason: str | None = None
    weights_fingerprint: str | None = None
    local_models: Any = field(default=None, repr=False)  # a staged extractor's model, held here

    @property
    def uses(self) -> list[str]:
        narrow = getattr(self.module, "uses", None)
        return list(narrow(self.params)) if callable(narrow) else list(self.declaration.uses)

    @property
    def identity(self) -> str:
        """How downstream results name this one as their input."""
        return f"{self.name}:{self.version}:{self.params_hash}"

    @property
    def name(self) -> str:
        return self.declaration.name

    @property
    def version(self) -> int:
        return self.declaration.version

    @property
    def device(self) -> str:
        return self.declaration.device

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None

    @property
    def params_hash(self) -> str:
        return params_hash(self.params, self.weights_fingerprint)

    @property
    def runnable(self) -> bool:
        return self.enabled and self.available

    @property
    def off_reason(self) -> str | None:
        """Why it does not run although it could (said the same way by every command), or None."""
        if self.enabled:
            return None
        if self.declaration.on_by_default:
            return f"switched off (enabled = false under [extractors.{self.name}])"
        return f"off by default: `enabled = true` under [extractors.{self.name}] in muscat.toml switches it on"

    def run(self, audio: Any, inputs: Inputs | None = None, models: Any = None) -> Made:
        """What the extractor makes of `audio`; a staged one runs its model in `models` (a
        model_stage.Models: the GPU worker's client, or models held here), else in this process."""
        from . import model_stage

        inputs = inputs if inputs is not None else Inputs()
        if model_stage.is_staged(self.module):
            if models is None:
                if self.local_models is None:
                    self.local_models = model_stage.LocalModels({self.name: (self.module, self.params)},
                                                                inputs.device, model_stage.LOCAL_BATCH)
                models = self.local_models
            raw = model_stage.run_staged(self.name, self.module, self.params, audio, inputs, models)
        elif _takes_inputs(self.module.extract):
            raw = self.module.extract(audio, self.params, inputs)
        else:
            raw = self.module.extract(audio, self.params)
        made = raw if isinstance(raw, Made) else Made(raw)
        made.values = check_outputs(self.declaration, made.values)
        return made


def params_hash(params: dict[str, Any], weights_fingerprint: str | None = None) -> str:
    canonical = json.dumps({"params": params, "weights": weights_fingerprint}, sort_keys=True, default=str)
    return blake2b(canonical.encode(), digest_size=8).hexdigest()


def effective_params(declaration: Extractor, overrides: dict[str, Any], source: str) -> tuple[dict[str, Any], bool]:
    """Declared defaults with the user's overrides applied and checked; and `enabled`."""
    params = dict(declaration.params)
    enabled = declaration.on_by_default
    for key, value in overrides.items():
        where = f"{source}: [extractors.{declaration.name}] {key}"
        if key in COMMON_KEYS:
            if not isinstance(value, COMMON_KEYS[key]):
                raise ConfigError(f"{where} must be true or false, not {value!r}")
            enabled = value
            continue
        if key not in params:
            known = ", ".join(sorted(list(params) + list(COMMON_KEYS))) or "none"
            raise ConfigError(f"{where}: unknown parameter (known: {known})")
        params[key] = _coerce(where, params[key], value)
    return params, enabled


def _coerce(where: str, default: Any, value: Any) -> Any:
    """A value of the default's type (an int is accepted where a float is expected)."""
    if isinstance(default, bool) or default is None:
        ok = isinstance(value, bool) if isinstance(default, bool) else True
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{where} must be {type(default).__name__}, not {type(value).__name__} ({value!r})")
    return value


def check_outputs(declaration: Extractor, raw: dict[str, Any]) -> dict[str, Any]:
    """Validate an extract() result against the declaration; non-finite numbers become None."""
    declared = {o.name: o for o in declaration.outputs}
    unknown = set(raw) - set(declared)
    if unknown:
        raise ValueError(f"{declaration.name} returned undeclared outputs: {sorted(unknown)}")
    missing = set(declared) - set(raw)
    if missing:
        raise ValueError(f"{declaration.name} did not return: {sorted(missing)}")
    result: dict[str, Any] = {}
    for name, value in raw.items():
        out = declared[name]
        if out.kind == "scalar":
            result[name] = _finite(value)
        elif out.kind == "categorical":
            result[name] = None if value is None else str(value)
        else:
            vector = [float(v) for v in value]
            if out.size is not None and len(vector) != out.size:
                raise ValueError(f"{declaration.name}.{name}: expected {out.size} values, got {len(vector)}")
            if not all(math.isfinite(v) for v in vector):
                raise ValueError(f"{declaration.name}.{name}: non-finite values in a vector")
            result[name] = vector
    return result


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def bind(module: ModuleType) -> Extractor:
    """The declaration of an extractor module, checked against the contract (ExtractorModule)."""
    from .model_stage import STAGES, is_staged

    declaration = getattr(module, "EXTRACTOR", None)
    if not isinstance(declaration, Extractor):
        raise TypeError(f"{module.__name__} has no EXTRACTOR = Extractor(...) declaration")
    own = {name: value for name, value in vars(module).items()
           if inspect.isfunction(value) and value.__module__ == module.__name__ and not name.startswith("_")}
    for name in own:
        if name in HOOKS:  # the usual case; the fuzzy match is ~1 ms a name
            continue
        near = difflib.get_close_matches(name, HOOKS, n=1, cutoff=0.8)
        if near:
            raise TypeError(f"{module.__name__} defines {name}(): a misspelt {near[0]}()? "
                            f"(the names muscat calls: {', '.join(HOOKS)})")
    stages = [stage for stage in STAGES if stage in own]
    if stages and not is_staged(module):
        missing = [stage for stage in STAGES if stage not in own]
        raise TypeError(f"{module.__name__} defines {', '.join(stages)} but not {', '.join(missing)}: a staged "
                        "extractor needs all four (catalog/model_stage.py)")
    if not callable(getattr(module, "extract", None)) and not is_staged(module):
        raise TypeError(f"{module.__name__} has no extract(audio, params, inputs) function (nor the stages "
                        f"{', '.join(STAGES)})")
    names = [o.name for o in declaration.outputs]
    if len(names) != len(set(names)):
        raise TypeError(f"{module.__name__}: output names repeat")
    for name in [declaration.name] + names:
        if not _IDENTIFIER.fullmatch(name):
            raise TypeError(f"{module.__name__}: {name!r} is not a snake_case name")
    return declaration


def _takes_inputs(function: Any) -> bool:
    """Whether an extract() takes `inputs` (the older form is extract(audio, params))."""
    try:
        return len(inspect.signature(function).parameters) >= 3
    except (TypeError, ValueError):
        return True


# Extractor and feature names become SQL column names: keep them plain.
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,62}")
