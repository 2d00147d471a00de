"""`essentia.standard` without the cost of making all of Essentia's algorithms at import.

`import essentia.standard` makes a Python class for each of Essentia's ~290 algorithms, and to
make one it instantiates the C++ algorithm to read its documentation: 1.6 s of CPU (0.3 s here), in
every worker before its first file, though the CPU set uses a dozen of them. `load()` imports the
same module with Essentia's own class factory (`_create_essentia_class`) left to make each class
when it is first asked for (a module `__getattr__`, PEP 562). The classes are Essentia's, made by
Essentia's code; only the moment each is made changes. `import essentia.standard as es` anywhere
after `load()` gets this module, so extractors keep their plain imports.

FrameCutter is made at import: essentia.standard's Python algorithms (FrameGenerator) read its
parameters then. tests/test_startup.py checks that every algorithm is there and computes as the
eagerly imported module's does.
"""

from __future__ import annotations

import sys
from types import ModuleType

MADE_AT_IMPORT = ["FrameCutter"]


def load() -> ModuleType:
    """`essentia.standard`, imported (once per process) with its algorithms made on demand."""
    if "essentia.standard" in sys.modules:  # imported already, eagerly or by an earlier load()
        return sys.modules["essentia.standard"]
    from essentia import _essentia

    every_name = _essentia.keys
    _essentia.keys = lambda: list(MADE_AT_IMPORT)  # what its import-time loop makes
    try:
        import essentia.standard as standard
    finally:
        _essentia.keys = every_name
    standard.algorithmNames = every_name  # its public alias of the list, bound during the import
    names = frozenset(every_name())

    def make_on_first_use(name: str) -> type:
        if name in names:
            return standard._create_essentia_class(name)  # sets the module attribute too
        raise AttributeError(f"module 'essentia.standard' has no attribute {name!r}")

    standard.__getattr__ = make_on_first_use  # type: ignore[attr-defined]
    return standard
