"""Training hyperparameters YOLO-Master adds to Ultralytics' ``default.yaml``.

Ultralytics rejects keys it does not know, so our trainers take these out of the overrides before
Ultralytics validates them, check them here, and put them back on ``trainer.args`` where the loss
reads them. Validators never see them.
"""

from __future__ import annotations

from contextlib import contextmanager

from ..models.moe_loss import DEFAULT_MOE_GAIN

EXTRA_HYP = {"moe": DEFAULT_MOE_GAIN}  # name -> default


def pop_extra_hyp(overrides: dict) -> dict:
    """Remove and validate our keys from ``overrides``; return them with defaults filled in."""
    extra = {}
    for key, default in EXTRA_HYP.items():
        value = overrides.pop(key, None)
        if value is None:
            value = default
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"'{key}={value}' must be a number, e.g. '{key}={default}'") from None
        if value < 0:
            raise ValueError(f"'{key}={value}' must be >= 0 (0 turns the MoE balancing loss off)")
        extra[key] = value
    return extra


@contextmanager
def without_extra_hyp(args):
    """Temporarily hide our keys from ``args`` (for code that re-validates args against the defaults)."""
    saved = {k: args.__dict__.pop(k) for k in EXTRA_HYP if k in args.__dict__}
    try:
        yield args
    finally:
        args.__dict__.update(saved)
