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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .routers.base import is_tracing

FFT_MIN_KERNEL = 5  # a 3x3 depthwise backward is already fast in oneDNN


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, fft_backward: bool = True) -> torch.Tensor:
    """``F.conv2d(x, weight, padding=k // 2, groups=C)`` for a ``(C, 1, k, k)`` odd kernel.

    With ``fft_backward`` (and where it pays, see the module docstring) the backward pass runs as a
    forward convolution plus an FFT cross-correlation instead of oneDNN's depthwise backward.
    """
    k = weight.shape[-1]
    if fft_backward and _pays(x, weight):
        return _FFTBackwardDepthwise.apply(x, weight)
    return F.conv2d(x, weight, padding=k // 2, groups=weight.shape[0])


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
