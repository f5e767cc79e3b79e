"""Inference-time folding of an ES-MoE block's BatchNorms into its convolution weights.

In eval mode every BatchNorm is a per-channel affine map, so

- each expert's BN folds into its depthwise kernel and a depthwise bias:
  ``BN_e(DW_e(x)) = DW'_e(x) + b_e``;
- the block's output norm folds into every pointwise kernel and one output bias:
  ``Norm(sum_k w_k PW_k h_k) = sum_k w_k PW'_k h_k + b``, with ``PW'_k = diag(s) PW_k``.

The export strategies run on these folded tensors. Export computes them once, before tracing
(:func:`folded_once`), so that every converter sees constant convolution weights: ONNX folds
parameter arithmetic itself, but ``torch.export`` (ExecuTorch) and x2paddle keep it as graph ops, and
runtimes then fall back to slow dynamic-weight convolutions. Only valid in eval mode.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn

from .depthwise import kernel_blocks


class FoldedExperts(NamedTuple):
    """Per-expert tensors with every BatchNorm folded in."""

    depthwise: list[torch.Tensor]  # E x (C1, 1, k_e, k_e)
    dw_bias: torch.Tensor  # (E, C1)
    pointwise: torch.Tensor  # (E, C2, C1), output norm scale folded in
    bias: torch.Tensor  # (C2,), output norm shift
    held: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per expert (dw bias, 4-D pointwise), export
    blocks: list[list[torch.Tensor] | None] | None = None  # per expert, its depthwise kernel's tiles (export)

    def kernels(self, e: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Expert ``e``'s depthwise kernel, depthwise bias and ``(C2, C1, 1, 1)`` pointwise kernel: held
        tensors during an export (no slicing op in the graph: runtimes see constant weights)."""
        if self.held is not None:
            return (self.depthwise[e], *self.held[e])
        return self.depthwise[e], self.dw_bias[e], self.pointwise[e, :, :, None, None]

    def depthwise_blocks(self, e: int) -> list[torch.Tensor] | None:
        """Expert ``e``'s depthwise kernel cut into the export's tiles (``depthwise.kernel_blocks``), held as
        constants; None where the export does not tile it."""
        return self.blocks[e] if self.blocks is not None else None

    def padded_depthwise(self, k_max: int, experts: range | None = None) -> torch.Tensor:
        """Depthwise kernels (of ``experts``, default all) zero-padded at the centre to one shape
        ``(n, C1, 1, k_max, k_max)``."""
        padded = []
        for w in self.depthwise if experts is None else [self.depthwise[e] for e in experts]:
            p = (k_max - w.shape[-1]) // 2
            padded.append(nn.functional.pad(w, (p, p, p, p)))
        return torch.stack(padded)


def scale_shift(weight, bias, mean, var, eps) -> tuple[torch.Tensor, torch.Tensor]:
    scale = weight / torch.sqrt(var + eps)
    return scale, bias - mean * scale


def fold(bank, norm: nn.BatchNorm2d) -> FoldedExperts:
    """Fold ``bank``'s per-expert BNs and the block's output ``norm`` (both in eval mode)."""
    if "folded_bias" in bank._buffers:  # fixed for an export by folded_once
        return _held(bank)
    if bank.training or norm.training:
        raise RuntimeError("BatchNorm folding uses running statistics: call .eval() first")
    return _fold(bank, norm)


def _fold(bank, norm: nn.BatchNorm2d) -> FoldedExperts:
    dw_scale, dw_bias = scale_shift(
        bank.bn_weight, bank.bn_bias, bank.bn_running_mean, bank.bn_running_var, bank.bn_eps
    )
    out_scale, out_bias = scale_shift(norm.weight, norm.bias, norm.running_mean, norm.running_var, norm.eps)
    depthwise = [bank.depthwise(e) * dw_scale[e].view(-1, 1, 1, 1) for e in range(bank.num_experts)]
    return FoldedExperts(depthwise, dw_bias, bank.pw_weight * out_scale.view(1, -1, 1), out_bias)


FOLDED = ("folded_dw_bias", "folded_pointwise", "folded_bias")  # stacked, for the gathering strategies
_PER_EXPERT = ("folded_dw", "folded_dwb", "folded_pw")


@contextmanager
def folded_once(blocks):
    """Within the block, each ES-MoE block's folded tensors are constants computed now from its weights.

    They are held as (non-persistent) buffers of the expert bank, so the exporter's copy, ``half()`` and
    ``to(device)`` carry them like any weight; ``blocks`` are routed blocks in eval mode.
    """
    banks = []
    try:
        for block in blocks:
            bank, norm = block.experts, block.norm
            if not (getattr(bank, "foldable", False) and isinstance(norm, nn.BatchNorm2d)):
                continue
            with torch.no_grad():
                folded = _fold(bank, norm)  # running statistics, whatever mode the caller's model is in
            for e in range(bank.num_experts):
                for name, t in zip(
                    _PER_EXPERT, (folded.depthwise[e], folded.dw_bias[e], folded.pointwise[e, :, :, None, None])
                ):
                    bank.register_buffer(f"{name}{e}", t.detach().clone(), persistent=False)
            for name, t in zip(FOLDED, folded[1:4]):
                bank.register_buffer(name, t.detach().clone(), persistent=False)
            for e, tiles in enumerate(_tiles(bank)):
                for name, (r0, r1, c0, c1) in tiles:
                    block = folded.depthwise[e][..., r0:r1, c0:c1].detach().clone()
                    bank.register_buffer(name, block, persistent=False)
            banks.append(bank)
        yield
    finally:
        for bank in banks:
            tiles = [name for expert in _tiles(bank) for name, _ in expert]
            for name in [*FOLDED, *(f"{n}{e}" for n in _PER_EXPERT for e in range(bank.num_experts)), *tiles]:
                bank._buffers.pop(name, None)


def _tiles(bank) -> list[list[tuple[str, tuple[int, int, int, int]]]]:
    """Per expert, its depthwise kernel's tiles as (buffer name, block of ``depthwise.kernel_blocks``); none
    for kernels within the export's tile size."""
    tile = getattr(bank, "depthwise_tile", None)
    return [
        [(f"folded_dw{e}_tile{i}", block) for i, block in enumerate(kernel_blocks(k, tile))]
        if tile and k > tile
        else []
        for e, k in enumerate(bank.kernel_sizes)
    ]


def _held(bank) -> FoldedExperts:
    b, e_all = bank._buffers, range(bank.num_experts)
    held = [(b[f"folded_dwb{e}"], b[f"folded_pw{e}"]) for e in e_all]
    blocks = [[b[name] for name, _ in tiles] or None for tiles in _tiles(bank)]
    return FoldedExperts([b[f"folded_dw{e}"] for e in e_all], *(b[name] for name in FOLDED), held, blocks)
