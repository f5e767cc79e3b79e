"""The MoE auxiliary loss, added to any Ultralytics task loss in one place.

``L_total = L_task + lambda * sum_layers L_LB`` (paper section 3.5). The balancing term of every
MoE layer is collected from the layers after the forward pass (each layer hands over its pending
loss once), so detect, segment, classify, pose and OBB share this one mechanism.
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_MOE_GAIN = 0.5  # Table 8, config 1 (DFL kept, lambda 0.5); README "Training" explains the choice
LOSS_NAME = "moe_loss"


def moe_layers(model: nn.Module) -> list[nn.Module]:
    """Every module that hands over an auxiliary loss (the ``take_aux_loss`` protocol)."""
    return [m for m in model.modules() if callable(getattr(m, "take_aux_loss", None))]


def collect_aux_loss(layers: list[nn.Module]) -> tuple[torch.Tensor | None, int]:
    """Sum of the pending auxiliary losses and the batch size they were computed on."""
    total, batch = None, 0
    for layer in layers:
        loss = layer.take_aux_loss()
        if loss is not None:
            total = loss if total is None else total + loss
            routing = getattr(layer, "last_routing", None)
            batch = routing.indices.shape[0] if routing is not None else batch
    return total, batch


def moe_gain(args) -> float:
    """``lambda`` from the model's hyperparameters (a namespace while training, a dict after loading)."""
    value = args.get("moe") if isinstance(args, dict) else getattr(args, "moe", None)
    return DEFAULT_MOE_GAIN if value is None else float(value)


class MoECriterion:
    """Wraps a task criterion: same call, plus the weighted balancing loss and a ``moe_loss`` item."""

    def __init__(self, criterion, model: nn.Module, per_image: bool = True) -> None:
        self.criterion = criterion
        self.model = model
        self.per_image = per_image  # the task loss is a sum over the batch (x batch size), not a mean
        self.layers = moe_layers(model)

    def __getattr__(self, name: str):  # hyp, update(), ... of the wrapped criterion stay reachable
        if name == "criterion":
            raise AttributeError(name)
        return getattr(self.criterion, name)

    def __call__(self, preds, batch):
        loss, items = self.criterion(preds, batch)
        aux, n = collect_aux_loss(self.layers)
        if aux is None:  # no forward since the last call (e.g. a loss on cached predictions)
            aux, n = loss.new_zeros(()), 1
        weighted = moe_gain(getattr(self.model, "args", None) or {}) * aux
        return loss.sum() + weighted * (n if self.per_image else 1), {**items, LOSS_NAME: weighted.detach()}
