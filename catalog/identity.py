"""Content fingerprints used to recognise the same file under another path."""

from __future__ import annotations

import hashlib
import os

MIB = 1 << 20


def head_tail_hash(path: str | bytes, size: int | None = None) -> str:
    """blake2b-128 of the first and last MiB (the whole file when smaller than 2 MiB).

    Cheap enough to compute for move candidates only, and strong enough to tell two files of
    the same size apart: the size is part of what gets compared.
    """
    with open(path, "rb") as f:
        if size is None:
            size = os.fstat(f.fileno()).st_size
        digest = hashlib.blake2b(digest_size=16)
        if size <= 2 * MIB:
            digest.update(f.read())
        else:
            digest.update(f.read(MIB))
            f.seek(size - MIB)
            digest.update(f.read(MIB))
    return digest.hexdigest()
