"""Runtime-only latency of exported models (ONNX Runtime on the CPU), side by side, no torch import.

    python export/bench.py a.onnx [b.onnx ...] [--threads 2] [--runs 50] [--out reports/ort.md]

Standalone on purpose (no torch, no yolo_master import), so it runs on a bare deployment box.
Each model runs on random input of its own static shape (dynamic axes become 1 / 640). The table
lists the median and p90 latency in ms and each model's ratio to the first one.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def _shape(arg) -> list[int]:
    dims = [d if isinstance(d, int) and d > 0 else None for d in arg.shape]
    return [1 if i == 0 else 640 if d is None else d for i, d in enumerate(dims)]


def time_onnx(path: Path, threads: int, warmup: int, runs: int) -> tuple[float, float, list[int]]:
    """Median and p90 latency (ms) of one ONNX model with ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = _shape(inp)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(warmup):
        session.run(None, {inp.name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, {inp.name: x})
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))], shape


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path, help=".onnx files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--out", type=Path, help="also write the table to this markdown file")
    a = ap.parse_args(argv)
    for path in a.models:
        if path.suffix != ".onnx" or not path.is_file():
            ap.error(f"'{path}' is not an existing .onnx file")
    rows = [
        f"ONNX Runtime CPU, {a.threads} threads, batch 1, median of {a.runs} runs after {a.warmup} warm-up",
        "",
        "| model | input | median ms | p90 ms | ratio |",
        "|---|---|---|---|---|",
    ]
    base = None
    for path in a.models:
        median, p90, shape = time_onnx(path, a.threads, a.warmup, a.runs)
        base = base or median
        rows.append(f"| {path.name} | {'x'.join(map(str, shape))} | {median:.1f} | {p90:.1f} | {median / base:.2f}x |")
    table = "\n".join(rows)
    print(table)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
