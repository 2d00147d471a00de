"""blake2b, without importing hashlib: hashlib loads OpenSSL (its _hashlib module, a few ms of
CPU) for the other algorithms, and `muscat status`, `muscat sql` and a no-change rescan count
their start-up in milliseconds. hashlib.blake2b is this very function (CPython's _blake2)."""

from __future__ import annotations

try:
    from _blake2 import blake2b
except ImportError:  # an interpreter without the module
    from hashlib import blake2b

__all__ = ["blake2b"]
