"""ES-MoE layer micro-benchmark: top-K vs all experts, per execution strategy, eager, ONNX Runtime and
OpenVINO.

    python scripts/bench_block.py                          # N-model feature sizes at 640 px, E=4
    python scripts/bench_block.py --model s --runs 50 --out reports/block-s.md
    python scripts/bench_block.py --sizes 128:80 --runtimes eager  # one size, eager only

For every feature size (channels x side) and K = E..1, the gate is biased to force every combination
of K experts in turn; each cell is the mean over combinations of that route's median latency, batch
1, and its ratio to the K=E row of the same runtime. Eager strategies: ``select`` (run the K chosen
experts), ``grouped``, ``dense`` (all experts, unchosen masked by zero). ONNX Runtime: the block's
exported graph with ``slice``, ``gather`` or ``branch`` (K=E exports the static graph, the baseline).
OpenVINO (where installed): the same exported graphs plus ``dense`` (every expert, the unchosen ones
weighted by zero: the form ``format=openvino`` ships). Each runtime is timed in a process of its own
(OpenVINO's worker threads keep spinning and slow the others several-fold in a shared process).
"""

from __future__ import annotations

import argparse
import io
import itertools
import statistics
import subprocess
import sys
from importlib.util import find_spec
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
RUNTIMES = {  # runtime -> strategies timed in it
    "eager": EAGER_STRATEGIES,
    "onnxruntime": GRAPH_STRATEGIES,
    "openvino": (*GRAPH_STRATEGIES, "dense"),
}


def onnx_bytes(block: ESMoE, x: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(block, x, buffer, dynamo=False, opset_version=17)
    return buffer.getvalue()


def graph_runner(block: ESMoE, x: torch.Tensor, runtime: str, threads: int):
    """A no-argument callable running ``block``'s exported graph on ``x`` in ``runtime``."""
    model = onnx_bytes(block, x)
    feed = x.numpy().astype(np.float32)
    if runtime == "onnxruntime":
        session = ort_session(model, threads)
        name = session.get_inputs()[0].name
        return lambda: session.run(None, {name: feed})
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}  # not bfloat16 where the CPU has it
    compiled = core.compile_model(core.read_model(model), "CPU", config)
    request = compiled.create_infer_request()
    return lambda: request.infer({0: feed})


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
            times.append(latency(graph_runner(block, x, runtime, threads), warmup=3, runs=runs)[0])
    return statistics.fmean(times)


def bench_size(c: int, side: int, experts: int, runs: int, threads: int, runtime: str) -> list[str]:
    """Rows for one feature size in one runtime (this process)."""
    torch.manual_seed(0)
    x = torch.randn(1, c, side, side)
    block = ESMoE(c, c, experts, experts).eval()
    rows = []
    for strategy in RUNTIMES[runtime]:
        block.strategy = strategy
        base = None
        for k in range(experts, 0, -1):
            ms = mean_over_routes(block, k, x, runs, runtime, threads)
            base = base or ms
            label = "static (K=E)" if runtime != "eager" and k == experts else strategy
            rows.append(f"| {c}x{side}x{side} | {runtime} | {label} | {k} | {ms:.2f} | {ms / base:.2f}x |")
    return rows


def rows_in_own_process(runtime: str, argv: list[str]) -> list[str]:
    """This script for one runtime, in a fresh interpreter; its table rows."""
    cmd = [sys.executable, __file__, *argv, "--runtimes", runtime, "--rows-only"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{runtime}: {proc.stderr.strip()[-2000:]}")
    return [line for line in proc.stdout.splitlines() if line.startswith("| ")]


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(FEATURES), default="n", help="feature sizes of this zoo scale")
    ap.add_argument("--sizes", help="comma-separated channels:side pairs instead, e.g. 128:80,64:160")
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    available = [r for r in RUNTIMES if r == "eager" or find_spec(r)]
    ap.add_argument("--runtimes", default=",".join(available), help=f"comma-separated, of {', '.join(RUNTIMES)}")
    ap.add_argument("--rows-only", action="store_true", help=argparse.SUPPRESS)  # internal: one runtime's rows
    ap.add_argument("--out", type=Path, help="also write the table to this markdown file")
    a = ap.parse_args(argv)
    runtimes = [r for r in a.runtimes.split(",") if r]
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        ap.error(f"unknown runtime(s) {', '.join(unknown)}: choose from {', '.join(RUNTIMES)}")
    torch.set_num_threads(a.threads)
    sizes = [tuple(map(int, s.split(":"))) for s in a.sizes.split(",")] if a.sizes else FEATURES[a.model]
    if a.rows_only:
        rows = [row for c, side in sizes for row in bench_size(c, side, a.experts, a.runs, a.threads, runtimes[0])]
        print("\n".join(rows))
        return "\n".join(rows)
    passed = ["--sizes", ",".join(f"{c}:{side}" for c, side in sizes), "--experts", str(a.experts)]
    passed += ["--threads", str(a.threads), "--runs", str(a.runs)]
    by_runtime = {r: rows_in_own_process(r, passed) for r in runtimes}
    rows = [
        f"ES-MoE block, batch 1, E={a.experts}, {a.threads} threads, torch {torch.__version__}; "
        f"mean over routes of the median of {a.runs} runs; each runtime in its own process",
        "",
        "| feature | runtime | strategy | K | ms | ratio vs K=E |",
        "|---|---|---|---|---|---|",
    ]
    for c, side in sizes:
        rows += [row for r in runtimes for row in by_runtime[r] if row.startswith(f"| {c}x{side}x{side} ")]
    return emit("\n".join(rows), a.out)


if __name__ == "__main__":
    main()
