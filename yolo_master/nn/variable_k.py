"""Sparsity-guided variable K (GigaMoE eq. 5), adapted from windows to images.

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
recent training images (buffers, saved with the model); at inference each image gets ``k = #thresholds below its
score``, independently of any other image in the batch.
"""

from __future__ import annotations

import torch

TOLERANCE = 1e-9  # eq. 5's bounds are products like 8 x 0.1 = 0.8000000000000002: compare with slack


def check_distribution(dist) -> tuple[float, ...]:
    """``P = (p_0, ..., p_kmax)``: at least two non-negative numbers summing to 1."""
    if not isinstance(dist, (list, tuple)) or len(dist) < 2:
        raise ValueError(f"k_dist must be a list (p_0, ..., p_kmax) of at least 2 numbers, got {dist!r}")
    if any(isinstance(p, bool) or not isinstance(p, (int, float)) or p < 0 for p in dist):
        raise ValueError(f"k_dist entries must be non-negative numbers, got {list(dist)}")
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

    The empirical quantile of the last ``len(recent)`` scores (1024 by default), not an average of
    per-batch quantiles: those are biased at the tails for small batches (a batch of 16 has no good
    estimate of its 90th percentile). The ring forgets old scores, so the thresholds follow the
    features as training changes them.
    """
    n = recent.numel()
    score = score.detach().float().flatten()[-n:]
    slots = (seen + torch.arange(score.numel(), device=score.device)) % n
    recent[slots] = score.to(recent.dtype)
    seen += score.numel()
    filled = recent[: int(min(int(seen), n))]
    thresholds.copy_(torch.quantile(filled.float(), levels.to(filled.device)).to(thresholds.dtype))
