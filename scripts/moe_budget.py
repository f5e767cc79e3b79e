"""How fast can the ES-MoE blocks be made? Their latency budget against a peer, and the rate it demands.

    python scripts/moe_budget.py                         # n vs nomoe-n vs yolo12n, 640 px, ORT and OpenVINO
    python scripts/moe_budget.py --rounds 5 --out reports/moe-budget.md
    python scripts/moe_budget.py --targets onnx=1.10,openvino=1.20 --imgsz 320

Exports three models in each runtime's default form (``yolo-master benchmark``'s ``prepare``): the
yolo-master model, the same network without its ES-MoE blocks (``nomoe-n``, the zoo's placement
ablation: every other layer identical) and the peer. Each is timed in a process of its own, in
interleaved rounds, each keeping its fastest (``export/timing.py``, as ``export/bench.py`` does). So
``model - without`` is what the ES-MoE blocks cost in that runtime, and a target ratio to the peer
leaves them ``target x peer - without`` ms. Dividing the blocks' FLOPs (the top-K experts and the
gates: the model's GFLOPs minus the ablation's) by that budget gives the rate any implementation of
the same network would need, printed beside the rate the rest of the network reaches in the same
runtime and this machine's float32 GEMM rate (torch, same threads, best over the rounds): a needed
rate above the GEMM rate cannot be met by any implementation on this machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from report import emit

from yolo_master.benchmark import RUNTIME_COLUMNS, prepare, time_exported

RUNTIMES = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}
COLUMN = {fmt: key for key, (fmt, _) in RUNTIME_COLUMNS.items()}  # format -> the timing's key in a row


def gemm_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-multiply rate in GFLOP/s with ``threads`` threads (best of ``repeats``)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            a @ b
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(previous)
    return 2 * n**3 / best / 1e9


def budget(without_ms: float, peer_ms: float, target: float, moe_gflops: float, rest_gflops: float):
    """The ms a ``target`` ratio to the peer leaves the ES-MoE blocks, and the GFLOP/s they would need.

    Returns ``(allowed_ms, needed_gflops_per_s, rest_gflops_per_s)``: ``rest`` is the rate the network without
    the blocks reaches; ``needed`` is infinite when that network alone is over the target (no time left).
    """
    allowed_ms = target * peer_ms - without_ms
    needed = moe_gflops / (allowed_ms / 1e3) if allowed_ms > 0 else float("inf")
    return allowed_ms, needed, rest_gflops / (without_ms / 1e3)


def _rate(gflops_per_s: float) -> str:
    """A GFLOP/s figure for the table: whole numbers from 100, three significant digits below."""
    return f"{gflops_per_s:.0f}" if gflops_per_s >= 100 else f"{gflops_per_s:.3g}"


def parse_targets(text: str) -> dict[str, float]:
    """``onnx=1.10,openvino=1.20`` -> ``{"onnx": 1.1, "openvino": 1.2}``; unknown runtimes are refused."""
    targets = {}
    for item in filter(None, text.split(",")):
        fmt, _, value = item.partition("=")
        if fmt not in RUNTIMES or not value:
            raise ValueError(f"--targets: '{item}' is not RUNTIME=RATIO, RUNTIME one of {', '.join(RUNTIMES)}")
        try:
            targets[fmt] = float(value)
        except ValueError:
            raise ValueError(f"--targets: '{value}' in '{item}' is not a number") from None
    return targets


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="n.yaml", help="the yolo-master model")
    ap.add_argument("--without", default="nomoe-n.yaml", help="the same network without ES-MoE blocks")
    ap.add_argument("--peer", default="yolo12n.yaml", help="the model the targets are ratios to")
    ap.add_argument("--targets", default="onnx=1.10,openvino=1.20", help="RUNTIME=RATIO to the peer (issue 14)")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each model keeps its fastest")
    ap.add_argument("--out", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    if min(args.rounds, args.runs, args.threads) < 1 or args.warmup < 0:
        ap.error("--rounds, --runs and --threads must be >= 1 and --warmup >= 0")
    try:
        targets = parse_targets(args.targets)
    except ValueError as e:
        ap.error(str(e))

    with tempfile.TemporaryDirectory() as tmp:
        try:
            rows = [prepare(name, args.imgsz, 1, Path(tmp))[0] for name in (args.model, args.without, args.peer)]
        except (FileNotFoundError, ValueError) as e:  # an unknown model name or a bad YAML: one line
            ap.error(str(e).splitlines()[0])
        runtimes = [fmt for fmt in RUNTIMES if all(fmt in row for row in rows)]
        gemm = 0.0
        for _ in range(args.rounds):
            gemm = max(gemm, gemm_gflops(args.threads))  # in every round too: the machine's best moment
            try:
                time_exported(rows, args.threads, args.warmup, args.runs)
            except RuntimeError as e:  # the child's last error line
                raise SystemExit(str(e)) from None
    model, without, peer = rows
    moe_gflops = model["gflops"] - without["gflops"]
    lines = [
        f"{args.imgsz} px, batch 1, {args.threads} threads, median of {args.runs} runs, fastest of {args.rounds} "
        f"interleaved round(s), each model in its own process; ES-MoE blocks {moe_gflops:.3g} GFLOPs "
        f"({model['model']} {model['gflops']:.2f} - {without['model']} {without['gflops']:.2f}); "
        f"float32 GEMM here {gemm:.0f} GFLOP/s",
        "",
        f"| runtime | {peer['model']} ms | {without['model']} ms | ratio | {model['model']} ms | ratio "
        "| ES-MoE blocks ms | target | ms it leaves them | GFLOP/s needed | rest of network GFLOP/s | needed / GEMM |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fmt in runtimes:
        p, w, m = (row[f"{COLUMN[fmt]}_ms"] for row in (peer, without, model))
        target = targets.get(fmt)
        if target is None:
            tail = "| - | - | - | - | - |"
        else:
            allowed, needed, rest = budget(w, p, target, moe_gflops, without["gflops"])
            tail = f"| {target:.2f}x | {allowed:.1f} | {_rate(needed)} | {_rate(rest)} | {needed / gemm:.2f} |"
        lines.append(
            f"| {RUNTIMES[fmt]} | {p:.1f} | {w:.1f} | {w / p:.2f}x | {m:.1f} | {m / p:.2f}x | {m - w:.1f} {tail}"
        )
    return emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
