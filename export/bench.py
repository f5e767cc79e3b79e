"""Runtime-only latency of exported models, side by side: ONNX (ONNX Runtime, CPU) and TensorRT engines.

    python export/bench.py a.onnx [b.onnx ...] [--threads 2] [--runs 50] [--out reports/ort.md]
    python export/bench.py yolo-master-n.engine yolo12n.engine          # on a machine with a GPU

Standalone on purpose (no torch, no yolo_master import), so it runs on a bare deployment box.
Each model runs on random input of its own static shape (dynamic axes become 1 / 640), batch as
exported. ``.engine`` files (as Ultralytics writes them: a JSON metadata header, then the serialized
engine) run through the TensorRT Python API with device buffers from ``cuda-python``; the time
includes a stream synchronisation but no host-device copies. The table lists the median and p90
latency in ms and each model's ratio to the first one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def _latency(run, warmup: int, runs: int) -> tuple[float, float]:
    """Median and p90 of ``run()`` in ms (kept here, not imported: this file must not import torch)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


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
    return (*_latency(lambda: session.run(None, {inp.name: x}), warmup, runs), shape)


def _engine_bytes(path: Path) -> bytes:
    """The serialized engine, without Ultralytics' metadata header when there is one."""
    data = path.read_bytes()
    size = int.from_bytes(data[:4], "little")
    if 0 < size < len(data) - 4:
        try:
            json.loads(data[4 : 4 + size].decode("utf-8"))
            return data[4 + size :]
        except (UnicodeDecodeError, ValueError):
            pass
    return data


def time_engine(path: Path, warmup: int, runs: int) -> tuple[float, float, list[int]]:
    """Median and p90 latency (ms) of a TensorRT engine (TensorRT >= 10 tensor API)."""
    try:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart
    except ImportError as e:
        raise SystemExit(f"timing {path.name} needs TensorRT and cuda-python on a machine with a GPU ({e})") from None

    def check(result):
        err = result[0] if isinstance(result, tuple) else result
        if int(err) != 0:
            raise SystemExit(f"CUDA error {err} while timing {path.name}")
        return result[1] if isinstance(result, tuple) and len(result) > 1 else None

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(_engine_bytes(path))
    if engine is None:
        raise SystemExit(f"TensorRT could not deserialize {path.name} (built by another TensorRT version?)")
    context = engine.create_execution_context()
    stream = check(cudart.cudaStreamCreate())
    buffers, in_shape = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        shape = list(engine.get_tensor_shape(name))
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            shape = [1 if d < 0 else d for d in shape]
            context.set_input_shape(name, shape)
            in_shape = shape
        nbytes = int(np.prod([max(d, 1) for d in shape])) * np.dtype(trt.nptype(engine.get_tensor_dtype(name))).itemsize
        ptr = check(cudart.cudaMalloc(nbytes))
        buffers.append(ptr)
        context.set_tensor_address(name, ptr)

    def run():
        context.execute_async_v3(stream)
        check(cudart.cudaStreamSynchronize(stream))

    median, p90 = _latency(run, warmup, runs)
    for ptr in buffers:
        check(cudart.cudaFree(ptr))
    return median, p90, in_shape


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path, help=".onnx files and/or TensorRT .engine files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--out", type=Path, help="also write the table to this markdown file")
    a = ap.parse_args(argv)
    for path in a.models:
        if path.suffix not in {".onnx", ".engine"} or not path.is_file():
            ap.error(f"'{path}' is not an existing .onnx or .engine file")
    rows = [
        f"ONNX Runtime CPU ({a.threads} threads) / TensorRT; median of {a.runs} runs after {a.warmup} warm-up",
        "",
        "| model | runtime | input | median ms | p90 ms | ratio |",
        "|---|---|---|---|---|---|",
    ]
    base = None
    for path in a.models:
        if path.suffix == ".engine":
            median, p90, shape = time_engine(path, a.warmup, a.runs)
        else:
            median, p90, shape = time_onnx(path, a.threads, a.warmup, a.runs)
        base = base or median
        runtime = "TensorRT" if path.suffix == ".engine" else "ONNX Runtime CPU"
        shape_text = "x".join(map(str, shape))
        rows.append(f"| {path.name} | {runtime} | {shape_text} | {median:.2f} | {p90:.2f} | {median / base:.2f}x |")
    table = "\n".join(rows)
    print(table)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
