"""Eager latency of one ES-MoE block: top-K vs all experts, per execution strategy, side by side.

    python scripts/bench_block.py                     # C=128, 80x80, batch 1, E=4, 2 threads
    python scripts/bench_block.py --channels 256 --size 40 --batch 8 --out reports/block.md

One block (same weights throughout); for each K the gate is biased to force every combination of K
experts in turn and the table shows the mean over combinations of each combination's median time,
with its ratio to the K=E row of the same strategy.
The acceptance bar of the foundation issue is "K=2 of 4 <= 0.65x K=4" in eval, batch 1.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import torch
from report import emit

from yolo_master.nn import ESMoE


def median_ms(fn, x: torch.Tensor, warmup: int, runs: int) -> float:
    """Median wall time of ``fn(x)`` in milliseconds."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def force_route(block: ESMoE, experts: tuple[int, ...]) -> None:
    """Bias the gate so that ``experts`` win the top-K for any input."""
    with torch.no_grad():
        block.router.logits.weight.zero_()
        block.router.logits.bias.fill_(-10.0)
        for rank, e in enumerate(experts):
            block.router.logits.bias[e] = 10.0 - rank


def mean_over_routes(block: ESMoE, k: int, x: torch.Tensor, runs: int) -> float:
    """Mean, over every combination of k experts, of the median latency with that route."""
    block.router.top_k = k
    times = []
    for combo in itertools.combinations(range(block.num_experts), k):
        force_route(block, combo)
        times.append(median_ms(block, x, warmup=3, runs=runs))
    return statistics.fmean(times)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--size", type=int, default=80)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--out", type=Path, help="also write the table to this markdown file")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    x = torch.randn(a.batch, a.channels, a.size, a.size)
    strategies = ["select", "grouped", "dense"]
    rows = [
        f"ES-MoE block, C={a.channels}, {a.size}x{a.size}, batch {a.batch}, E={a.experts}, "
        f"{a.threads} threads, torch {torch.__version__}, eval mode, mean over routes of the median of {a.runs}",
        "",
        "| strategy | K | ms | ratio vs K=E |",
        "|---|---|---|---|",
    ]
    block = ESMoE(a.channels, a.channels, a.experts, a.experts).eval()
    median_ms(block, x, warmup=20, runs=1)  # let threads and the allocator settle before measuring
    for strategy in strategies:
        block.strategy = strategy
        base = None
        for k in range(a.experts, 0, -1):
            ms = mean_over_routes(block, k, x, a.runs)
            base = base or ms
            rows.append(f"| {strategy} | {k} | {ms:.2f} | {ms / base:.2f}x |")
    return emit("\n".join(rows), a.out)


if __name__ == "__main__":
    main()
