"""The v0.1 release's router (``EfficientSpatialRouter`` in github Tencent/YOLO-Master), for its exact architecture.

The gate sees a 4x-pooled map through a 3x3 convolution, not a global average: ``L = BN(W2 SiLU(BN(W1 *
pool4(x))))``, averaged over the pooled map into E logits; ``p = softmax(logits)``, the top K kept and
renormalised as ``w = v / (sum v + 1e-6)``, in training and inference alike. ``pool4`` is a 4x4 average
pool with stride 4 that drops trailing rows and columns, applied only when both sides exceed 4. The
release adds noise to the logits in training; we do not (fine-tuning works without it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Router, Routing, gate_width, load_balancing_loss, scatter_dense, top_k

POOL = 4
EPS = 1e-6  # the release's renormalisation epsilon: its weights sum to slightly under 1


class SpatialRouter(Router):
    """Top-K of E from a pooled 3x3 convolutional gate (v0.1 release)."""

    def build_gate(self, c1: int, reduction: int) -> None:
        hidden = gate_width(c1, reduction)
        self.router = nn.Sequential(
            nn.Conv2d(c1, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.SiLU(),
            nn.Conv2d(hidden, self.num_experts, 1, bias=False),
            nn.BatchNorm2d(self.num_experts),
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] > POOL and x.shape[3] > POOL:
            x = F.avg_pool2d(x, POOL, POOL)
        return self.router(x).mean((2, 3))

    def forward(self, x: torch.Tensor) -> Routing:
        logits = self.gate(x)
        top, indices = top_k(logits.softmax(-1), self.top_k)
        weights = top / (top.sum(-1, keepdim=True) + EPS)
        dense = scatter_dense(indices, weights, self.num_experts)
        return Routing(indices, weights, dense, load_balancing_loss(dense), logits)
