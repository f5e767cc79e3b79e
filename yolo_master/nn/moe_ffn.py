"""FFN Mixture-of-Experts for MoE-tuning (Dynamic-DINO, section 3.2-3.3 and Algorithm 1).

A pre-trained 1x1 FFN ``Conv(c, H, 1) -> Conv(H, c, 1, act=False)`` (YOLO12's ``ABlock.mlp``, YOLO11's
``PSABlock.ffn``) is copied N times (supernet expansion) and the hidden layer of each copy is cut into
k partitions of width ``H / k`` (granularity decomposition): ``E = k x N`` experts, ``K = k`` chosen per
image, so the active hidden width is ``H``, as in the dense FFN.

Weight allocation (eq. 5-8): expert ``n * k + j`` holds rows ``j`` of ``W1`` / ``b1`` and columns ``j`` of
``W2``; the k partitions of one copy sum to the dense FFN (eq. 9). The paper splits the output bias
as ``b2 / k``; here the down-projection has no bias, its BatchNorm stays outside the experts and runs
once on the aggregated output, so nothing needs splitting. The hidden BatchNorm is folded into
``W1`` / ``b1`` (exact in eval mode; in training the hidden layer then keeps the pre-trained
statistics instead of re-estimating them per expert on whichever images routed there).

Router (Fig. 5): the last gate layer holds N random centroids, each repeated k times, so the k
partitions of one copy tie for the highest logit. Our routers renormalise the chosen weights to sum
to 1 (eq. 8-9) where the paper sums the chosen experts unweighted (eq. 3); the aggregate is therefore
multiplied by K: ``Norm(K * sum_k w_k E_k(x))``, which is the paper's sum when the weights tie at 1/K
and keeps the gate differentiable. The experts keep the dense weights unscaled, so the optimiser sees
the dense model's parameter scale. Ties go to the lower expert index (``routing.top_k``; ONNX TopK
has the same rule), and the k tied replicas are adjacent, so at step 0 an image always gets all k
partitions of one copy: the dense FFN.

Routing is per image (GAP of the input, the ES-MoE gate), not per location as in the paper: the k
chosen partitions are then one dense FFN of width H per image, computed as two batched MatMuls on the
gathered weight rows. Active parameters and FLOPs equal the dense FFN's (plus the small gate), in
training, eager inference and the exported graph (TopK + Gather + MatMul: no Loop, If or NonZero).
Per-location routing would need every expert on every pixel (E / K times the FLOPs) or a token
gather / scatter with data-dependent shapes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .block import RoutedBlock
from .fusion import scale_shift
from .routers import TopKRouter


def check_expansion(copies, split, hidden: int | None = None) -> tuple[int, int]:
    """Validate N (``copies``, the CLI's and YAML's ``experts``) and k (``split``); one readable ``ValueError``."""
    for name, value in (("experts", copies), ("split", split)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if hidden is not None and hidden % split:
        raise ValueError(f"split={split} must divide the FFN hidden width {hidden} (each expert gets hidden / split)")
    return copies, split


class FFNExpertBank(nn.Module):
    """E experts ``E_e(x) = W2_e SiLU(W1_e x + b1_e)`` (1x1, every location), held as stacked tensors.

    Args:
        c: input and output channels.
        hidden: hidden width of one expert (``H / k``).
        num_experts: E.

    Shape:
        ``forward(x, indices, weights)``: ``(B, c, H, W)``, ``(B, K)``, ``(B, K)`` -> ``(B, c, H, W)``, the
        weighted sum of each image's K chosen experts.
    """

    def __init__(self, c: int, hidden: int, num_experts: int) -> None:
        super().__init__()
        self.c, self.hidden, self.num_experts = c, hidden, num_experts
        self.w1 = nn.Parameter(torch.empty(num_experts, hidden, c))
        self.b1 = nn.Parameter(torch.zeros(num_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, c, hidden))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise every expert like a pair of ``nn.Conv2d`` 1x1 layers."""
        with torch.no_grad():
            for e in range(self.num_experts):
                nn.init.kaiming_uniform_(self.w1[e], a=math.sqrt(5))
                nn.init.kaiming_uniform_(self.w2[e], a=math.sqrt(5))

    def expert_params(self) -> int:
        """Trainable parameters of one expert."""
        return 2 * self.c * self.hidden + self.hidden

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert ``e`` on ``x``, the plain way (the reference the tests hold the gathered path to)."""
        h = F.silu(F.conv2d(x, self.w1[e, :, :, None, None], self.b1[e]))
        return F.conv2d(h, self.w2[e, :, :, None, None])

    def forward(self, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Gather each image's K experts into one FFN of width ``K * hidden``; two batched MatMuls."""
        b, c, h, w = x.shape
        k = indices.shape[1]
        idx = indices.reshape(-1)
        w1 = self.w1.index_select(0, idx).reshape(b, k * self.hidden, c)
        b1 = self.b1.index_select(0, idx).reshape(b, k * self.hidden, 1)
        w2 = self.w2.index_select(0, idx).reshape(b, k, c, self.hidden) * weights.reshape(b, k, 1, 1).to(x.dtype)
        w2 = w2.permute(0, 2, 1, 3).reshape(b, c, k * self.hidden)
        hidden = F.silu(torch.matmul(w1, x.reshape(b, c, h * w)) + b1)
        return torch.matmul(w2, hidden).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"{self.c}, hidden={self.hidden}, num_experts={self.num_experts}"


