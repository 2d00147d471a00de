"""Finding extractors: every module in the `extractors` package, plus third-party modules
registered under the entry-point group `muscat.extractors` (as beets and sqlite-utils take
plugins). Adding an extractor is adding a module; no list elsewhere names it.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from types import ModuleType

from .config import Settings
from .errors import ConfigError
from .extractor import LoadedExtractor, bind, effective_params

ENTRY_POINT_GROUP = "muscat.extractors"
# The identity step: decodes, hashes the samples, and must run before anything else.
PROBE = "probe"


def _modules() -> list[ModuleType]:
    import extractors

    found = [
        importlib.import_module(f"extractors.{info.name}")
        for info in pkgutil.iter_modules(extractors.__path__)
        if not info.name.startswith("_")
    ]
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry.load()
        found.append(loaded if isinstance(loaded, ModuleType) else importlib.import_module(entry.value))
    return found


def load_extractors(settings: Settings) -> list[LoadedExtractor]:
    """All extractors with their effective parameters, probe first, then by name."""
    from . import models

    models.use(settings.models_dir)  # where model-based extractors find what `muscat models` installed
    loaded: dict[str, LoadedExtractor] = {}
    source = str(settings.config_path or "configuration")
    for module in _modules():
        declaration = bind(module)
        if declaration.name in loaded:
            other = loaded[declaration.name].module.__name__
            raise ConfigError(f"two extractors are named '{declaration.name}': {other} and {module.__name__}")
        params, enabled = effective_params(declaration, settings.extractors.get(declaration.name, {}), source)
        extractor = LoadedExtractor(declaration, module, params, enabled)
        check = getattr(module, "available", None)
        if check is not None:
            extractor.unavailable_reason = check(params)
        fingerprint = getattr(module, "weights_fingerprint", None)
        if fingerprint is not None and extractor.available:
            extractor.weights_fingerprint = fingerprint(params)
        loaded[declaration.name] = extractor
    for extractor in loaded.values():
        for needed in extractor.declaration.needs:
            other = loaded.get(needed)
            if extractor.unavailable_reason is None and (other is None or not other.runnable):
                why = "not installed" if other is None else (other.off_reason or other.unavailable_reason)
                extractor.unavailable_reason = f"needs {needed}, which cannot run ({why})"
    owners: dict[str, str] = {}
    for extractor in loaded.values():
        for output in extractor.declaration.outputs:
            if output.name in owners:
                raise ConfigError(
                    f"extractors '{owners[output.name]}' and '{extractor.name}' both declare "
                    f"the feature '{output.name}': feature names must be unique"
                )
            owners[output.name] = extractor.name
    unknown = set(settings.extractors) - set(loaded)
    if unknown:
        raise ConfigError(
            f"{source}: [extractors.{sorted(unknown)[0]}] names no extractor "
            f"(known: {', '.join(sorted(loaded))})"
        )
    if PROBE not in loaded:
        raise ConfigError("the probe extractor is missing: it is part of muscat and cannot be removed")
    if not loaded[PROBE].enabled:
        raise ConfigError(f"{source}: [extractors.probe] cannot be disabled: it identifies the audio")
    return sorted(loaded.values(), key=lambda e: (e.name != PROBE, e.name))
