"""Inference-time folding of an ES-MoE block's BatchNorms into its convolution weights.

In eval mode every BatchNorm is a per-channel affine map, so

- each expert's BN folds into its depthwise kernel and a depthwise bias:
  ``BN_e(DW_e(x)) = DW'_e(x) + b_e``;
- the block's output norm folds into every pointwise kernel and one output bias:
  ``Norm(sum_k w_k PW_k h_k) = sum_k w_k PW'_k h_k + b``, with ``PW'_k = diag(s) PW_k``.

The export strategies run on these folded tensors; traced from parameters, they become constants
(ONNX initializers) after constant folding. Only valid in eval mode (running statistics).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class FoldedExperts(NamedTuple):
    """Per-expert tensors with every BatchNorm folded in."""

    depthwise: list[torch.Tensor]  # E x (C1, 1, k_e, k_e)
    dw_bias: torch.Tensor  # (E, C1)
    pointwise: torch.Tensor  # (E, C2, C1), output norm scale folded in
    bias: torch.Tensor  # (C2,), output norm shift

    def padded_depthwise(self, k_max: int) -> torch.Tensor:
        """Depthwise kernels zero-padded at the centre to one shape ``(E, C1, 1, k_max, k_max)``."""
        padded = []
        for w in self.depthwise:
            p = (k_max - w.shape[-1]) // 2
            padded.append(nn.functional.pad(w, (p, p, p, p)))
        return torch.stack(padded)


def scale_shift(weight, bias, mean, var, eps) -> tuple[torch.Tensor, torch.Tensor]:
    scale = weight / torch.sqrt(var + eps)
    return scale, bias - mean * scale


def fold(bank, norm: nn.BatchNorm2d) -> FoldedExperts:
    """Fold ``bank``'s per-expert BNs and the block's output ``norm`` (both in eval mode)."""
    if bank.training or norm.training:
        raise RuntimeError("BatchNorm folding uses running statistics: call .eval() first")
    dw_scale, dw_bias = scale_shift(
        bank.bn_weight, bank.bn_bias, bank.bn_running_mean, bank.bn_running_var, bank.bn_eps
    )
    out_scale, out_bias = scale_shift(norm.weight, norm.bias, norm.running_mean, norm.running_var, norm.eps)
    depthwise = [bank.depthwise(e) * dw_scale[e].view(-1, 1, 1, 1) for e in range(bank.num_experts)]
    return FoldedExperts(depthwise, dw_bias, bank.pw_weight * out_scale.view(1, -1, 1), out_bias)
