"""Run ``yolo-master`` and send itself a signal mid-training, as a user's Ctrl-C or the OOM killer would.

    python tests/kill_at.py SIGKILL EPOCH BATCH train model=... data=...

EPOCH is 0-based; the signal arrives after BATCH batches of that epoch. Used by test_interruption.py.
"""

from __future__ import annotations

import os
import signal
import sys

from yolo_master.cli import main
from yolo_master.engine.trainer import MoETrainerMixin


def install(sig: int, epoch: int, batch: int) -> None:
    seen = {"batches": 0}
    original = MoETrainerMixin.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)

        def on_batch_end(trainer):
            if trainer.epoch == epoch:
                seen["batches"] += 1
                if seen["batches"] == batch:
                    os.kill(os.getpid(), sig)

        self.add_callback("on_train_batch_end", on_batch_end)

    MoETrainerMixin.__init__ = init


if __name__ == "__main__":
    # A terminal's Ctrl-C: Python's own handler, even when this runs under a background job (`cmd &`),
    # which starts with SIGINT ignored and would make the signal a no-op.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    install(getattr(signal, sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
    sys.exit(main(sys.argv[4:]))
