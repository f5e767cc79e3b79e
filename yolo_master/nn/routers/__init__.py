"""Routers: modules that map a block's input to a :class:`Routing` (``forward(x) -> Routing``).

Adding a router: write a :class:`Router` subclass in its own file here and add one line to
:data:`ROUTERS` (or call :func:`register_router` from your own code). The model YAML's
``moe: {router: NAME}`` then builds it in every ES-MoE block; safe checkpoint loading, the EMA copy
of its ``state_buffers`` and export find it through this registry.
"""

from __future__ import annotations

from .base import Router, Routing, load_balancing_loss, top_k
from .scene import SceneRouter
from .spatial import SpatialRouter
from .topk import SoftRouter, TopKRouter
from .variable_k import VariableKRouter

ROUTERS: dict[str, type[Router]] = {
    "topk": TopKRouter,
    "soft": SoftRouter,
    "variable_k": VariableKRouter,
    "scene": SceneRouter,
    "spatial": SpatialRouter,
}


def register_router(name: str, cls: type[Router]) -> type[Router]:
    """Make ``cls`` selectable as ``moe: {router: name}``; returns ``cls`` (usable as a decorator helper)."""
    if not (isinstance(cls, type) and issubclass(cls, Router)):
        raise TypeError(f"register_router('{name}', ...) needs a Router subclass, got {cls!r}")
    ROUTERS[name] = cls
    return cls


def create_router(name: str, c1: int, num_experts: int, top_k: int, reduction: int = 8, **options) -> Router:
    """Build the router registered as ``name``; ``options`` are its own keyword arguments.

    Raises:
        ValueError: unknown name, or options the router does not take (one line naming them).
    """
    if name not in ROUTERS:
        raise ValueError(f"unknown router '{name}': choose one of {', '.join(ROUTERS)}")
    try:
        return ROUTERS[name](c1, num_experts, top_k, reduction, **options)
    except TypeError as e:
        raise ValueError(f"router '{name}' does not take {sorted(options)}: {e}") from None


__all__ = (
    "ROUTERS",
    "Router",
    "Routing",
    "SceneRouter",
    "SoftRouter",
    "SpatialRouter",
    "TopKRouter",
    "VariableKRouter",
    "create_router",
    "load_balancing_loss",
    "register_router",
    "top_k",
)
