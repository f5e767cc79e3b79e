"""The model YAML's ``moe:`` section: routing options for every ES-MoE block, validated once.

    moe: {router: topk, shared: true, k_dist: [0.4, 0.3, 0.2, 0.1], capacity: 1.25, balance: bias}

Leaving the section out reproduces the paper's ES-MoE exactly. The parser builds one
:class:`MoEOptions` from it and passes it to each block's constructor, so a block's structure (its
router class, a shared expert) is fixed when it is built; nothing changes it afterwards.

Keys (all optional):
    router: a name in :data:`~yolo_master.nn.routers.ROUTERS` (``topk`` default; ``soft`` runs every
        expert with softmax weights, the dense baseline). ``k_dist`` selects ``variable_k``.
    shared: ``true`` adds GigaMoE's always-on shared expert, taking one of the K slots.
    k_dist: GigaMoE's ``P = (p_0, ..., p_kmax)``: sparsity-guided variable K (0..k_max experts per image).
    capacity: training capacity factor for the routed experts (e.g. 1.25).
    balance: ``loss`` (eq. 12-13 only) or ``bias`` (adds GigaMoE's loss-free bias balancing), with
        ``bias_rate`` (u_init, default 1e-2) and ``bias_decay`` (constant | linear | cosine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from .routers import ROUTERS
from .routers.topk import BIAS_DECAYS
from .routers.variable_k import check_distribution

BLOCK_ROUTERS = ("scene", "spatial")  # the routers of HiMoE and SpatialMoE, not choices for ES-MoE
SHARED_KERNEL = 3  # the shared expert's depthwise kernel: the common local pattern, the cheapest


def _positive(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@dataclass(frozen=True)
class MoEOptions:
    """Validated ``moe:`` options; the defaults are the paper's ES-MoE."""

    router: str = "topk"
    shared: bool = False
    k_dist: tuple[float, ...] | None = None
    capacity: float | None = None
    balance: str = "loss"
    bias_rate: float = 1e-2
    bias_decay: str = "constant"

    @classmethod
    def from_yaml(cls, section) -> MoEOptions:
        """Build from a YAML ``moe:`` mapping (``None``: defaults); one readable ``ValueError`` per mistake."""
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ValueError(f"model YAML 'moe:' must be a mapping of options, got {section!r}")
        keys = [f.name for f in fields(cls)]
        unknown = sorted(set(section) - set(keys))
        if unknown:
            raise ValueError(f"model YAML 'moe:' section: unknown keys {unknown} (use {', '.join(keys)})")
        return cls(**section)

    def __post_init__(self) -> None:
        where = "model YAML 'moe:"
        if self.router not in ROUTERS or self.router in BLOCK_ROUTERS:
            choices = ", ".join(r for r in ROUTERS if r not in BLOCK_ROUTERS)
            raise ValueError(f"{where} router: {self.router}': choose {choices}")
        if self.balance not in {"loss", "bias"}:
            raise ValueError(f"{where} balance: {self.balance}': choose loss or bias")
        if not _positive(self.bias_rate):
            raise ValueError(f"{where} bias_rate: {self.bias_rate}': a positive finite number, e.g. 0.01")
        if self.bias_decay not in BIAS_DECAYS:
            raise ValueError(f"{where} bias_decay: {self.bias_decay}': choose {', '.join(BIAS_DECAYS)}")
        if not isinstance(self.shared, bool):
            raise ValueError(f"{where} shared: {self.shared}': true or false")
        if self.k_dist is not None:
            try:
                object.__setattr__(self, "k_dist", check_distribution(self.k_dist))
            except ValueError as e:
                raise ValueError(f"model YAML 'moe:' {e}") from None
        if self.capacity is not None and not _positive(self.capacity):
            raise ValueError(f"{where} capacity: {self.capacity}': a positive factor, e.g. 1.25")
        if self.router == "soft" and (self.k_dist is not None or self.capacity is not None):
            raise ValueError("model YAML 'moe: router: soft' runs every expert: k_dist and capacity do not apply")

    @property
    def is_default(self) -> bool:
        """True when the section changes nothing (the paper's ES-MoE)."""
        return self == MoEOptions()

    @property
    def router_kind(self) -> str:
        """The registry name of the router to build: ``variable_k`` when ``k_dist`` is given."""
        return "variable_k" if self.k_dist is not None else self.router

    def router_kwargs(self) -> dict:
        """The options handed to the router's constructor (only those that are set)."""
        kwargs = {}
        if self.k_dist is not None:
            kwargs["k_dist"] = self.k_dist
        if self.capacity is not None:
            kwargs["capacity"] = float(self.capacity)
        if self.balance == "bias":
            kwargs["bias_rate"], kwargs["bias_decay"] = float(self.bias_rate), self.bias_decay
        return kwargs
