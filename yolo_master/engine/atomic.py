"""Checkpoints written atomically: a crash or a kill mid-save never leaves a half-written best.pt.

Ultralytics writes ``last.pt`` / ``best.pt`` / ``epochN.pt`` with ``Path.write_bytes``. Our trainers
give it paths of this type, whose ``write_bytes`` writes a temporary file in the same folder, syncs
it, and renames it over the target (a rename within one file system is atomic on POSIX and Windows).
"""

from __future__ import annotations

import os
from pathlib import Path


class AtomicPath(type(Path())):  # the concrete Path class of this OS (Path itself is abstract before 3.12)
    """A ``Path`` whose ``write_bytes`` replaces the file atomically; ``/`` keeps the type."""

    def write_bytes(self, data) -> int:
        tmp = self.with_name(f".{self.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                written = f.write(memoryview(data))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self)
        finally:
            if tmp.exists():
                tmp.unlink()
        return written
