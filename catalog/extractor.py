"""The extractor contract.

An extractor is one module (in `extractors/`, or a third-party module registered under the
entry-point group `muscat.extractors`) that declares, at its top:

    EXTRACTOR = Extractor(
        name="loudness", version=1, device="cpu",
        params={"gate": -70.0},
        outputs=[Output("loudness_integrated", "LUFS", (-70, 0), "scalar", "EBU R128 ...")],
    )

and defines `extract(audio: Audio, params: dict) -> dict` returning one value per declared output
(a float for scalars, a str for categorical values, a sequence of floats for vectors). Modules
import their heavy libraries (essentia, torch) inside functions, so listing extractors stays fast.
A model-based extractor may instead define the stages of catalog/model_stage.py (load_model,
prepare, forward, finish), so that the GPU worker can batch its model over many files.

Model-based extractors may also define `available(params) -> str | None` (why the extractor
cannot run, e.g. a missing weights file) and `weights_fingerprint(params) -> str`, which becomes
part of the identity of their results. An extractor that reads another's results declares it in
`uses`; `audio.inputs[name]` then says which result of that extractor it was given.

The identity of a result is (name, version, params hash); the params hash covers the effective
parameters and, for model-based extractors, the fingerprint of the weights. Bump `version` on any
change that can alter outputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal, Sequence

from .errors import ConfigError

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

    def element_names(self) -> list[str]:
        if self.labels:
            return list(self.labels)
        return [str(i) for i in range(self.size or 0)]


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

    def run(self, audio: Any, models: Any = None) -> dict[str, Any]:
        """The extractor's outputs for `audio`; a staged one runs its model in `models` (a
        model_stage.Models: the GPU worker's client, or models held here), else in this process."""
        from . import model_stage

        if model_stage.is_staged(self.module):
            if models is None:
                if self.local_models is None:
                    self.local_models = model_stage.LocalModels({self.name: (self.module, self.params)},
                                                                audio.device, model_stage.LOCAL_BATCH)
                models = self.local_models
            raw = model_stage.run_staged(self.name, self.module, self.params, audio, models)
        else:
            raw = self.module.extract(audio, self.params)
        return check_outputs(self.declaration, raw)


def params_hash(params: dict[str, Any], weights_fingerprint: str | None = None) -> str:
    canonical = json.dumps({"params": params, "weights": weights_fingerprint}, sort_keys=True, default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()


def effective_params(declaration: Extractor, overrides: dict[str, Any], source: str) -> tuple[dict[str, Any], bool]:
    """Declared defaults with the user's overrides applied and checked; and `enabled`."""
    params = dict(declaration.params)
    enabled = True
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
    """The declaration of an extractor module, checked with the functions it must define."""
    from .model_stage import STAGES, is_staged

    declaration = getattr(module, "EXTRACTOR", None)
    if not isinstance(declaration, Extractor):
        raise TypeError(f"{module.__name__} has no EXTRACTOR = Extractor(...) declaration")
    if not callable(getattr(module, "extract", None)) and not is_staged(module):
        raise TypeError(f"{module.__name__} has no extract(audio, params) function (nor the stages "
                        f"{', '.join(STAGES)})")
    names = [o.name for o in declaration.outputs]
    if len(names) != len(set(names)):
        raise TypeError(f"{module.__name__}: output names repeat")
    for name in [declaration.name] + names:
        if not _IDENTIFIER.fullmatch(name):
            raise TypeError(f"{module.__name__}: {name!r} is not a snake_case name")
    return declaration


# Extractor and feature names become SQL column names: keep them plain.
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,62}")
