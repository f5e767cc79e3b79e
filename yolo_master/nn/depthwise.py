"""Depthwise "same" convolution whose training backward is fast on the CPU.

PyTorch's CPU backward of a depthwise convolution (oneDNN) is slow for kernels above 3x3: at batch 8,
64 x 80 x 80, the 9x9 backward takes ~30x the forward, and the training step of an ES-MoE model is
mostly that backward (its experts are 5x5 .. 9x9 depthwise convolutions). Its two halves are:

- the input gradient, a depthwise convolution of the output gradient with the flipped kernel: a
  *forward* convolution, as fast as the forward pass;
- the weight gradient, for each channel the cross-correlation of the input with the output gradient at
  the ``k x k`` lags around zero, summed over the batch: here computed with real FFTs (one transform of
  the input, one of the gradient, a product summed over the batch, one inverse per channel).

Same function, float32 rounding differs (relative ~1e-6 of the gradient's range; tested against
``F.conv2d``'s own backward). Used only where it pays: CPU, float32/float64, kernels of 5 and above,
autograd recording, no graph being traced; everything else is plain ``F.conv2d``.

For export to runtimes that are slow on large depthwise kernels, ``tile`` writes a ``k x k`` kernel as
a sum of convolutions with kernels of at most ``tile x tile`` (``tiled_depthwise_conv2d``): LiteRT's
XNNPACK delegate ran a 7x7 depthwise convolution 15x slower than torch, and the same 7x7 as four
pieces of at most 5x5 3x faster than itself (``scripts/litert_depthwise.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .routers.base import is_tracing

FFT_MIN_KERNEL = 5  # a 3x3 depthwise backward is already fast in oneDNN


def depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    fft_backward: bool = True,
    bias: torch.Tensor | None = None,
    tile: int | None = None,
    blocks: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=k // 2, groups=C)`` for a ``(C, 1, k, k)`` odd kernel.

    With ``fft_backward`` (and where it pays, see the module docstring) the backward pass runs as a
    forward convolution plus an FFT cross-correlation instead of oneDNN's depthwise backward. With
    ``tile`` (export only) a kernel larger than ``tile`` runs as :func:`tiled_depthwise_conv2d`.
    """
    k = weight.shape[-1]
    if tile and k > tile:
        return tiled_depthwise_conv2d(x, weight, bias, tile, blocks)
    if fft_backward and bias is None and _pays(x, weight):
        return _FFTBackwardDepthwise.apply(x, weight)
    return F.conv2d(x, weight, bias, padding=k // 2, groups=weight.shape[0])


def kernel_blocks(k: int, tile: int) -> list[tuple[int, int, int, int]]:
    """The ``(r0, r1, c0, c1)`` blocks of a ``k x k`` kernel cut into ``tile x tile`` ones (smaller at the
    far edges), row by row."""
    spans = [(a, min(a + tile, k)) for a in range(0, k, tile)]
    return [(r0, r1, c0, c1) for r0, r1 in spans for c0, c1 in spans]


def tiled_depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    tile: int = 5,
    blocks: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The "same" depthwise convolution by a ``(C, 1, k, k)`` kernel, written as a sum of convolutions by
    its :func:`kernel_blocks`.

    ``x`` is padded once by ``k // 2``; the block at rows ``r0..r1`` and columns ``c0..c1`` of the
    kernel is a "valid" convolution of the padded input shifted by ``(r0, c0)`` (a static slice). The
    same function, the products summed in another order (float32 rounding). ``blocks``: the kernel's
    blocks already cut (export holds them as constants: ``torch.export`` keeps a slice of a weight as a
    graph op, and ExecuTorch's XNNPACK then refuses the convolution).
    """
    c, k, (h, w) = weight.shape[0], weight.shape[-1], x.shape[-2:]
    p = k // 2
    padded = F.pad(x, (p, p, p, p))
    out = None
    for i, (r0, r1, c0, c1) in enumerate(kernel_blocks(k, tile)):
        block = blocks[i] if blocks is not None else weight[..., r0:r1, c0:c1]
        part = padded[..., r0 : r0 + h + r1 - r0 - 1, c0 : c0 + w + c1 - c0 - 1]
        y = F.conv2d(part, block, bias if out is None else None, groups=c)
        out = y if out is None else out + y
    return out


def _pays(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # plain-Python checks first: a shape read while a graph is traced can be a tensor (a TracerWarning)
    return (
        not is_tracing()
        and torch.is_grad_enabled()
        and (x.requires_grad or weight.requires_grad)
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and weight.shape[-1] >= FFT_MIN_KERNEL
    )


def fft_size(n: int) -> int:
    """The smallest integer >= ``n`` with no prime factor above 7 (pocketfft is fast on those)."""
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def depthwise_weight_grad(x: torch.Tensor, grad: torch.Tensor, k: int) -> torch.Tensor:
    """``d loss / d weight`` of a depthwise "same" ``k x k`` convolution, ``(C, 1, k, k)``.

    ``grad_w[c, i, j] = sum_{n, h, w} grad[n, c, h, w] * x[n, c, h + i - p, w + j - p]`` (zero outside):
    the cross-correlation of ``x`` and ``grad`` at lags ``-p .. p``. A circular correlation of size
    ``>= H + p`` has no wrap-around at those lags (and ``>= k`` holds all ``k`` of them).
    """
    _, c, h, w = x.shape
    p = k // 2
    size = (fft_size(max(h + p, k)), fft_size(max(w + p, k)))
    spectrum = (torch.fft.rfft2(x, s=size) * torch.fft.rfft2(grad, s=size).conj()).sum(0)
    corr = torch.fft.irfft2(spectrum, s=size)  # corr[c, a, b]: lag (a, b), negative lags wrapped to the end
    return corr.roll(shifts=(p, p), dims=(1, 2))[:, :k, :k].reshape(c, 1, k, k).to(x.dtype)


class _FFTBackwardDepthwise(torch.autograd.Function):
    """Forward: oneDNN's depthwise convolution. Backward: see the module docstring."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, padding=weight.shape[-1] // 2, groups=weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        k, c = weight.shape[-1], weight.shape[0]
        grad = grad.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, weight.flip(-1, -2), padding=k // 2, groups=c)
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(x, grad, k)
        return grad_x, grad_w
