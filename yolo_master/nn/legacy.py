"""Checkpoints pickled before the routers/ redesign: bring their blocks to today's structure on load.

Those blocks were configured *after* construction (an ES-MoE router with ``k_dist`` set on it, a
HiMoE with its own scene gate as an ``nn.Sequential``). Their ``__setstate__`` calls these functions,
which rebuild the parts whose class changed and copy every tensor over, so old checkpoints predict
exactly as before (``tests/test_compat.py`` holds them to the outputs the old code gave).
"""

from __future__ import annotations

from torch import nn

from .options import MoEOptions
from .routers.base import Router, gate_width
from .routers.scene import SceneRouter
from .routers.variable_k import VariableKRouter


def _reduction(conv: nn.Conv2d) -> int:
    """A ``reduction`` that gives the gate width ``conv`` has (``max(c1 // r, 8)``)."""
    c1, hidden = conv.in_channels, conv.out_channels
    for r in (max(1, c1 // hidden), *range(1, c1 + 1)):
        if gate_width(c1, r) == hidden:
            return r
    raise ValueError(f"cannot rebuild a gate of width {hidden} for {c1} channels")


def _like(new: Router, old_gate: nn.Conv2d) -> Router:
    """``new`` on the old gate's device and dtype, in its mode."""
    weight = old_gate.weight
    return new.to(device=weight.device, dtype=weight.dtype).train(old_gate.training)


def upgrade_esmoe(block: nn.Module) -> None:
    """Give an old ES-MoE block its ``options`` and, for variable K, a :class:`VariableKRouter`."""
    router = block.router
    k_dist = router.__dict__.pop("k_dist", None)
    bias_rate = float(getattr(router, "bias_rate", 0.0))
    block.options = MoEOptions(
        router="soft" if k_dist is None and router.top_k == router.num_experts else "topk",
        shared=block.experts.num_shared > 0,
        k_dist=k_dist,
        capacity=getattr(router, "capacity", None),
        balance="bias" if bias_rate > 0 else "loss",
        bias_rate=bias_rate or MoEOptions.bias_rate,
        bias_decay=getattr(router, "bias_decay", "constant"),
    )
    block.experts.__dict__.pop("expected_routed", None)  # FLOPs now come from the configuration (cost.py)
    if k_dist is not None:
        new = VariableKRouter(
            router.reduce.in_channels,
            router.num_experts,
            reduction=_reduction(router.reduce),
            k_dist=k_dist,
            capacity=block.options.capacity,
            bias_rate=bias_rate,
            bias_decay=block.options.bias_decay,
        )
        new = _like(new, router.reduce)
        new.load_state_dict(router.state_dict())
        block.router = new


def upgrade_himoe(block: nn.Module) -> None:
    """Replace an old HiMoE's ``scene`` gate by a :class:`SceneRouter` with the same weights."""
    scene = block._modules.pop("scene")
    state = block.__dict__
    reduce, logits = scene[1], scene[3]
    router = SceneRouter(
        reduce.in_channels, logits.out_channels, state.pop("group_k"), _reduction(reduce), tau=state.pop("tau_s")
    )
    router = _like(router, reduce)
    router.reduce.load_state_dict(reduce.state_dict())
    router.logits.load_state_dict(logits.state_dict())
    block.router = router
    block.instance_k = state.pop("top_k")
    block.balance_weight = state.pop("balance")
    block.diversity_weight = state.pop("diversity")
    for name in ("num_experts", "groups"):
        state.pop(name, None)
    block.experts.__dict__.pop("expected_routed", None)
