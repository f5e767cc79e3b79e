"""Training hyperparameters YOLO-Master adds to Ultralytics' ``default.yaml``.

Ultralytics rejects keys it does not know, so our trainers take these out of the overrides before
Ultralytics validates them, check them here, and put them back on ``trainer.args`` where the loss
reads them. Validators never see them (``integration.runtime.hidden_keys``).
"""

from __future__ import annotations

import math

from ..models.moe_loss import DEFAULT_MOE_GAIN

EXTRA_HYP = {"moe": DEFAULT_MOE_GAIN}  # name -> default
MAX_GAIN = 100.0  # far above any useful weight; larger values swamp the task loss (or overflow)


def pop_extra_hyp(overrides: dict) -> dict:
    """Remove and validate our keys from ``overrides``; return the ones that were given."""
    extra = {}
    for key, default in EXTRA_HYP.items():
        raw = overrides.pop(key, None)
        if raw is None:
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise TypeError(f"'{key}={raw}' must be a number, e.g. '{key}={default}'") from None
        if value < 0:
            raise ValueError(f"'{key}={raw}' must be >= 0 (0 turns the MoE balancing loss off)")
        if not math.isfinite(value) or value > MAX_GAIN:
            raise ValueError(f"'{key}={raw}' must be a finite number up to {MAX_GAIN:g} (the paper uses 0.5-1.5)")
        extra[key] = value
    return extra


def apply_extra_hyp(args, given: dict) -> None:
    """Set our keys on ``args``: given values win, then what ``args`` already has (a resumed run's
    checkpoint), then the defaults."""
    for key, default in EXTRA_HYP.items():
        if key in given:
            setattr(args, key, given[key])
        elif getattr(args, key, None) is None:
            setattr(args, key, default)
