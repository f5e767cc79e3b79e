"""Expert capacity for per-image routing (the rho paper's top-k with hard capacity), training only.

Each expert accepts at most ``C = ceil(capacity_factor * B * K / E)`` images per batch. Assignments
are served in priority order, every image's first choice before any second choice (as GShard and
Switch do), and within a slot in batch order. An assignment over capacity is *dropped*: its weight
becomes 0, the expert does not run for that image, and the image keeps whatever else it has, the
shared expert and the block's residual shortcut. The kept weights are not renormalised, so a dropped
image's routed contribution is visibly smaller instead of silently reassigned.

Only training applies it: a capacity couples the images of a batch, and inference must give an image
the same result alone or in a batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def apply_capacity(
    indices: torch.Tensor, weights: torch.Tensor, num_experts: int, factor: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weights with dropped assignments zeroed, dropped fraction)``; zero-weight slots never count."""
    b, k = indices.shape
    capacity = math.ceil(factor * b * k / num_experts)
    active = weights != 0  # variable K leaves unused slots at weight 0
    one_hot = F.one_hot(indices.t(), num_experts) * active.t().unsqueeze(-1)  # (K, B, E), slot-major priority
    position = one_hot.reshape(k * b, num_experts).cumsum(0).reshape(k, b, num_experts)
    over = ((position > capacity) & one_hot.bool()).any(-1).t()  # (B, K)
    dropped = over.sum().float() / active.sum().clamp_min(1).float()
    return weights.masked_fill(over, 0.0), dropped
