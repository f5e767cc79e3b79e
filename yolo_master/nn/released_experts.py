"""Expert banks of the official YOLO-Master releases (github Tencent/YOLO-Master), for their exact architectures.

Stacked like :class:`~yolo_master.nn.experts.ExpertBank` (one tensor per kind of weight, no ModuleList),
so every eager execution strategy (``dispatch.py``: ``select``, ``grouped``, ``dense``) runs them through
``expert(e, x)``. Their BatchNorms do not fold into ES-MoE's export form, so export traces them with the
unfolded graph strategy (``dispatch.run_unfolded``).

- :class:`PostNormExpertBank`: the v0 ES-MoE expert ``SiLU(BN(PW(DW_k(x))))`` (one BN, over the
  output channels, after the pointwise convolution; ours puts it between depthwise and pointwise).
- :class:`MLPExpertBank`: the v0.1 expert ``BN(PW2(SiLU(BN(PW1(x)))))``, two 1x1 convolutions through
  ``2 * c1`` hidden channels, no activation at the end.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .experts import ExpertBank


class PostNormExpertBank(ExpertBank):
    """E experts ``SiLU(BN_e(PW_e(DW_e(x))))`` (v0 ``EfficientExpertGroup``); BN over ``c2`` channels."""

    foldable = False

    def bn_channels(self, c1: int, c2: int) -> int:
        return c2

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        h = self.depthwise_conv(e, x)
        return F.silu(self.batch_norm(F.conv2d(h, self.pw_weight[e, :, :, None, None]), e))

    def pixel_macs(self, e: int) -> int:
        k = self.kernel_sizes[e]
        return self.c1 * k * k + self.c1 * self.c2 + 2 * self.c2

    def expert_params(self, e: int) -> int:
        k = self.kernel_sizes[e]
        return self.c1 * k * k + self.c2 * self.c1 + 2 * self.c2


class MLPExpertBank(nn.Module):
    """E experts ``BN2_e(W2_e SiLU(BN1_e(W1_e x)))``, 1x1 convolutions, hidden ``2 * c1`` (v0.1 ``SimpleExpert``).

    Shape:
        ``expert(e, x)``: ``(N, c1, H, W) -> (N, c2, H, W)``.
    """

    foldable = False
    num_shared = 0

    def __init__(self, c1: int, c2: int, num_experts: int, bn_eps: float = 1e-3, bn_momentum: float = 0.03) -> None:
        super().__init__()
        self.c1, self.c2, self.num_experts, self.hidden = c1, c2, num_experts, 2 * c1
        self.bn_eps, self.bn_momentum = bn_eps, bn_momentum
        e, h = num_experts, self.hidden
        self.w1 = nn.Parameter(torch.empty(e, h, c1))
        self.bn1_weight, self.bn1_bias = nn.Parameter(torch.ones(e, h)), nn.Parameter(torch.zeros(e, h))
        self.register_buffer("bn1_running_mean", torch.zeros(e, h))
        self.register_buffer("bn1_running_var", torch.ones(e, h))
        self.w2 = nn.Parameter(torch.empty(e, c2, h))
        self.bn2_weight, self.bn2_bias = nn.Parameter(torch.ones(e, c2)), nn.Parameter(torch.zeros(e, c2))
        self.register_buffer("bn2_running_mean", torch.zeros(e, c2))
        self.register_buffer("bn2_running_var", torch.ones(e, c2))
        with torch.no_grad():
            for i in range(e):
                nn.init.kaiming_uniform_(self.w1[i], a=math.sqrt(5))
                nn.init.kaiming_uniform_(self.w2[i], a=math.sqrt(5))

    @property
    def num_routed(self) -> int:
        return self.num_experts

    def _bn(self, h: torch.Tensor, e: int, which: str) -> torch.Tensor:
        stats = h.shape[0] * h.shape[2] * h.shape[3] > 1
        mean, var = getattr(self, f"{which}_running_mean")[e], getattr(self, f"{which}_running_var")[e]
        weight, bias = getattr(self, f"{which}_weight")[e], getattr(self, f"{which}_bias")[e]
        return F.batch_norm(h, mean, var, weight, bias, self.training and stats, self.bn_momentum, self.bn_eps)

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self._bn(F.conv2d(x, self.w1[e, :, :, None, None]), e, "bn1"))
        return self._bn(F.conv2d(h, self.w2[e, :, :, None, None]), e, "bn2")

    def pixel_macs(self, e: int) -> int:
        return self.c1 * self.hidden + 2 * self.hidden + self.hidden * self.c2 + 2 * self.c2

    def expert_params(self, e: int) -> int:
        return self.c1 * self.hidden + 2 * self.hidden + self.hidden * self.c2 + 2 * self.c2

    def extra_repr(self) -> str:
        return f"{self.c1}, {self.c2}, num_experts={self.num_experts}, hidden={self.hidden}"
