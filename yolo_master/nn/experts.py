"""Expert bank of ES-MoE: E depthwise-separable experts with odd kernels 3, 5, 7, ... (paper eq. 3).

All experts are stored *stacked* in a few tensors, not as a ModuleList: the depthwise taps of every
expert packed side by side (``C1 x sum(k_e^2)``), a per-expert BatchNorm (``E x C1``) and one pointwise
tensor (``E x C2 x C1``). One code path serves every expert, DDP sees each tensor used whenever any
expert runs, and export strategies can gather weights by expert index. No tensor is 4-D or 5-D, so
Ultralytics' ``model.to(memory_format=torch.channels_last)`` leaves them alone.

Packing instead of zero-padding every kernel to ``k_max x k_max`` keeps the parameter count honest
and lets a 3x3 expert cost a 3x3 convolution; the export strategy that needs one weight shape for
all experts builds the zero-padded form from the folded weights (``fusion.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .depthwise import depthwise_conv2d


def default_kernel_sizes(num_experts: int) -> tuple[int, ...]:
    """Odd kernels 3, 5, 7, ... one per expert (paper section 3.2, "Diverse Receptive Fields")."""
    return tuple(3 + 2 * i for i in range(num_experts))


class ExpertBank(nn.Module):
    """E experts ``Expert_e(x) = PW_e(SiLU(BN_e(DW_e(x))))`` held as stacked tensors.

    Args:
        c1: input channels.
        c2: output channels.
        kernel_sizes: one odd kernel size per expert.
        num_shared: how many of the last experts are shared (always on, GigaMoE); the rest are routed.
        bn_eps, bn_momentum: BatchNorm settings (Ultralytics' defaults).

    Shape:
        ``expert(e, x)``: ``(N, c1, H, W) -> (N, c2, H, W)``.

    The bank has no ``forward``: which experts run, on which images, is the execution strategy's
    business (``dispatch.py``), and what that costs is ``cost.py``'s.
    """

    num_shared = 0  # class default: banks pickled before the shared expert existed load too
    fft_backward = True  # see depthwise_conv
    foldable = True  # BatchNorms fold into the export form (fusion.py); banks of other layouts say False
    depthwise_tile: int | None = None  # set for an export whose runtime is slow on large kernels (depthwise.py)

    def __init__(
        self,
        c1: int,
        c2: int,
        kernel_sizes: tuple[int, ...],
        num_shared: int = 0,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.03,
    ) -> None:
        super().__init__()
        self.c1, self.c2 = c1, c2
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.num_experts = len(self.kernel_sizes)
        self.num_shared = num_shared
        self.k_max = max(self.kernel_sizes)
        self.bn_eps, self.bn_momentum = bn_eps, bn_momentum
        e, bn_c = self.num_experts, self.bn_channels(c1, c2)
        self.offsets = [0]
        for k in self.kernel_sizes:
            self.offsets.append(self.offsets[-1] + k * k)
        self.dw_weight = nn.Parameter(torch.empty(c1, self.offsets[-1]))
        self.bn_weight = nn.Parameter(torch.ones(e, bn_c))
        self.bn_bias = nn.Parameter(torch.zeros(e, bn_c))
        self.register_buffer("bn_running_mean", torch.zeros(e, bn_c))
        self.register_buffer("bn_running_var", torch.ones(e, bn_c))
        self.pw_weight = nn.Parameter(torch.empty(e, c2, c1))
        self.reset_parameters()

    def bn_channels(self, c1: int, c2: int) -> int:
        """Channels of each expert's BatchNorm: ``c1`` here (between depthwise and pointwise)."""
        return c1

    def reset_parameters(self) -> None:
        """Initialise like ``nn.Conv2d`` per expert (depthwise fan-in is ``k * k``)."""
        with torch.no_grad():
            for e, k in enumerate(self.kernel_sizes):
                bound = 1.0 / k  # kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                self.dw_weight[:, self.offsets[e] : self.offsets[e + 1]].uniform_(-bound, bound)
                nn.init.kaiming_uniform_(self.pw_weight[e], a=math.sqrt(5))

    def depthwise(self, e: int) -> torch.Tensor:
        """Expert ``e``'s depthwise kernel, ``(C1, 1, k, k)``."""
        k = self.kernel_sizes[e]
        return self.dw_weight[:, self.offsets[e] : self.offsets[e + 1]].reshape(self.c1, 1, k, k)

    @property
    def num_routed(self) -> int:
        """Experts the router chooses among (indices ``0..num_routed - 1``); the shared ones follow."""
        return self.num_experts - self.num_shared

    def expert_params(self, e: int) -> int:
        """Trainable parameters of expert ``e``."""
        k = self.kernel_sizes[e]
        return self.c1 * k * k + 2 * self.c1 + self.c2 * self.c1

    def pixel_macs(self, e: int) -> int:
        """Multiply-accumulates of expert ``e`` per output pixel (depthwise + BN + pointwise)."""
        k = self.kernel_sizes[e]
        return self.c1 * (k * k + 2 + self.c2)

    def batch_norm(self, h: torch.Tensor, e: int) -> torch.Tensor:
        """Expert ``e``'s BatchNorm on ``h`` (batch statistics in training, running ones in eval)."""
        # A train-mode BN needs more than one value per channel; a lone 1x1 sample uses running stats.
        use_batch_stats = self.training and h.shape[0] * h.shape[2] * h.shape[3] > 1
        return F.batch_norm(
            h,
            self.bn_running_mean[e],  # views: the running-stat update writes into the stacked buffer
            self.bn_running_var[e],
            self.bn_weight[e],
            self.bn_bias[e],
            use_batch_stats,
            self.bn_momentum,
            self.bn_eps,
        )

    def depthwise_conv(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert ``e``'s depthwise convolution of ``x``; in training its backward runs as a forward
        convolution plus an FFT correlation (``depthwise.py``: the CPU training step is mostly that
        backward, and oneDNN's is slow for kernels above 3x3)."""
        return depthwise_conv2d(x, self.depthwise(e), fft_backward=self.fft_backward, tile=self.depthwise_tile)

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Run expert ``e`` on ``x`` (any batch size)."""
        h = F.silu(self.batch_norm(self.depthwise_conv(e, x), e))
        return F.conv2d(h, self.pw_weight[e, :, :, None, None])

    def extra_repr(self) -> str:
        return f"{self.c1}, {self.c2}, kernel_sizes={self.kernel_sizes}"
