"""``yolo-master benchmark``: models side by side in one run — size, compute and latency with ratios.

For each model (zoo name, model YAML, or checkpoint; stock Ultralytics YAMLs such as ``yolo12n.yaml``
too): parameters, active parameters (top-K experts), GFLOPs, then batch latency (median and p90
over ``runs`` after warm-up) in torch eager on the CPU and in ONNX Runtime on the CPU (the model is
exported first, ES-MoE routing kept in the graph), and TensorRT FP16 where a GPU and TensorRT are
present. Ratios are against the first model. The table is printed and written to the run directory.
"""

from __future__ import annotations

import csv
import os
import shutil
import statistics
import time
from copy import deepcopy
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .nn.cost import active_params


def latency(fn: Callable[[], object], warmup: int = 10, runs: int = 100) -> tuple[float, float]:
    """Median and p90 wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))]


def load_any(name: str):
    """``YOLOMaster`` for our zoo names, our YAMLs and checkpoints; Ultralytics' ``YOLO`` for stock YAMLs."""
    from ultralytics import YOLO

    from .model import YOLOMaster
    from .zoo import find_model_yaml

    try:
        find_model_yaml(name)
        return YOLOMaster(name)
    except FileNotFoundError:
        if Path(name).suffix in {".yaml", ".yml"}:
            return YOLO(name)  # a stock Ultralytics config, built locally (no download)
        raise


def prepare(name: str, imgsz: int, batch: int, out_dir: Path) -> tuple[dict, object]:
    """Build ``name``, count its size and compute, export it to ONNX under ``out_dir``."""
    from ultralytics.utils.torch_utils import get_flops

    source = Path(name)
    if source.suffix == ".pt":  # export next to a private copy: never overwrite the user's own .onnx
        if not source.is_file():
            raise FileNotFoundError(f"checkpoint '{name}' not found")
        shutil.copy2(source, out_dir / source.name)
        source = out_dir / source.name
    model = load_any(str(source))
    net = model.model.float().eval()
    row = {
        "model": Path(name).name,
        "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
        "active_M": active_params(net) / 1e6,
        "gflops": get_flops(net, imgsz),
    }
    cwd = Path.cwd()
    os.chdir(out_dir)  # models built from a YAML export into the working directory
    try:
        onnx_path = Path(model.export(format="onnx", imgsz=imgsz, batch=batch, verbose=False)).resolve()
    finally:
        os.chdir(cwd)
    row["onnx"] = out_dir / f"{Path(name).stem}.onnx"
    onnx_path.replace(row["onnx"])
    return row, model


def time_ort(path: Path, x: np.ndarray, threads: int, runs: int, warmup: int) -> tuple[float, float]:
    from .export.parity import ort_session

    session = ort_session(path, threads)
    feed = {session.get_inputs()[0].name: x}
    return latency(lambda: session.run(None, feed), warmup, runs)


def time_torch(model, x: torch.Tensor, runs: int, warmup: int) -> tuple[float, float]:
    net = deepcopy(model.model).float().eval()
    with torch.inference_mode():
        return latency(lambda: net(x), warmup, runs)


def _tensorrt_ms(model, imgsz: int, batch: int, runs: int, warmup: int) -> float | None:
    """TensorRT FP16 median latency where a GPU and TensorRT exist, else None."""
    from importlib.util import find_spec

    if not torch.cuda.is_available() or find_spec("tensorrt") is None:
        return None
    from ultralytics.nn.autobackend import AutoBackend

    engine = model.export(format="engine", half=True, imgsz=imgsz, batch=batch, device=0, verbose=False)
    backend = AutoBackend(engine, device=torch.device("cuda:0"), fp16=True)
    x = torch.rand(batch, 3, imgsz, imgsz, device="cuda:0").half()

    def run():
        backend(x)
        torch.cuda.synchronize()

    return latency(run, warmup, runs)[0]


def format_table(rows: list[dict], imgsz: int, batch: int, runs: int, threads: int) -> str:
    """Markdown table with ratios against the first row."""
    first = rows[0]

    def ratio(row, key):
        return f"{row[key] / first[key]:.2f}x" if row[key] and first[key] else "n/a"

    lines = [
        f"batch {batch}, {imgsz}x{imgsz}, {threads} CPU threads, median / p90 of {runs} runs; "
        f"torch {torch.__version__}; ratios vs {first['model']}",
        "",
        "| model | params (M) | active (M) | GFLOPs | torch CPU ms | ratio | ORT CPU ms | ratio | TRT FP16 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        trt = f"{r['trt_fp16_ms']:.2f}" if r["trt_fp16_ms"] else "n/a (no GPU/TensorRT)"
        lines.append(
            f"| {r['model']} | {r['params_M']:.2f} | {r['active_M']:.2f} | {r['gflops']:.1f} "
            f"| {r['torch_ms']:.1f} / {r['torch_p90']:.1f} | {ratio(r, 'torch_ms')} "
            f"| {r['ort_ms']:.1f} / {r['ort_p90']:.1f} | {ratio(r, 'ort_ms')} | {trt} |"
        )
    return "\n".join(lines)


def benchmark(
    models: list[str],
    imgsz: int = 640,
    batch: int = 1,
    runs: int = 100,
    warmup: int = 10,
    threads: int | None = None,
    project: str | None = None,
    name: str = "benchmark",
) -> tuple[str, Path]:
    """Measure ``models`` side by side; returns the table and the run directory it was written to.

    ``threads`` (default: every CPU core) is used by torch and ONNX Runtime alike; Ultralytics sets
    ``OMP_NUM_THREADS=1`` for training, which would otherwise leave torch on one thread.
    """
    from ultralytics.utils import RUNS_DIR
    from ultralytics.utils.files import increment_path

    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    out_dir = increment_path(Path(project or RUNS_DIR / "benchmark") / name).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    from ultralytics.utils import LOGGER

    threads = threads or os.cpu_count() or 1
    prepared = [prepare(m, imgsz, batch, out_dir) for m in models]
    x = torch.rand(batch, 3, imgsz, imgsz)
    # ONNX Runtime first, for every model: torch's OpenMP workers spin for a while after each run
    # and would steal the cores ONNX Runtime is being timed on.
    for row, _ in prepared:
        LOGGER.info(f"benchmark: {row['model']} ONNX Runtime CPU, {threads} threads, {runs} runs")
        row["ort_ms"], row["ort_p90"] = time_ort(row["onnx"], x.numpy(), threads, runs, warmup)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for row, model in prepared:
            LOGGER.info(f"benchmark: {row['model']} torch eager CPU, {threads} threads, {runs} runs")
            row["torch_ms"], row["torch_p90"] = time_torch(model, x, runs, warmup)
    finally:
        torch.set_num_threads(previous)
    for row, model in prepared:
        row["trt_fp16_ms"] = _tensorrt_ms(model, imgsz, batch, runs, warmup)
    rows = [{k: v for k, v in row.items() if k != "onnx"} for row, _ in prepared]
    table = format_table(rows, imgsz, batch, runs, threads)
    (out_dir / "benchmark.md").write_text(table + "\n")
    with (out_dir / "benchmark.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table, out_dir
