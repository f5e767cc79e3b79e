"""Latency of one exported model in its own runtime: ONNX Runtime or OpenVINO on the CPU, TensorRT on a GPU.

Free of torch and of the rest of the package on purpose: ``export/bench.py`` loads this file by path on
a bare deployment box. Both it and ``yolo-master benchmark`` time each exported model with
:func:`time_in_own_process`, which runs this file (``python timing.py MODEL``) in a fresh interpreter:
OpenVINO's worker threads keep spinning after a run and slow ONNX Runtime several-fold when both live
in one process. Run as a script it prints ``[median_ms, p90_ms, shape]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def latency(run, warmup: int = 10, runs: int = 100) -> tuple[float, float]:
    """Median and p90 of ``run()`` in ms, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))]


def _static(dims: list[int | None]) -> list[int]:
    """An input shape to time with: batch 1, other dynamic axes (None) 640."""
    return [1 if i == 0 else 640 if d is None else d for i, d in enumerate(dims)]


def _random(dims: list[int | None]) -> np.ndarray:
    return np.random.default_rng(0).random(_static(dims), dtype=np.float32)


def onnx_input(session) -> tuple[str, np.ndarray]:
    """An ONNX Runtime session's first input name and a random float32 input of its static shape."""
    inp = session.get_inputs()[0]
    return inp.name, _random([d if isinstance(d, int) and d > 0 else None for d in inp.shape])


def openvino_input(model) -> np.ndarray:
    """A random float32 input of an OpenVINO model's first input shape (dynamic axes as for ONNX)."""
    return _random([None if d.is_dynamic else d.get_length() for d in model.input(0).partial_shape])


def onnx_session(path: Path, threads: int, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session on ``threads`` intra-op threads (profiling to ``profile_prefix`` if given)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def openvino_config(threads: int) -> dict:
    """OpenVINO CPU settings for timing: latency mode on ``threads`` threads, float32.

    float32, as YOLOMaster runs full-precision IRs (integration/runtime.py): OpenVINO's own default is
    bfloat16 on CPUs that have it, which would make timings incomparable between machines."""
    return {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


def time_onnx(path: Path, threads: int, warmup: int, runs: int) -> tuple[float, float, list[int]]:
    """Median and p90 latency (ms) of one ONNX model with ONNX Runtime's CPU provider."""
    session = onnx_session(path, threads)
    name, x = onnx_input(session)
    return (*latency(lambda: session.run(None, {name: x}), warmup, runs), list(x.shape))


def openvino_xml(path: Path) -> Path | None:
    """The IR of an OpenVINO model folder (as Ultralytics writes it) or an ``.xml`` file; else None."""
    if path.suffix == ".xml" and path.is_file():
        return path
    found = sorted(path.glob("*.xml")) if path.is_dir() else []
    return found[0] if found else None


def time_openvino(path: Path, threads: int, warmup: int, runs: int) -> tuple[float, float, list[int]]:
    """Median and p90 latency (ms) of one OpenVINO IR on the CPU, latency hint, ``threads`` threads."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(openvino_xml(path)))
    compiled = core.compile_model(model, "CPU", openvino_config(threads))
    x = openvino_input(model)
    request = compiled.create_infer_request()
    return (*latency(lambda: request.infer({0: x}), warmup, runs), list(x.shape))


RUNTIMES = {"onnx": "ONNX Runtime CPU", "openvino": "OpenVINO CPU", "engine": "TensorRT"}


def runtime_of(path: Path) -> str | None:
    """``onnx``, ``openvino`` or ``engine`` for a model this script can time; else None."""
    if path.suffix in {".onnx", ".engine"} and path.is_file():
        return path.suffix[1:]
    return "openvino" if openvino_xml(path) else None


def time_one(path: Path, threads: int, warmup: int, runs: int) -> tuple[float, float, list[int]]:
    """Time ``path`` in this process with the runtime its format needs."""
    kind = runtime_of(path)
    if kind == "engine":
        return time_engine(path, warmup, runs)
    if kind == "openvino":
        return time_openvino(path, threads, warmup, runs)
    return time_onnx(path, threads, warmup, runs)


def time_in_own_process(path: Path, threads: int, warmup: int, runs: int) -> tuple[float, float, list[int]]:
    """:func:`time_one` in a fresh interpreter running this file: no other runtime's threads share it.

    Raises:
        RuntimeError: the timing failed; the message is the child's last error line.
    """
    cmd = [sys.executable, __file__, str(path), "--threads", str(threads), "--warmup", str(warmup)]
    proc = subprocess.run([*cmd, "--runs", str(runs)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"timing {path} failed: {' '.join(proc.stderr.strip().splitlines()[-1:])}")
    median, p90, shape = json.loads(proc.stdout.strip().splitlines()[-1])
    return median, p90, shape


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

    median, p90 = latency(run, warmup, runs)
    for ptr in buffers:
        check(cudart.cudaFree(ptr))
    return median, p90, in_shape


def main(argv: list[str] | None = None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help=".onnx file, OpenVINO folder or .xml, TensorRT .engine")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=50)
    a = ap.parse_args(argv)
    if runtime_of(a.model) is None:
        ap.error(f"'{a.model}' is not an existing .onnx, .engine, OpenVINO .xml or OpenVINO model folder")
    result = list(time_one(a.model, a.threads, a.warmup, a.runs))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
