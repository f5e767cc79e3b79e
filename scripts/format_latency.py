"""Batch-1 latency of yolo-master-n against YOLO11n in every export format whose runtime runs here.

    python scripts/format_latency.py                       # every installed format, 640 px, 2 threads
    python scripts/format_latency.py --formats ncnn,mnn --imgsz 320 --out reports/formats.md

Each model is exported with its format's default routing form (``export/formats.py``), then run
through Ultralytics' ``AutoBackend`` (the runtime ``predict`` uses) in a process of its own, the two
models of a format one after the other: only the ratio in a row means anything, absolute times move
2-3x between runs of this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path


def export(model: str, fmt: str, imgsz: int, workdir: Path) -> str:
    from yolo_master.benchmark import load_any
    from yolo_master.export.prepare import offline_onnx2tf_sample

    os.chdir(workdir)
    with offline_onnx2tf_sample(fmt):  # stock models too: offline, Ultralytics' sample download fails
        return str(Path(load_any(model).export(format=fmt, imgsz=imgsz)).resolve())


def time_backend(path: str, imgsz: int, threads: int, runs: int) -> float:
    import torch
    from ultralytics.nn.autobackend import AutoBackend

    import yolo_master  # noqa: F401  as predict runs it: OpenVINO compiles float32 IRs in float32, not bfloat16

    torch.set_num_threads(threads)
    backend = AutoBackend(path, device=torch.device("cpu"), verbose=False)
    x = torch.rand(1, 3, imgsz, imgsz)
    for _ in range(3):
        backend(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        backend(x)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def in_own_process(*args: str) -> str:
    """Run this file with ``args`` in a fresh interpreter; its last stdout line."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout.strip().splitlines()[-1]


def main() -> None:
    from yolo_master.export.formats import FORMATS

    # not the quantized ones: qnn's runtime here simulates Qualcomm's HTP on the CPU, no deployment latency
    runnable = [
        f for f, s in FORMATS.items() if s.runtime == "runs here" and not s.quantized and f not in {"tflite", "tfjs"}
    ]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--formats", default=",".join(runnable), help="comma-separated formats (default: all runnable)")
    p.add_argument("--models", default="n.yaml,yolo11n.yaml", help="first: ours, second: the reference")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--workdir", default="runs/format_latency")
    p.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = p.parse_args()
    workdir = Path(args.workdir).resolve()
    models = args.models.split(",")
    rows = []
    for fmt in args.formats.split(","):
        spec = FORMATS[fmt]
        if any(find_spec(m) is None for m in spec.needs):
            print(f"{fmt}: skipped ({spec.install})", flush=True)
            continue
        ms = []
        for model in models:
            folder = workdir / fmt / Path(model).stem
            folder.mkdir(parents=True, exist_ok=True)
            path = in_own_process("export", model, fmt, str(args.imgsz), str(folder))
            ms.append(float(in_own_process("time", path, str(args.imgsz), str(args.threads), str(args.runs))))
            print(f"{fmt} {model}: {ms[-1]:.1f} ms", flush=True)
        rows.append((fmt, spec.form, spec.strategy, *ms))
    head = f"| format | routing form | {models[1]} ms | {models[0]} ms | ratio |"
    lines = [head, "|---|---|---|---|---|"]
    for fmt, form, strategy, ours, ref in rows:
        lines.append(f"| {fmt} | {form} (`{strategy}`) | {ref:.1f} | {ours:.1f} | {ours / ref:.2f}x |")
    table = "\n".join(lines) + f"\n\nbatch 1, {args.imgsz} px, {args.threads} threads, median of {args.runs} runs\n"
    print(table)
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "export":
        print(export(sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])))
    elif len(sys.argv) > 1 and sys.argv[1] == "time":
        print(json.dumps(time_backend(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))))
    else:
        main()
