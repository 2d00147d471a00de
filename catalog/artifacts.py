"""Where extractors put their files (stems, MIDI), and how they write them.

Each audio gets a folder of its own under `artifacts_dir`, named after its source file and its
id; each file is written under a hidden temporary name and renamed, so that a crash never leaves
a half file that counts (what a kill leaves behind, `muscat gc` removes: catalog/maintenance.py).
"""

from __future__ import annotations

import os
from pathlib import Path


def track_folder(artifacts_dir: str, group: str, source_path: str, audio_id: str) -> Path:
    """`<artifacts_dir>/<group>/<name>-<audio id>`, safely named after the source file."""
    import unicodedata  # not at import: the scan state's atomic write needs none of it

    stem = unicodedata.normalize("NFC", os.path.splitext(os.path.basename(source_path))[0])
    safe = "".join(c if c.isprintable() and c not in "/\\" else "_" for c in stem).lstrip(". ") or "track"
    safe = safe.encode("utf-8")[:80].decode("utf-8", "ignore")
    return Path(artifacts_dir) / group.replace("/", "_") / f"{safe}-{audio_id[:12]}"


def write_atomically(path: Path, data: bytes | bytearray | memoryview) -> None:
    """Write `data` to `path` through a temporary name; nothing is left behind on failure.

    Python's own write reports a full disk as the OSError it is (ENOSPC, EFBIG), which muscat
    recognises; encode into memory first, then call this."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
