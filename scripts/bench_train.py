"""Training-step benchmark: yolo-master against its peers, and its FFT depthwise backward on and off.

    python scripts/bench_train.py                      # n against yolo11n / yolo12n, batch 8, 320 px
    python scripts/bench_train.py --steps 20 --out reports/train-step.md
    python scripts/bench_train.py --imgsz 64 --batch 4 --steps 1   # a smoke run

One step is what ``yolo-master benchmark`` times in its training row (``benchmark.train_step``):
forward, the task loss with the MoE term, backward, with routes balanced as a trained router's are
(``benchmark.balance_routes``); the optimizer update is the same per parameter for every model and left
out. All models live in this one process (torch only) and take their steps in turn, one step each per
round, so that this machine's drift (+-15% over minutes) hits all of them alike; a cell is the median
over rounds. The ``plain backward`` row is the same yolo-master model with ``ExpertBank.fft_backward``
off (oneDNN's own depthwise backward instead of ``nn/depthwise.py``'s), side by side.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from report import emit

from yolo_master.benchmark import TRAIN_STEP, load_any, train_step
from yolo_master.nn.experts import ExpertBank


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="n.yaml", help="the yolo-master model (zoo name, YAML or .pt)")
    ap.add_argument("--compare", default="yolo11n.yaml,yolo12n.yaml", help="peers, comma-separated")
    ap.add_argument("--steps", type=int, default=10, help="timed rounds (one step per model each)")
    ap.add_argument("--batch", type=int, default=TRAIN_STEP[0])
    ap.add_argument("--imgsz", type=int, default=TRAIN_STEP[1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    peers = [name for name in args.compare.split(",") if name]

    steps = {}  # label -> (step, fft_backward)
    for name in [args.model, *peers]:
        steps[name] = (train_step(load_any(name), args.batch, args.imgsz), True)
    steps[f"{args.model} (plain backward)"] = (steps[args.model][0], False)
    times: dict[str, list[float]] = {label: [] for label in steps}
    for round_ in range(args.steps + 1):  # the first round warms up
        for label, (step, fft_backward) in steps.items():
            ExpertBank.fft_backward = fft_backward
            t = time.perf_counter()
            step()
            if round_:
                times[label].append((time.perf_counter() - t) * 1e3)
    ExpertBank.fft_backward = True
    ms = {label: statistics.median(t) for label, t in times.items()}
    lines = [
        f"Training step (forward + loss + backward), batch {args.batch}, {args.imgsz} px, CPU, {args.threads} "
        f"threads, median of {args.steps} interleaved rounds",
        "",
        f"| model | step ms | vs {args.model} |" + "".join(f" vs {n} |" for n in peers),
        "|---|---|---|" + "---|" * len(peers),
    ]
    for label in [args.model, f"{args.model} (plain backward)", *peers]:
        ratios = "".join(f" {ms[label] / ms[n]:.2f}x |" for n in peers)
        lines.append(f"| {label} | {ms[label]:.0f} | {ms[label] / ms[args.model]:.2f}x |{ratios}")
    return emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
