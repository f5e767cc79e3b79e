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


ROUTER_STATE = ("selection_bias", "k_thresholds", "k_seen", "k_recent")  # router buffers the EMA must copy, not average


def update_selection_biases(model: nn.Module, ema_model: nn.Module | None, progress: float) -> None:
    """Update every bias-balanced router of ``model``; copy the routers' state into ``ema_model``.

    The state is the selection bias and the variable-K score thresholds (``nn/variable_k.py``):
    Ultralytics' EMA averages float buffers, which would make the EMA model select differently from
    the model it follows.
    """
    routers = [m for m in model.modules() if isinstance(m, TopKRouter)]
    ema_routers = [m for m in ema_model.modules() if isinstance(m, TopKRouter)] if ema_model is not None else []
    for router in routers:
        if router.bias_rate > 0:
            router.update_selection_bias(decayed_rate(router.bias_rate, router.bias_decay, min(max(progress, 0), 1)))
    for router, ema_router in zip(routers, ema_routers):
        for name in ROUTER_STATE:
            if hasattr(router, name) and hasattr(ema_router, name):
                getattr(ema_router, name).copy_(getattr(router, name))
