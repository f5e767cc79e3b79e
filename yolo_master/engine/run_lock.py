"""One training at a time per run folder: a second run into a folder in use refuses, naming the holder.

Two runs started into the same folder (``name=x exist_ok=True``) would both write ``last.pt`` /
``best.pt`` and interleave ``results.csv``. The lock is a file ``.lock`` holding the owner's process
id, created exclusively; a lock whose process is gone (a killed run) is taken over with a warning.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

NAME = ".lock"


class RunFolderBusy(ValueError):
    """Another running process writes to this run folder (exit status 2: choose another ``name=``)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class RunLock:
    """``acquire()`` before writing into ``folder``; released at exit (or by :meth:`release`)."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / NAME

    def holder(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (FileNotFoundError, ValueError):
            return None

    def acquire(self) -> None:
        from ultralytics.utils import LOGGER

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pid = self.holder()
                if pid == os.getpid():
                    return  # ours already (a trainer built twice in one process)
                if pid is not None and _alive(pid):
                    raise RunFolderBusy(
                        f"run folder {self.path.parent} is in use by process {pid} (another training writes to it): "
                        "choose another name=, or wait for it to finish"
                    ) from None
                LOGGER.warning(f"{self.path}: left by process {pid}, which is no longer running; taking it over")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            atexit.register(self.release)
            return
        raise RunFolderBusy(f"could not lock run folder {self.path.parent}: another run keeps taking it")

    def release(self, *args) -> None:
        if self.holder() == os.getpid():
            self.path.unlink(missing_ok=True)
