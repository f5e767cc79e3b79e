"""Sparsity-guided variable K (GigaMoE eq. 5-7), adapted from windows to images.

GigaMoE ranks the windows of a batch by a ScoreNet importance score and gives the top ``p_kmax``
fraction ``k_max`` specialised experts, the next ``p_(kmax-1)`` fraction one fewer, ... and the bottom
``p_0`` none (the shared expert alone). We route whole images and have no ScoreNet, so the score is
the share of the input's energy that is *spatial structure*:
``mean_c Var_hw(x) / mean_c E_hw[x^2]`` in [0, 1], i.e. ``mean((x - GAP(x))^2)`` (exactly the part of
the signal the gate's global average pool throws away) over ``mean(x^2)``. A flat, empty scene scores
low, a busy one high. It has no parameters, so it needs no training signal of its own, and as a ratio
it does not move when the features' overall scale does (BatchNorm's batch statistics in training vs
its running statistics at inference scale the features the score is computed on).

Training ranks the images of the batch (eq. 5). At inference a batch of one has nothing to rank
against, so training also keeps the score's quantiles at the cumulative levels of ``P`` over the most
recent training images (buffers, saved with the model); at inference each image gets ``k = #thresholds
below its score``, independently of any other image in the batch. Weights are eq. 7's ``softmax(g)_i``
over all E experts (not renormalised), the same in training and inference.
"""

from __future__ import annotations

import torch

from .base import Router, top_k
from .topk import TopKRouter

TOLERANCE = 1e-9  # eq. 5's bounds are products like 8 x 0.1 = 0.8000000000000002: compare with slack
RECENT_SCORES = 1024  # training scores kept for the inference thresholds


def check_distribution(dist) -> tuple[float, ...]:
    """``P = (p_0, ..., p_kmax)``: at least two finite non-negative numbers summing to 1."""
    import math

    if not isinstance(dist, (list, tuple)) or len(dist) < 2:
        raise ValueError(f"k_dist must be a list (p_0, ..., p_kmax) of at least 2 numbers, got {dist!r}")
    if any(isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 0 for p in dist):
        raise ValueError(f"k_dist entries must be finite non-negative numbers, got {list(dist)}")
    if abs(sum(dist) - 1) > 1e-6:
        raise ValueError(f"k_dist must sum to 1 (it is a distribution), got {list(dist)} (sum {sum(dist):.4g})")
    return tuple(float(p) for p in dist)


def complexity_score(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B,)``: spatial variance over energy, both averaged over channels."""
    x = x.float()
    return x.var(dim=(2, 3), unbiased=False).mean(dim=1) / x.square().mean(dim=(1, 2, 3)).clamp_min(1e-12)


def quantile_levels(dist: tuple[float, ...]) -> torch.Tensor:
    """Level ``c_j = p_0 + ... + p_(j-1)`` for ``j = 1..k_max``: an image gets ``>= j`` experts above it."""
    return torch.tensor(dist[:-1], dtype=torch.float64).cumsum(0).float()


def k_by_rank(score: torch.Tensor, dist: tuple[float, ...]) -> torch.Tensor:
    """Eq. 5: ``k = j`` if ``B * sum_{i>j} p_i < rank <= B * sum_{i>=j} p_i`` (rank 1 = highest score)."""
    b = score.shape[0]
    order = score.argsort(descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(1, b + 1, device=score.device)
    tails = [b * sum(dist[j:]) for j in range(1, len(dist))]  # upper rank bound for ">= j experts"
    return sum((rank <= t + TOLERANCE).long() for t in tails)


def k_by_threshold(score: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Inference: ``k = #{j : score > T_j}``, per image."""
    return (score[:, None] > thresholds[None, :]).sum(dim=1)


@torch.no_grad()
def update_thresholds(
    thresholds: torch.Tensor, seen: torch.Tensor, recent: torch.Tensor, score: torch.Tensor, levels: torch.Tensor
) -> None:
    """Add this batch's scores to the ring of ``recent`` ones and set each threshold to their quantile.

    The empirical quantile of the last ``len(recent)`` scores, not an average of per-batch quantiles:
    those are biased at the tails for small batches (a batch of 16 has no good estimate of its 90th
    percentile). The ring forgets old scores, so the thresholds follow the features as training changes them.
    """
    n = recent.numel()
    score = score.detach().float().flatten()[-n:]
    slots = (seen + torch.arange(score.numel(), device=score.device)) % n
    recent[slots] = score.to(recent.dtype)
    seen += score.numel()
    filled = recent[: int(min(int(seen), n))]
    thresholds.copy_(torch.quantile(filled.float(), levels.to(filled.device)).to(thresholds.dtype))


class VariableKRouter(TopKRouter):
    """``0..k_max`` experts per image from its complexity score, ``k_max = len(k_dist) - 1`` (``top_k``).

    Args:
        c1, num_experts, reduction, capacity, bias_rate, bias_decay: see :class:`TopKRouter`.
        k_dist: ``P = (p_0, ..., p_kmax)``; ``k_max`` must not exceed ``num_experts``.
        top_k: ignored (``k_max`` replaces it); accepted so every router has one constructor.
    """

    state_buffers = ("selection_bias", "k_thresholds", "k_seen", "k_recent")

    def __init__(
        self,
        c1: int,
        num_experts: int,
        top_k: int | None = None,
        reduction: int = 8,
        k_dist: tuple[float, ...] = (0.5, 0.5),
        capacity: float | None = None,
        bias_rate: float = 0.0,
        bias_decay: str = "constant",
    ) -> None:
        k_dist = check_distribution(k_dist)
        k_max = len(k_dist) - 1
        if k_max > num_experts:
            raise ValueError(f"k_dist allows up to {k_max} experts but the layer has E={num_experts}")
        super().__init__(c1, num_experts, k_max, reduction, capacity, bias_rate, bias_decay)
        self.k_dist = k_dist
        # Running score quantiles for inference; buffers, so saved, copied to the EMA and exported.
        self.register_buffer("k_thresholds", torch.zeros(k_max))
        self.register_buffer("k_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("k_recent", torch.zeros(RECENT_SCORES))

    @property
    def all_experts(self) -> bool:
        return False

    masked = Router.masked  # a per-image K has no TopK-free form here

    def select(self, x: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
        """``sum_j j * p_j``."""
        return float(sum(j * p for j, p in enumerate(self.k_dist)))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", k_dist={self.k_dist}"
