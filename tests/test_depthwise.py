"""The FFT-backed depthwise backward (nn/depthwise.py) against F.conv2d's own, and where it is used."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from yolo_master.nn.depthwise import (
    depthwise_conv2d,
    depthwise_weight_grad,
    fft_size,
    kernel_blocks,
    tiled_depthwise_conv2d,
)


def _grads(conv, x, w, seed_grad):
    x, w = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    y = conv(x, w)
    y.backward(seed_grad)
    return y.detach(), x.grad, w.grad


@pytest.mark.parametrize("k", [5, 7, 9])
@pytest.mark.parametrize("shape", [(3, 4, 11, 8), (1, 2, 4, 4), (2, 8, 20, 20)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backward_matches_conv2d(k, shape, dtype):
    torch.manual_seed(k)
    x = torch.randn(shape, dtype=dtype)
    w = torch.randn(shape[1], 1, k, k, dtype=dtype)
    g = torch.randn(shape, dtype=dtype)

    def plain(x, w):
        return F.conv2d(x, w, padding=k // 2, groups=shape[1])

    fast = _grads(depthwise_conv2d, x, w, g)
    ref = _grads(plain, x, w, g)
    assert fast[0].equal(ref[0])  # the forward is F.conv2d itself
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for a, b in zip(fast[1:], ref[1:]):
        assert (a - b).abs().max() <= tol * b.abs().max()


def test_channels_last_input_and_a_kernel_wider_than_the_image():
    x = torch.randn(2, 3, 3, 3).to(memory_format=torch.channels_last)
    g = torch.randn(2, 3, 3, 3)
    w = torch.randn(3, 1, 9, 9)
    fast = _grads(depthwise_conv2d, x, w, g)
    ref = _grads(lambda x, w: F.conv2d(x, w, padding=4, groups=3), x, w, g)
    for a, b in zip(fast, ref):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_used_only_where_autograd_records_on_the_cpu():
    x, w = torch.randn(1, 2, 6, 6, requires_grad=True), torch.randn(2, 1, 5, 5, requires_grad=True)
    assert "FFTBackward" in type(depthwise_conv2d(x, w).grad_fn).__name__
    assert "Convolution" in type(depthwise_conv2d(x, w, fft_backward=False).grad_fn).__name__
    assert "Convolution" in type(depthwise_conv2d(x, w[:, :, 1:4, 1:4]).grad_fn).__name__  # 3x3: oneDNN's is fast
    with torch.no_grad():
        assert depthwise_conv2d(x, w).grad_fn is None
    traced = torch.jit.trace(lambda a, b: depthwise_conv2d(a, b), (x.detach(), w.detach()))
    assert "FFT" not in str(traced.graph)


def test_weight_grad_is_a_sum_of_shifted_products():
    """The definition, written out: grad_w[c, i, j] = sum grad[n, c, h, w] * x[n, c, h + i - p, w + j - p]."""
    torch.manual_seed(0)
    x, g, k = torch.randn(2, 3, 6, 7, dtype=torch.float64), torch.randn(2, 3, 6, 7, dtype=torch.float64), 5
    p = k // 2
    xp = F.pad(x, (p, p, p, p))
    expected = torch.stack(
        [torch.stack([(g * xp[:, :, i : i + 6, j : j + 7]).sum((0, 2, 3)) for j in range(k)], -1) for i in range(k)], -2
    )
    assert torch.allclose(depthwise_weight_grad(x, g, k)[:, 0], expected, atol=1e-10)
    assert fft_size(83) == 84 and fft_size(86) == 90 and fft_size(64) == 64


@pytest.mark.parametrize("k", [3, 5, 7, 9, 11])
@pytest.mark.parametrize("tile", [2, 3, 5])
def test_tiled_convolution_is_the_same_convolution(k, tile):
    g = torch.Generator().manual_seed(k * 10 + tile)
    x = torch.randn(2, 6, 13, 9, generator=g, dtype=torch.float64)  # not square, smaller than some kernels
    w = torch.randn(6, 1, k, k, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    ref = F.conv2d(x, w, b, padding=k // 2, groups=6)
    assert torch.allclose(tiled_depthwise_conv2d(x, w, b, tile), ref, atol=1e-12)
    assert torch.allclose(depthwise_conv2d(x, w, bias=b, tile=tile), ref, atol=1e-12)
    no_bias = F.conv2d(x, w, padding=k // 2, groups=6)
    assert torch.allclose(tiled_depthwise_conv2d(x, w, None, tile), no_bias, atol=1e-12)


@pytest.mark.parametrize("k,tile", [(7, 5), (9, 5), (11, 5), (5, 2)])
def test_kernel_blocks_cover_every_tap_once_and_none_is_larger_than_the_tile(k, tile):
    covered = torch.zeros(k, k, dtype=torch.int64)
    for r0, r1, c0, c1 in kernel_blocks(k, tile):
        assert 0 < r1 - r0 <= tile and 0 < c1 - c0 <= tile
        covered[r0:r1, c0:c1] += 1
    assert (covered == 1).all()
