"""Classes that only checkpoints written before the routers/ redesign name.

Those checkpoints can hold a ``yolo_master.models.moe_loss.MoECriterion`` (a criterion wrapper the
models used to build); today the task models add the MoE term in ``loss`` and rebuild their criterion,
so an unpickled wrapper is dropped on load (``tasks.MoEModelMixin.__setstate__``).
"""

from __future__ import annotations


class MoECriterion:
    """Inert stand-in for the old criterion wrapper; only ever unpickled, then discarded."""

    def __call__(self, *args, **kwargs):
        raise RuntimeError("a criterion from an old checkpoint: the model rebuilds its own")
