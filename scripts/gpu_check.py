"""GPU checks in one call: TensorRT engine build + parity, and FP16 batch-1 latency side by side.

    bash scripts/gpu_check.sh                 # on a machine with an NVIDIA GPU
    python scripts/gpu_check.py --dry-run     # CPU, float32, tiny input: exercises every code path but timing

For YOLO-Master-N, YOLO11n and YOLO12n (built from their YAMLs, random weights) at 640 px, batch 1:

1. PyTorch CUDA FP16 eager latency (ES-MoE runs ``select``: only the chosen experts);
2. PyTorch CUDA FP16 with the forward captured in a CUDA graph (ES-MoE runs ``gather``: a graph
   cannot hold host-side routing or data-dependent shapes);
3. where TensorRT is installed: the engine built from the exported ONNX (``gather`` strategy,
   FP16), its parity against PyTorch CUDA FP16 on random inputs, and its latency.

Prints one table with ratios against the first model and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
from report import emit

from yolo_master.benchmark import latency, load_any
from yolo_master.export.prepare import traced_strategy

MODELS = ("yolo-master-n.yaml", "yolo-master-esmoe-n.yaml", "yolo11n.yaml", "yolo12n.yaml")  # + the v0 release


def eager_ms(net, x, runs: int, sync) -> float:
    with torch.inference_mode():
        return latency(lambda: (net(x), sync()), warmup=10, runs=runs)[0]


def cuda_graph_ms(net, x, runs: int) -> float:
    """Capture one forward in a CUDA graph and time its replays."""
    static_x = x.clone()
    with torch.inference_mode():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm up kernels and allocator outside the capture
                net(static_x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            net(static_x)
    return latency(lambda: (graph.replay(), torch.cuda.synchronize()), warmup=10, runs=runs)[0]


def first_output(y):
    return (y[0] if isinstance(y, (list, tuple)) else y).float()


def tensorrt_row(model, net, imgsz: int, runs: int, device) -> tuple[float | None, float | None, str]:
    """Engine latency and max |engine - PyTorch FP16| over random inputs, or why it was skipped."""
    if find_spec("tensorrt") is None:
        return None, None, "TensorRT not installed"
    from ultralytics.nn.autobackend import AutoBackend

    engine = model.export(format="engine", half=True, imgsz=imgsz, batch=1, device=0, verbose=False)
    backend = AutoBackend(engine, device=device, fp16=True)
    diffs = []
    rng = np.random.default_rng(0)
    for _ in range(8):
        x = torch.from_numpy(rng.random((1, 3, imgsz, imgsz), dtype=np.float32)).to(device).half()
        with torch.inference_mode():
            diffs.append(float((first_output(backend(x)) - first_output(net(x))).abs().max()))
    x = torch.rand(1, 3, imgsz, imgsz, device=device).half()
    ms = latency(lambda: (backend(x), torch.cuda.synchronize()), warmup=10, runs=runs)[0]
    return ms, max(diffs), str(engine)


def cell(value: float | None, base: float | None) -> str:
    """``ms | ratio`` table cells."""
    if value is None:
        return "n/a | n/a"
    return f"{value:.2f} | {value / base:.2f}x" if base else f"{value:.2f} | n/a"


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--dry-run", action="store_true", help="CPU, float32, imgsz 64, 3 runs: check the code paths")
    ap.add_argument("--out", type=Path, default=Path("reports/gpu_check.md"))
    a = ap.parse_args(argv)
    gpu = torch.cuda.is_available() and not a.dry_run
    if not gpu and not a.dry_run:
        sys.exit("gpu_check: no CUDA device here; run it on the GPU machine, or pass --dry-run")
    device = torch.device("cuda:0" if gpu else "cpu")
    imgsz, runs = (a.imgsz, a.runs) if gpu else (64, 3)

    def sync():
        if gpu:
            torch.cuda.synchronize()

    header = torch.cuda.get_device_name(0) if gpu else "CPU dry run (float32, no timing claims)"
    rows = [
        f"{header}; torch {torch.__version__}; batch 1, {imgsz} px, FP16; median of {runs} runs",
        "",
        "| model | torch eager ms | ratio | torch CUDA graph ms | ratio | TensorRT ms | ratio | TRT vs torch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = {}
    for name in MODELS:
        model = load_any(name)
        net = model.model.to(device).eval()
        net = net.half() if gpu else net.float()
        x = torch.rand(1, 3, imgsz, imgsz, device=device, dtype=torch.half if gpu else torch.float)
        eager = eager_ms(net, x, runs, sync)
        with traced_strategy(net, "gather"):
            graph = cuda_graph_ms(net, x, runs) if gpu else None
        trt_ms, trt_diff, note = tensorrt_row(model, net, imgsz, runs, device) if gpu else (None, None, "dry run")
        cells = {"eager": eager, "graph": graph, "trt": trt_ms}
        base = base or cells
        diff = f"max abs diff {trt_diff:.3g}" if trt_diff is not None else note
        timings = " | ".join(cell(cells[k], base[k]) for k in ("eager", "graph", "trt"))
        rows.append(f"| {Path(name).stem} | {timings} | {diff} |")
    return emit("\n".join(rows), a.out)


if __name__ == "__main__":
    main()
