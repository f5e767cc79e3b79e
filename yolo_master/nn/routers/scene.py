"""HI-MoE's scene router (section 3.3.1): which expert *groups* an image uses.

``g = softmax(W_g x_global / tau_s)`` with ``x_global`` = GAP(x) and ``W_g`` the ES-MoE gate shape;
the top ``K_s`` of the ``N_s`` groups are kept per image. The instance router inside
:class:`~yolo_master.nn.hierarchical.HiMoE` then weights experts per location within those groups.
"""

from __future__ import annotations

import torch

from .base import Router, Routing, top_k


class SceneRouter(Router):
    """Top-``K_s`` of ``N_s`` groups per image; ``dense`` is the whole scene distribution ``g``.

    Args:
        c1: input channels.
        num_experts: ``N_s``, the groups.
        top_k: ``K_s``, groups kept per image.
        reduction: gate channel reduction.
        tau: softmax temperature ``tau_s``.
    """

    def __init__(self, c1: int, num_experts: int, top_k: int, reduction: int = 8, tau: float = 1.0) -> None:
        super().__init__(c1, num_experts, top_k, reduction)
        self.tau = tau

    def forward(self, x: torch.Tensor) -> Routing:
        logits = self.gate(x)  # (B, N_s)
        g = (logits / self.tau).softmax(-1)
        _, chosen = top_k(logits, self.top_k)  # best group first
        return Routing(chosen, g.gather(1, chosen), g, logits.new_zeros(()), logits)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tau={self.tau:g}"
