"""The MoE auxiliary loss, added to any Ultralytics task loss in one place.

``L_total = L_task + lambda * sum_layers L_LB`` (paper section 3.5). The balancing term of every
routed layer is collected after the forward pass (each layer hands over its pending loss once), so
detect, segment, classify, pose and OBB share this one mechanism (``tasks.py`` calls it from ``loss``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import moe_layers

DEFAULT_MOE_GAIN = 0.5  # Table 8, config 1 (DFL kept, lambda 0.5); README "Training" explains the choice
LOSS_NAME = "moe_loss"


def collect_aux_loss(layers: list[nn.Module]) -> tuple[torch.Tensor | None, int]:
    """Sum of the pending auxiliary losses and the batch size they were computed on."""
    total, batch = None, 0
    for layer in layers:
        loss = layer.take_aux_loss()
        if loss is not None:
            total = loss if total is None else total + loss
            routing = layer.last_routing
            batch = routing.indices.shape[0] if routing is not None else batch
    return total, batch


def moe_gain(args) -> float:
    """``lambda`` from the model's hyperparameters (a namespace while training, a dict after loading)."""
    value = args.get("moe") if isinstance(args, dict) else getattr(args, "moe", None)
    return DEFAULT_MOE_GAIN if value is None else float(value)


def add_moe_loss(model: nn.Module, loss: torch.Tensor, items: dict, per_image: bool) -> tuple[torch.Tensor, dict]:
    """``loss + lambda * aux`` (times the batch size when the task loss is a sum over images) and a
    ``moe_loss`` item; with no forward since the last call, the term is zero."""
    aux, n = collect_aux_loss(moe_layers(model))
    if aux is None:  # e.g. a loss on cached predictions
        aux, n = loss.new_zeros(()), 1
    weighted = moe_gain(getattr(model, "args", None) or {}) * aux
    return loss.sum() + weighted * (n if per_image else 1), {**items, LOSS_NAME: weighted.detach()}
