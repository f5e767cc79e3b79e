"""What every router is: ``forward(x) -> Routing``, plus the helpers the routers share.

A router looks at a block's input and decides, per image, *which* experts run and *how much* each
one counts. The block does the rest (experts, execution strategy, norm), so a new routing rule is a
new :class:`Router` subclass and nothing else (see ``routers/__init__.py`` for the registry).

Contract of a router class:

- constructor ``(c1, num_experts, top_k, reduction=8, **options)``; ``options`` are the keys of the
  model YAML's ``moe:`` section the router understands (an unknown one is a ``TypeError``);
- ``forward(x)`` returns a :class:`Routing` whose ``indices`` / ``weights`` have ``top_k`` columns;
- ``state_buffers``: names of buffers that are router *state*, not statistics (selection biases,
  thresholds): the EMA copies them instead of averaging, and they are saved and exported as constants;
- ``expected_k()``: experts run per image on average (FLOPs, active parameters);
- ``all_experts``: True when every expert always runs (export then traces the plain static graph);
- ``after_step(progress)``: called once per optimizer step (loss-free balancing uses it).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

EPS = 1e-9  # eq. 8's epsilon: guards the renormalisation, far below float32 resolution of the weights


def is_tracing() -> bool:
    """True while a graph is being captured: the TorchScript tracer, either ONNX exporter, or
    ``torch.export`` (what the dynamo ONNX exporter, ExecuTorch and CoreML use)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or is_exporting()


def is_exporting() -> bool:
    """True while ``torch.export`` captures a graph (no host reads of tensor values, no TorchScript)."""
    check = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.5
    return bool(check and check())


def distributed() -> bool:
    """True inside a multi-process group (DDP): per-batch statistics must then span every rank."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class Routing(NamedTuple):
    """One routing decision per image.

    Attributes:
        indices: ``(B, K)`` chosen experts, highest weight first.
        weights: ``(B, K)`` their aggregation weights.
        dense: ``(B, E)`` the same weights scattered over all experts, zeros for the unchosen.
        aux_loss: scalar auxiliary loss of this batch (eq. 13's load balancing for ES-MoE).
        logits: ``(B, E)`` raw gate logits.
        dropped: fraction of this batch's assignments dropped by an expert capacity (``None``: no capacity).

    A weight of exactly 0 marks a slot that runs nothing (variable K below ``k_max``, or dropped by a
    capacity); execution strategies skip those.
    """

    indices: torch.Tensor
    weights: torch.Tensor
    dense: torch.Tensor
    aux_loss: torch.Tensor
    logits: torch.Tensor
    dropped: torch.Tensor | None = None

    def detached(self) -> Routing:
        """A copy without autograd history, safe to keep between forward passes."""
        return Routing(*(None if t is None else t.detach() for t in self))


def top_k(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest values, highest first; ties go to the lower index, on every run.

    ``torch.topk`` leaves the order of equal values unspecified; a stable sort does not. ONNX TopK
    specifies the same rule (equal values: lower index first), so while tracing for export the
    graph gets a plain TopK and agrees with eager.
    """
    if is_tracing():
        return values.topk(k, dim=-1)
    top, idx = values.sort(dim=-1, descending=True, stable=True)
    return top[..., :k], idx[..., :k]


def scatter_dense(indices: torch.Tensor, weights: torch.Tensor, num_experts: int) -> torch.Tensor:
    """``(B, K)`` chosen weights -> ``(B, E)``, zeros for the unchosen experts."""
    return weights.new_zeros(indices.shape[0], num_experts).scatter(1, indices, weights)


def load_balancing_loss(dense: torch.Tensor) -> torch.Tensor:
    """Eq. 12-13: MSE between each expert's mean share of the routing weight and the uniform ``1/E``.

    Under DDP the expectation in eq. 12 runs over the global batch: the per-expert sums and the image
    count are all-reduced with the differentiable ``all_reduce``, so every rank computes the same loss
    and, after DDP averages gradients, the gradient is that of the one global loss.
    """
    if is_tracing():  # a training-only term: kept out of exported graphs (Core ML cannot convert it, nor a
        return dense.sum() * 0.0  # constant-shaped zeros: a zero from the graph it is in)
    e = dense.shape[-1]
    share = dense / dense.sum(dim=-1, keepdim=True).clamp_min(EPS)  # the per-image fraction in eq. 12
    total, count = share.sum(dim=0), share.new_tensor(float(share.shape[0]))
    if distributed():
        from torch.distributed.nn.functional import all_reduce

        total = all_reduce(total)
        count = all_reduce(count.detach())
    usage = total / count  # mu_i, the expectation over the (global) batch
    return ((usage - 1.0 / e) ** 2).mean()


def gate_width(c1: int, reduction: int, min_hidden: int = 8) -> int:
    """``C_red = max(C / gamma, 8)`` (eq. 5)."""
    return max(c1 // reduction, min_hidden)


class Router(nn.Module):
    """Base router: the paper's gate ``GAP -> 1x1 conv (C -> C_red) -> SiLU -> 1x1 conv (C_red -> E)``.

    Subclasses turn the ``(B, E)`` logits of :meth:`gate` into a :class:`Routing` (see the module
    docstring for the contract). The gate's attribute names are part of the checkpoint format.

    Args:
        c1: input channels.
        num_experts: E, the experts this router chooses among.
        top_k: K, experts chosen per image (1 <= K <= E).
        reduction: gamma in ``C_red = max(C / gamma, 8)``.
    """

    state_buffers: tuple[str, ...] = ()

    def __init__(self, c1: int, num_experts: int, top_k: int, reduction: int = 8) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k={top_k} must be between 1 and num_experts={num_experts}")
        self.num_experts, self.top_k = num_experts, top_k
        self.build_gate(c1, reduction)

    def build_gate(self, c1: int, reduction: int) -> None:
        """The paper's gate; a router with another gate overrides this and :meth:`gate`."""
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(c1, gate_width(c1, reduction), 1)
        self.act = nn.SiLU()
        self.logits = nn.Conv2d(self.reduce.out_channels, self.num_experts, 1)

    def masked(self, x: torch.Tensor) -> Routing:
        """The decision as a ``(B, E)`` weight matrix without TopK (the ``masked`` export strategy);
        only routers that can express theirs that way override this."""
        raise ValueError(
            f"{type(self).__name__} cannot route without TopK (strategy=masked): export with strategy=dense"
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 5: ``(B, C, H, W) -> (B, E)`` logits."""
        return self.logits(self.act(self.reduce(self.pool(x)))).flatten(1)

    @property
    def all_experts(self) -> bool:
        """True when every expert always runs (nothing to select)."""
        return False

    def expected_k(self) -> float:
        """Experts run per image on average."""
        return float(self.top_k)

    def after_step(self, progress: float) -> None:
        """Once per optimizer step, ``progress`` in [0, 1] of training. Nothing by default."""

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, top_k={self.top_k}"
