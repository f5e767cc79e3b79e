"""Loss-free load balancing during training (GigaMoE, Algorithm 1), adapted to ES-MoE.

GigaMoE routes tokens; we route images. Each router with ``bias_rate > 0`` keeps a per-expert
selection bias; after every optimizer step it moves by ``u_t * sign(mean load - load_i)``, the loads
being how many images chose each expert since the previous step (summed over DDP ranks). ``u_t``
starts at ``bias_rate`` and decays (constant, linear or cosine over the run). The EMA model gets a
copy of the bias, not an average: an averaged bias would select differently from the trained one.
"""

from __future__ import annotations

import math

from torch import nn

from ..nn.routing import TopKRouter


def decayed_rate(rate: float, decay: str, progress: float) -> float:
    """``u_t`` at ``progress`` in [0, 1] of training."""
    if decay == "linear":
        return rate * (1.0 - progress)
    if decay == "cosine":
        return rate * 0.5 * (1.0 + math.cos(math.pi * progress))
    return rate


def update_selection_biases(model: nn.Module, ema_model: nn.Module | None, progress: float) -> None:
    """Update every bias-balanced router of ``model`` and copy the biases into ``ema_model``."""
    routers = [m for m in model.modules() if isinstance(m, TopKRouter)]
    ema_routers = [m for m in ema_model.modules() if isinstance(m, TopKRouter)] if ema_model is not None else []
    for i, router in enumerate(routers):
        if router.bias_rate > 0:
            router.update_selection_bias(decayed_rate(router.bias_rate, router.bias_decay, min(max(progress, 0), 1)))
            if i < len(ema_routers):
                ema_routers[i].selection_bias.copy_(router.selection_bias)
