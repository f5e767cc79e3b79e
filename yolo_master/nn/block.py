"""What every routed block shows the rest of the package.

A routed block owns a ``router`` (``forward(x) -> Routing``) and experts; after each forward it keeps
the (detached) routing for statistics and ``routes``, and the pending auxiliary loss until the task
loss takes it. Everything outside ``nn/`` finds these blocks with :func:`moe_layers`, never by class.
"""

from __future__ import annotations

import torch
from torch import nn

from .routers.base import Routing


class Transient:
    """Per-forward state (last routing, pending auxiliary loss) that is never copied or saved.

    Ultralytics deep-copies the model for its EMA and pickles it into checkpoints; a tensor with
    autograd history cannot be deep-copied and has no business in a checkpoint. Copies and
    unpickled models start with an empty slot instead.
    """

    __slots__ = ("routing", "aux_loss")

    def __init__(self) -> None:
        self.routing: Routing | None = None
        self.aux_loss: torch.Tensor | None = None

    def __reduce__(self):
        return Transient, ()


class RoutedBlock(nn.Module):
    """Base of the per-image routed blocks (``ESMoE``, ``HiMoE``, ``FFNMoE``).

    Subclasses set ``self.router`` and call :meth:`record` once per forward. ``strategies`` lists the
    execution strategies a block accepts as its ``strategy`` attribute (empty: it has one execution).
    """

    strategies: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self._state = Transient()

    def route(self, x: torch.Tensor) -> Routing:
        """The router's decision; under the ``masked`` export strategy its TopK-free ``(B, E)`` form."""
        return self.router.masked(x) if getattr(self, "_strategy", None) == "masked" else self.router(x)

    @property
    def strategy(self) -> str:
        """How the experts run (``dispatch.py``); only blocks with ``strategies`` have one."""
        return self._strategy

    @strategy.setter
    def strategy(self, name: str) -> None:
        if name not in self.strategies:
            choices = ", ".join(self.strategies)
            raise ValueError(f"unknown {type(self).__name__} strategy {name!r}; choose one of {choices}")
        self._strategy = name

    @property
    def num_experts(self) -> int:
        return self.router.num_experts

    @property
    def top_k(self) -> int:
        return self.router.top_k

    @property
    def last_routing(self) -> Routing | None:
        """The latest forward's routing decision (detached), for statistics and inspection."""
        return self._state.routing

    def take_aux_loss(self) -> torch.Tensor | None:
        """Hand the pending auxiliary loss to the task loss, once; ``None`` if none is pending."""
        loss, self._state.aux_loss = self._state.aux_loss, None
        return loss

    def record(self, routing: Routing, aux_loss: torch.Tensor) -> None:
        """Keep this forward's routing (detached) and its auxiliary loss (with its graph)."""
        self._state.routing = routing.detached()
        self._state.aux_loss = aux_loss

    def check_finite(self, *logits: torch.Tensor) -> None:
        """Stop a diverged run with a line naming the layer.

        Only in a real training step (grad enabled): profilers feed uninitialised memory without grad,
        and eval outputs of a broken model are visibly broken anyway.
        """
        if self.training and torch.is_grad_enabled() and not all(torch.isfinite(t).all() for t in logits):
            where = f"layer {self.i} " if hasattr(self, "i") else ""
            raise FloatingPointError(
                f"{type(self).__name__} {where}got non-finite router logits (NaN/Inf): the run diverged; "
                "lower the learning rate or resume from an earlier checkpoint"
            )


def moe_layers(model: nn.Module) -> list[RoutedBlock]:
    """Every routed block of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, RoutedBlock)]


def named_moe_layers(model: nn.Module) -> dict[str, RoutedBlock]:
    """``{layer name: block}`` with Ultralytics' ``model.`` prefix removed (``'3'``, ``'8.m.0.0.mlp'``)."""
    return {name.removeprefix("model."): m for name, m in model.named_modules() if isinstance(m, RoutedBlock)}


def check_int(owner: str, name: str, value, low: int) -> int:
    """An integer ``>= low`` (not a bool), else one readable ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner} {name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{owner} {name} must be >= {low}, got {value}")
    return value


def check_shape_args(owner: str, c1, c2, reduction) -> tuple[int, int, int]:
    """``(c1, c2, reduction)`` of a routed block (``c2`` defaults to ``c1``), each a positive integer."""
    c2 = c1 if c2 is None else c2
    return check_int(owner, "c1", c1, 1), check_int(owner, "c2", c2, 1), check_int(owner, "reduction", reduction, 1)
