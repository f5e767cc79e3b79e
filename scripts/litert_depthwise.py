"""Why yolo-master-n is slow in LiteRT: one depthwise convolution per kernel size, LiteRT vs torch.

    .venv-tf/bin/python scripts/litert_depthwise.py                 # 64 x 160 x 160, the P2 experts' size
    .venv-tf/bin/python scripts/litert_depthwise.py --channels 128 --size 80

Each kernel size (3, 5, 7, 9: the experts') is a depthwise convolution + SiLU, converted with
litert-torch as Ultralytics' ``format=litert`` does, then timed batch 1 on 2 threads with LiteRT's
default XNNPACK delegate, with LiteRT's builtin kernels only, and in torch eager; and, as
``format=litert`` now exports the experts, the same convolution written as blocks of at most 5x5
(``nn/depthwise.tiled_depthwise_conv2d``) under XNNPACK. Needs the TensorFlow environment
(``scripts/setup_tensorflow.sh``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolo_master.export.formats import XNNPACK_TILE
from yolo_master.nn.depthwise import tiled_depthwise_conv2d


class TiledDepthwise(nn.Module):
    """``conv`` + SiLU with its kernel in blocks of at most ``XNNPACK_TILE`` (held as constants, as export does)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight.detach().clone(), conv.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(tiled_depthwise_conv2d(x, self.weight, self.bias, XNNPACK_TILE))


def median_ms(run, runs: int) -> float:
    run()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def litert_runner(path: Path, x: np.ndarray, threads: int, xnnpack: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    extra = {} if xnnpack else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    interpreter = Interpreter(str(path), num_threads=threads, **extra)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]

    def run():
        interpreter.set_tensor(index, x)
        interpreter.invoke()

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--kernels", default="3,5,7,9")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()
    import litert_torch  # the TensorFlow environment's

    torch.set_num_threads(args.threads)
    c, s = args.channels, args.size
    x = torch.rand(1, c, s, s)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in map(int, args.kernels.split(",")):
            torch.manual_seed(0)
            layer = nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2, groups=c), nn.SiLU()).eval()
            path = Path(tmp) / f"dw{k}.tflite"
            litert_torch.convert(layer, (x,)).export(str(path))
            with torch.no_grad():
                eager = median_ms(lambda layer=layer: layer(x), args.runs)
            xnn = median_ms(litert_runner(path, x.numpy(), args.threads, True), args.runs)
            builtin = median_ms(litert_runner(path, x.numpy(), args.threads, False), args.runs)
            tiled = Path(tmp) / f"dw{k}-tiled.tflite"
            litert_torch.convert(TiledDepthwise(layer[0]).eval(), (x,)).export(str(tiled))
            xnn_tiled = median_ms(litert_runner(tiled, x.numpy(), args.threads, True), args.runs)
            rows.append((k, xnn, builtin, eager, xnn_tiled))
            print(
                f"{k}x{k}: LiteRT+XNNPACK {xnn:.2f} ms, LiteRT builtin {builtin:.2f} ms, torch {eager:.2f} ms, "
                f"LiteRT+XNNPACK in blocks {xnn_tiled:.2f} ms",
                flush=True,
            )
    print(f"\ndepthwise {c} x {s} x {s} + SiLU, batch 1, {args.threads} threads, median of {args.runs}\n")
    t = XNNPACK_TILE
    head = "| kernel | LiteRT (XNNPACK) ms | LiteRT builtin ms | torch ms | XNNPACK / torch |"
    print(f"{head} XNNPACK, {t}x{t} blocks ms |")
    print("|---|---|---|---|---|---|")
    for k, xnn, builtin, eager, xnn_tiled in rows:
        print(f"| {k}x{k} | {xnn:.2f} | {builtin:.2f} | {eager:.2f} | {xnn / eager:.1f}x | {xnn_tiled:.2f} |")


if __name__ == "__main__":
    main()