class FFNMoE(RoutedBlock):
    """A dense 1x1 FFN upcycled into ``copies x split`` experts, ``split`` of them routed per image.

    ``Y = Norm(K * sum_{i in T_K} w_i E_i(X))``; build it from a trained FFN with :meth:`from_dense`.

    Args:
        c: input and output channels.
        hidden: hidden width H of the dense FFN (``split`` must divide it).
        copies: N, copies of the dense FFN (the CLI's ``experts=``).
        split: k, partitions of each copy's hidden layer; also the number of experts chosen per image.
        reduction: gating channel reduction (as in ES-MoE).

    ``num_experts`` is therefore ``copies * split`` and ``top_k`` is ``split``.

    Shape:
        ``(B, c, H, W) -> (B, c, H, W)``; one routing decision per image.
    """

    def __init__(self, c: int, hidden: int, copies: int = 4, split: int = 2, reduction: int = 8) -> None:
        super().__init__()
        check_expansion(copies, split, hidden)
        self.c, self.copies, self.split = c, copies, split
        self.router = TopKRouter(c, copies * split, split, reduction)
        self.experts = FFNExpertBank(c, hidden // split, copies * split)
        self.norm = nn.BatchNorm2d(c)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "copies" not in self.__dict__:  # pickled when the attribute was called experts_per_split
            self.copies = self.__dict__.pop("experts_per_split")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routing = self.router(x)
        self.record(routing, routing.aux_loss)
        return self.norm(self.experts(x, routing.indices, routing.weights * self.top_k))

    @classmethod
    def from_dense(cls, ffn: nn.Sequential, copies: int, split: int, reduction: int = 8) -> FFNMoE:
        """Upcycle a trained ``Conv(c, H, 1) -> Conv(H, c, 1, act=False)`` FFN (eval-mode statistics)."""
        up, down = ffn[0], ffn[1]
        c, hidden = up.conv.in_channels, up.conv.out_channels
        block = cls(c, hidden, copies, split, reduction).to(up.conv.weight.device)
        n, k, h = copies, split, hidden // split
        with torch.no_grad():
            bn = up.bn
            scale, shift = scale_shift(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
            w1 = up.conv.weight.flatten(1).float() * scale.float()[:, None]  # hidden BN folded in
            b1 = shift.float()
            w2 = down.conv.weight.flatten(1).float()  # (c, H)
            bank = block.experts
            bank.w1.copy_(w1.reshape(k, h, c).repeat(n, 1, 1))  # expert n*k + j = partition j (eq. 5)
            bank.b1.copy_(b1.reshape(k, h).repeat(n, 1))  # eq. 6
            bank.w2.copy_(w2.reshape(c, k, h).permute(1, 0, 2).repeat(n, 1, 1))  # eq. 7
            block.norm.load_state_dict(down.bn.state_dict())  # eq. 8's bias lives in the norm, applied once
            block.norm.eps, block.norm.momentum = down.bn.eps, down.bn.momentum
            gate = block.router.logits
            gate.weight.copy_(gate.weight[:n].repeat_interleave(k, dim=0))  # N centroids, each k times
            gate.bias.copy_(gate.bias[:n].repeat_interleave(k, dim=0))
        return block

    def extra_repr(self) -> str:
        return (
            f"{self.c}, hidden={self.experts.hidden * self.split}, copies={self.copies}, "
            f"split={self.split} ({self.num_experts} experts, top-{self.top_k})"
        )
