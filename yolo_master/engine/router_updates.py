"""After every optimizer step: each router's own update, and its state copied into the EMA model.

Routers declare what they keep as state (``Router.state_buffers``: selection biases, variable-K
thresholds) and what they do once per step (``Router.after_step``: loss-free balancing moves its bias
by ``u_t * sign(mean load - load_i)``, ``u_t`` decayed over training; GigaMoE, Algorithm 1). The EMA
model gets a *copy* of that state, not an average: an averaged bias or threshold would select
differently from the router it follows.
"""

from __future__ import annotations

from torch import nn

from ..nn import Router


def step_routers(model: nn.Module, ema_model: nn.Module | None, progress: float) -> None:
    """Call ``after_step(progress)`` on every router of ``model``; copy their state into ``ema_model``'s."""
    routers = [m for m in model.modules() if isinstance(m, Router)]
    for router in routers:
        router.after_step(progress)
    if ema_model is None:
        return
    ema_routers = [m for m in ema_model.modules() if isinstance(m, Router)]
    for router, ema_router in zip(routers, ema_routers):
        for name in router.state_buffers:
            getattr(ema_router, name).copy_(getattr(router, name))
