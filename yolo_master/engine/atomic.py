"""Files written atomically: a crash or a kill mid-write never leaves a half-written file.

The bytes go to a temporary file in the same folder, are synced, and the temporary file is renamed
over the target (a rename within one file system is atomic on POSIX and Windows).
"""

from __future__ import annotations

import os
from pathlib import Path


def replace_atomically(source: str | Path, target: str | Path) -> None:
    """Sync ``source`` to disk, then rename it over ``target``."""
    with open(source, "rb") as f:
        os.fsync(f.fileno())
    os.replace(source, target)


def write_atomically(path: str | Path, data: bytes) -> int:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one; returns the size."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            written = f.write(memoryview(data))
        replace_atomically(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return written
