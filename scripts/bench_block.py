"""ES-MoE layer micro-benchmark: top-K vs all experts, per execution strategy, eager and ONNX Runtime.

    python scripts/bench_block.py                          # N-model feature sizes at 640 px, E=4
    python scripts/bench_block.py --model s --runs 50 --out reports/block-s.md
    python scripts/bench_block.py --sizes 128:80 --no-ort  # one size, eager only

For every feature size (channels x side) and K = E..1, the gate is biased to force every combination
of K experts in turn; each cell is the mean over combinations of that route's median latency, batch
1, and its ratio to the K=E row of the same runtime. Eager strategies: ``select`` (run the K chosen
experts), ``grouped``, ``dense`` (all experts, unchosen masked by zero). ONNX Runtime: the block's
exported graph with ``slice``, ``gather`` or ``branch`` (K=E exports the static graph, the baseline).
"""

from __future__ import annotations

import argparse
import io
import itertools
import statistics
from pathlib import Path

import numpy as np
import torch
from report import emit

from yolo_master.benchmark import latency
from yolo_master.export.parity import force_route, ort_session
from yolo_master.nn import EAGER_STRATEGIES, ESMoE
from yolo_master.nn.dispatch import GRAPH_STRATEGIES

# ES-MoE inputs (channels, side) of the zoo models at 640 px: after the P2, P3 and P4 stages
FEATURES = {"n": ((64, 160), (128, 80), (128, 40)), "s": ((128, 160), (256, 80), (256, 40))}
EAGER = EAGER_STRATEGIES
GRAPH = GRAPH_STRATEGIES


def onnx_session(block: ESMoE, x: torch.Tensor, threads: int):
    buffer = io.BytesIO()
    torch.onnx.export(block, x, buffer, dynamo=False, opset_version=17)
    return ort_session(buffer.getvalue(), threads)


def with_top_k(block: ESMoE, k: int) -> ESMoE:
    """The same experts and gate in a block built with K=k (K is fixed at construction)."""
    other = ESMoE(block.c1, block.c2, block.num_experts, k, strategy=block.strategy)
    other.load_state_dict(block.state_dict())
    return other.eval()


def mean_over_routes(block: ESMoE, k: int, x: torch.Tensor, runs: int, runtime: str, threads: int) -> float:
    """Mean, over every combination of k experts, of the median latency with that route."""
    block = with_top_k(block, k)
    times = []
    for combo in itertools.combinations(range(block.num_experts), k):
        force_route(block, combo)
        if runtime == "eager":
            with torch.inference_mode():
                times.append(latency(lambda: block(x), warmup=3, runs=runs)[0])
        else:
            session = onnx_session(block, x, threads)
            feed = {session.get_inputs()[0].name: x.numpy().astype(np.float32)}
            times.append(latency(lambda s=session, f=feed: s.run(None, f), warmup=3, runs=runs)[0])
    return statistics.fmean(times)


def bench_size(c: int, side: int, experts: int, runs: int, threads: int, ort: bool) -> list[str]:
    torch.manual_seed(0)
    x = torch.randn(1, c, side, side)
    block = ESMoE(c, c, experts, experts).eval()
    rows = []
    runtimes = [("eager", s) for s in EAGER] + ([("onnxruntime", s) for s in GRAPH] if ort else [])
    for runtime, strategy in runtimes:
        block.strategy = strategy
        base = None
        for k in range(experts, 0, -1):
            ms = mean_over_routes(block, k, x, runs, runtime, threads)
            base = base or ms
            label = "static (K=E)" if runtime == "onnxruntime" and k == experts else strategy
            rows.append(f"| {c}x{side}x{side} | {runtime} | {label} | {k} | {ms:.2f} | {ms / base:.2f}x |")
    return rows


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(FEATURES), default="n", help="feature sizes of this zoo scale")
    ap.add_argument("--sizes", help="comma-separated channels:side pairs instead, e.g. 128:80,64:160")
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--no-ort", action="store_true", help="eager strategies only")
    ap.add_argument("--out", type=Path, help="also write the table to this markdown file")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    sizes = [tuple(map(int, s.split(":"))) for s in a.sizes.split(",")] if a.sizes else FEATURES[a.model]
    rows = [
        f"ES-MoE block, batch 1, E={a.experts}, {a.threads} threads, torch {torch.__version__}; "
        f"mean over routes of the median of {a.runs} runs",
        "",
        "| feature | runtime | strategy | K | ms | ratio vs K=E |",
        "|---|---|---|---|---|---|",
    ]
    for c, side in sizes:
        rows += bench_size(c, side, a.experts, a.runs, a.threads, not a.no_ort)
    return emit("\n".join(rows), a.out)


if __name__ == "__main__":
    main()
