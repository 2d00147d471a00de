"""Finding extractors: every module in the `extractors` package, plus third-party modules
registered under the entry-point group `muscat.extractors` (as beets and sqlite-utils take
plugins). Adding an extractor is adding a module; no list elsewhere names it.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import sys
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
    for value in plugin_entry_points(ENTRY_POINT_GROUP):
        loaded = _load(value)
        found.append(loaded if isinstance(loaded, ModuleType) else importlib.import_module(value))
    return found


def plugin_entry_points(group: str) -> list[str]:
    """The values (`module` or `module:attribute`) of the entry points in `group`, found as
    `importlib.metadata.entry_points(group=...)` finds them: the `.dist-info` and `.egg-info`
    folders in each sys.path entry, the first distribution of a name winning.

    Read here directly because importing importlib.metadata (and the email package it parses
    metadata with) costs ~0.05 s of CPU, a sixth of what `muscat status` may take. Where
    something else could provide distributions (a zip on sys.path, another finder that lists
    them), importlib.metadata answers instead."""
    import importlib.machinery

    finders = [f for f in sys.meta_path if hasattr(f, "find_distributions")]
    if finders != [importlib.machinery.PathFinder]:
        return _entry_points_by_importlib(group)
    seen: set[str] = set()
    values: list[str] = []
    for entry in sys.path:
        try:
            children = os.listdir(entry or ".")
        except OSError:
            if os.path.isfile(entry):  # a zip file: importlib.metadata reads those too
                return _entry_points_by_importlib(group)
            continue
        infos: dict[str, list[str]] = {}  # importlib.metadata's Lookup: grouped by name, in listing order
        for child in children:
            low = child.lower()
            if low.endswith((".dist-info", ".egg-info")):
                name = re.sub(r"[-_.]+", "-", low.rpartition(".")[0].partition("-")[0]).replace("-", "_")
                infos.setdefault(name, []).append(os.path.join(entry, child))
        for name, folders in infos.items():
            for folder in folders:
                if name in seen:
                    continue
                seen.add(name)
                try:
                    with open(os.path.join(folder, "entry_points.txt"), encoding="utf-8") as text:
                        values.extend(_group_values(text.read(), group))
                except OSError:  # none, or an .egg-info that is a file
                    pass
    return values


def _group_values(text: str, group: str) -> list[str]:
    """The values in section [group] of an entry_points.txt (importlib.metadata's Sectioned)."""
    values, section = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == group and "=" in line:
            values.append(line.partition("=")[2].strip())
    return values


def _entry_points_by_importlib(group: str) -> list[str]:
    from importlib.metadata import entry_points

    return [entry.value for entry in entry_points(group=group)]


def _load(value: str) -> object:
    """What an entry point's value names (importlib.metadata's EntryPoint.load)."""
    module, _, attributes = value.partition("[")[0].partition(":")  # extras ([name]) select nothing here
    loaded: object = importlib.import_module(module.strip())
    for attribute in filter(None, attributes.strip().split(".")):
        loaded = getattr(loaded, attribute)
    return loaded


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
