"""Routers for ES-MoE: the GAP gating network (paper eq. 5), phased top-K routing (eq. 6-10) and the
MSE load-balancing loss (eq. 12-13), with the options of issue 7: GigaMoE's loss-free bias balancing
and sparsity-guided variable K (``variable_k.py``), and a hard expert capacity (``capacity.py``).

The router is its own module and *returns* everything the block and the task loss need (chosen
indices, their weights, the dense weight matrix and the auxiliary loss), like DeepSpeed's ``TopKGate``:
nothing is stored in a global registry.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .capacity import apply_capacity
from .dispatch import is_tracing
from .variable_k import complexity_score, k_by_rank, k_by_threshold, quantile_levels, update_thresholds

RECENT_SCORES = 1024  # variable K: training scores kept for the inference thresholds
EPS = 1e-9  # eq. 8's epsilon: guards the renormalisation, far below float32 resolution of the weights


class Routing(NamedTuple):
    """One routing decision per image.

    Attributes:
        indices: ``(B, K)`` chosen experts, highest weight first.
        weights: ``(B, K)`` their aggregation weights (each row sums to 1).
        dense: ``(B, E)`` the same weights scattered over all experts, zeros for the unchosen.
        aux_loss: scalar load-balancing loss of this batch (eq. 13).
        logits: ``(B, E)`` raw gate logits.
        dropped: fraction of this batch's assignments dropped by the expert capacity (``None``: no capacity).

    A weight of exactly 0 marks a slot that runs nothing (variable K below ``k_max``, or dropped by the
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
    """The k largest values, highest first; ties go to the lower expert index, on every run.

    ``torch.topk`` leaves the order of equal values unspecified; a stable sort does not. ONNX TopK
    specifies the same rule (equal values: lower index first), so while tracing for export the
    graph gets a plain TopK and agrees with eager.
    """
    if is_tracing():
        return values.topk(k, dim=-1)
    top, idx = values.sort(dim=-1, descending=True, stable=True)
    return top[..., :k], idx[..., :k]


def soft_top_k(logits: torch.Tensor, k: int, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training mode, eq. 6-8: softmax over all E, keep the top K, renormalise the kept weights.

    ``bias`` (loss-free balancing) shifts the selection only; the weights come from the logits.
    """
    probs = logits.softmax(dim=-1)  # eq. 6
    _, idx = top_k(logits if bias is None else logits + bias, k)  # I_K (eq. 7); softmax keeps the order
    top = probs.gather(-1, idx)
    return top / (top.sum(dim=-1, keepdim=True) + EPS), idx  # eq. 8


def hard_top_k(logits: torch.Tensor, k: int, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference mode, eq. 9: the top K logits (selection shifted by ``bias``), softmax over those K only."""
    _, idx = top_k(logits if bias is None else logits + bias, k)
    return logits.gather(-1, idx).softmax(dim=-1), idx


def distributed() -> bool:
    """True inside a multi-process group (DDP): per-batch statistics must then span every rank."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def load_balancing_loss(dense: torch.Tensor) -> torch.Tensor:
    """Eq. 12-13: MSE between each expert's mean share of the routing weight and the uniform ``1/E``.

    Under DDP the expectation in eq. 12 runs over the global batch: the per-expert sums and the image
    count are all-reduced with the differentiable ``all_reduce``, so every rank computes the same loss
    and, after DDP averages gradients, the gradient is that of the one global loss.
    """
    e = dense.shape[-1]
    share = dense / dense.sum(dim=-1, keepdim=True).clamp_min(EPS)  # the per-image fraction in eq. 12
    total, count = share.sum(dim=0), share.new_tensor(float(share.shape[0]))
    if distributed() and not is_tracing():
        from torch.distributed.nn.functional import all_reduce

        total = all_reduce(total)
        count = all_reduce(count.detach())
    usage = total / count  # mu_i, the expectation over the (global) batch
    return ((usage - 1.0 / e) ** 2).mean()


class TopKRouter(nn.Module):
    """GAP -> 1x1 conv (C -> C_red) -> SiLU -> 1x1 conv (C_red -> E) -> phased top-K.

    Args:
        c1: input channels.
        num_experts: E.
        top_k: K, experts chosen per image (1 <= K <= E).
        reduction: gamma in ``C_red = max(C / gamma, min_hidden)``.
        min_hidden: the floor of ``C_red`` (8 in the paper).

    Options (set by :meth:`configure`, from the model YAML's ``moe:`` section):
        k_dist: GigaMoE's ``P = (p_0..p_kmax)``: a variable number of experts per image, ``0..k_max``
            with ``k_max = len(P) - 1`` replacing K; weights are eq. 7's, ``softmax(g)_i`` over all E
            experts (not renormalised), the same in training and inference.
        capacity: training-only capacity factor (``capacity.py``).

    Shape:
        input ``(B, c1, H, W)``; every tensor of the returned :class:`Routing` has batch ``B``.
        The cost does not depend on ``H x W`` beyond the pooling.
    """

    k_dist: tuple[float, ...] | None = None  # class defaults: routers pickled before these options load too
    capacity: float | None = None

    def __init__(self, c1: int, num_experts: int, top_k: int, reduction: int = 8, min_hidden: int = 8) -> None:
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        hidden = max(c1 // reduction, min_hidden)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(c1, hidden, 1)
        self.act = nn.SiLU()
        self.logits = nn.Conv2d(hidden, num_experts, 1)
        # Loss-free balancing (GigaMoE, Algorithm 1): a per-expert bias that shifts *which* experts are
        # chosen, never their weights; updated once per optimizer step by `update_selection_bias`. Zero
        # (and so without effect) unless the model YAML enables it; saved with the model, exported as a constant.
        self.register_buffer("selection_bias", torch.zeros(num_experts))
        self.register_buffer("step_counts", torch.zeros(num_experts), persistent=False)
        self.bias_rate, self.bias_decay = 0.0, "constant"  # set from the model YAML's `moe:` section

    def configure(self, k_dist: tuple[float, ...] | None = None, capacity: float | None = None) -> None:
        """Switch on sparsity-guided variable K (``k_dist``) and / or a training capacity factor."""
        self.k_dist, self.capacity = k_dist, capacity
        if k_dist is not None:
            k_max = len(k_dist) - 1
            if k_max > self.num_experts:
                raise ValueError(f"k_dist allows up to {k_max} experts but the layer has E={self.num_experts}")
            self.top_k = k_max
            # Running score quantiles for inference (variable_k.py); buffers, so saved and exported.
            self.register_buffer("k_thresholds", torch.zeros(k_max))
            self.register_buffer("k_seen", torch.zeros((), dtype=torch.long))
            self.register_buffer("k_recent", torch.zeros(RECENT_SCORES))

    @property
    def static(self) -> bool:
        """Every expert always runs with softmax weights (K == E, fixed): no selection at all."""
        return self.top_k == self.num_experts and self.k_dist is None

    def forward(self, x: torch.Tensor) -> Routing:
        logits = self.logits(self.act(self.reduce(self.pool(x)))).flatten(1)  # eq. 5, (B, E)
        if self.static:  # eq. 8 and 9 both reduce to a softmax: no TopK in the graph
            dense = weights = logits.softmax(dim=-1)
            indices = torch.arange(self.num_experts, device=x.device).expand_as(logits)
            return Routing(indices, weights, dense, load_balancing_loss(dense), logits)
        if self.k_dist is not None:
            weights, indices = self._variable_k(x, logits)
        else:
            select = soft_top_k if self.training else hard_top_k  # eq. 10
            weights, indices = select(logits, self.top_k, self.selection_bias)
        dropped = None
        if self.training and self.capacity is not None:
            weights, dropped = apply_capacity(indices, weights, self.num_experts, self.capacity)
        if self.training and self.bias_rate > 0:  # only bias-balanced routers need the counts
            used = indices.detach()[weights.detach() != 0]
            self.step_counts += torch.bincount(used, minlength=self.num_experts).to(logits.dtype)
        dense = torch.zeros_like(logits).scatter(1, indices, weights)
        return Routing(indices, weights, dense, load_balancing_loss(dense), logits, dropped)

    def _variable_k(self, x: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GigaMoE eq. 5-7: ``k_i`` experts per image from its complexity score, eq. 7 weights."""
        score = complexity_score(x)
        if self.training:
            update_thresholds(self.k_thresholds, self.k_seen, self.k_recent, score, quantile_levels(self.k_dist))
            k = k_by_rank(score, self.k_dist)
        else:
            k = k_by_threshold(score, self.k_thresholds)
        _, indices = top_k(logits + self.selection_bias, self.top_k)
        slot = torch.arange(self.top_k, device=x.device)
        weights = logits.softmax(dim=-1).gather(-1, indices) * (slot[None, :] < k[:, None]).to(logits.dtype)
        return weights, indices

    def expected_k(self) -> float:
        """Experts run per image on average: K, or ``sum_j j * p_j`` with variable K."""
        return self.top_k if self.k_dist is None else sum(j * p for j, p in enumerate(self.k_dist))

    @torch.no_grad()
    def update_selection_bias(self, rate: float) -> None:
        """``b_i += rate * sign(mean load - load_i)`` from the choices since the last call, then reset them.

        Under DDP the counts are summed over ranks first, so every rank applies the same update.
        """
        counts = self.step_counts.clone()
        if distributed():
            torch.distributed.all_reduce(counts)
        if counts.sum() > 0:
            self.selection_bias += rate * torch.sign(counts.mean() - counts)
        self.step_counts.zero_()

    def extra_repr(self) -> str:
        extra = f", k_dist={self.k_dist}" if self.k_dist is not None else ""
        extra += f", capacity={self.capacity}" if self.capacity is not None else ""
        return f"num_experts={self.num_experts}, top_k={self.top_k}{extra}"
