"""``yolo-master benchmark``: models side by side in one run — size, compute and latency with ratios.

For each model (zoo name, model YAML, or checkpoint; stock Ultralytics YAMLs such as ``yolo12n.yaml``
too): parameters, active parameters (top-K experts), GFLOPs, then batch latency (median and p90
over ``runs`` after warm-up) in torch eager on the CPU, in ONNX Runtime and in OpenVINO on the CPU
(the model is exported first in each format's default form, ES-MoE routing kept in the graph; each
exported model is timed in a process of its own by ``export/timing.py``, since OpenVINO's worker
threads slow ONNX Runtime several-fold in a shared process), and TensorRT FP16 where a GPU and
TensorRT are present. Ratios are against the first model. The table is printed and written to the
run directory.
"""

from __future__ import annotations

import csv
import os
import shutil
from copy import deepcopy
from importlib.util import find_spec
from pathlib import Path

import torch

from .export import timing
from .export.timing import latency
from .nn.cost import active_params

RUNTIME_COLUMNS = {"ort": ("onnx", "ORT CPU ms"), "ov": ("openvino", "OpenVINO CPU ms")}  # key -> (format, header)


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
    formats = ["onnx"] + (["openvino"] if find_spec("openvino") else [])
    cwd = Path.cwd()
    os.chdir(out_dir)  # models built from a YAML export into the working directory
    try:
        for fmt in formats:
            exported = Path(model.export(format=fmt, imgsz=imgsz, batch=batch, verbose=False)).resolve()
            target = out_dir / (f"{Path(name).stem}.onnx" if fmt == "onnx" else f"{Path(name).stem}_openvino_model")
            if target != exported:
                if target.is_dir():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    target.unlink(missing_ok=True)
                exported.replace(target)
            row[fmt] = target
    finally:
        os.chdir(cwd)
    return row, model


def time_torch(model, x: torch.Tensor, runs: int, warmup: int) -> tuple[float, float]:
    net = deepcopy(model.model).float().eval()
    with torch.inference_mode():
        return latency(lambda: net(x), warmup, runs)


TRAIN_STEP = (8, 320)  # batch, image size of the training-step row (issue 14's measurement)


def detect_batch(batch: int, imgsz: int) -> dict:
    """A synthetic detection batch: random images, one box of class 0 per image (labels as Ultralytics'
    collate gives them)."""
    return {
        "img": torch.rand(batch, 3, imgsz, imgsz),
        "cls": torch.zeros(batch, 1),
        "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]]).repeat(batch, 1),
        "batch_idx": torch.arange(batch, dtype=torch.float32),
    }


def balance_routes(net: torch.nn.Module) -> None:
    """Make every routed block of ``net`` spread its images evenly over its experts, round robin.

    A fresh gate sends every image of a batch to the same K experts, and which K decides the cost (in the
    P2 block a 3x3 expert's backward is several times cheaper than a 9x9 one's): a training-step time
    from that one route says more about the seed than about the model. A trained, balanced router runs
    each expert on about ``B * K / E`` images; this adds a constant per-image offset to the gate's logits
    so that image ``i`` chooses experts ``i*K .. i*K + K - 1`` (mod E). The computation is unchanged
    otherwise (the offset is the same for the chosen, so their weights and gradients are the gate's).
    """
    from .nn.block import moe_layers

    for block in moe_layers(net):
        router = block.router
        if not isinstance(getattr(router, "logits", None), torch.nn.Conv2d) or router.all_experts:
            continue

        def spread(module, inputs, out, k=router.top_k):
            b, e = out.shape[:2]
            chosen = (torch.arange(b)[:, None] * k + torch.arange(k)[None]) % e
            offset = torch.zeros(b, e).scatter(1, chosen, 30.0)
            return out + offset.to(out)[:, :, None, None]

        router.logits.register_forward_hook(spread)


def train_step(model, batch: int = TRAIN_STEP[0], imgsz: int = TRAIN_STEP[1]):
    """One training step (forward, the task loss with the MoE term, backward) of a copy of a detection
    model in train mode, routes balanced (:func:`balance_routes`), as a callable; None for other tasks.
    The optimizer update is left out: it is the same per parameter for every model."""
    from ultralytics.cfg import get_cfg

    if getattr(model, "task", None) != "detect":
        return None
    net = deepcopy(model.model).float().train()
    for p in net.parameters():
        p.requires_grad_(True)
    net.args = get_cfg(overrides={"task": "detect"})  # the loss gains, as a trainer would set them
    balance_routes(net)
    data = detect_batch(batch, imgsz)

    def step():
        net.zero_grad(set_to_none=True)
        loss, _ = net.loss(data)
        loss.sum().backward()

    return step


def time_train_step(model, runs: int, warmup: int, batch: int = TRAIN_STEP[0], imgsz: int = TRAIN_STEP[1]):
    """Median and p90 ms of :func:`train_step`; None for tasks other than detection."""
    step = train_step(model, batch, imgsz)
    return None if step is None else latency(step, warmup, runs)


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


def format_table(rows: list[dict], imgsz: int, batch: int, runs: int, threads: int, rounds: int = 1) -> str:
    """Markdown table with ratios against the first row."""
    first = rows[0]

    def ratio(row, key):
        return f"{row[key] / first[key]:.2f}x" if row.get(key) and first.get(key) else "n/a"

    def timed(row, key):
        return f"{row[key]:.1f} / {row[key.replace('_ms', '_p90')]:.1f}" if row.get(key) else "n/a"

    lines = [
        f"batch {batch}, {imgsz}x{imgsz}, {threads} CPU threads, median / p90 of {runs} runs"
        + (f", fastest of {rounds} interleaved rounds" if rounds > 1 else "")
        + "; each exported model "
        f"timed in its own process; torch {torch.__version__}; ratios vs {first['model']}",
        "",
        "| model | params (M) | active (M) | GFLOPs | torch CPU ms | ratio | ORT CPU ms | ratio | OpenVINO CPU ms "
        f"| ratio | TRT FP16 ms | train step ms (batch {TRAIN_STEP[0]}, {TRAIN_STEP[1]} px, fwd + bwd) | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        trt = f"{r['trt_fp16_ms']:.2f}" if r["trt_fp16_ms"] else "n/a (no GPU/TensorRT)"
        lines.append(
            f"| {r['model']} | {r['params_M']:.2f} | {r['active_M']:.2f} | {r['gflops']:.1f} "
            f"| {timed(r, 'torch_ms')} | {ratio(r, 'torch_ms')} | {timed(r, 'ort_ms')} | {ratio(r, 'ort_ms')} "
            f"| {timed(r, 'ov_ms')} | {ratio(r, 'ov_ms')} | {trt} | {timed(r, 'train_ms')} | {ratio(r, 'train_ms')} |"
        )
    return "\n".join(lines)


def keep_fastest(row: dict, key: str, timed: tuple[float | None, float | None]) -> None:
    """Store ``(median, p90)`` as ``row[key_ms]`` / ``row[key_p90]`` unless an earlier round's median was lower."""
    median, p90 = timed
    if median is not None and (row.get(f"{key}_ms") is None or median < row[f"{key}_ms"]):
        row[f"{key}_ms"], row[f"{key}_p90"] = median, p90
    row.setdefault(f"{key}_ms", None)
    row.setdefault(f"{key}_p90", None)


def time_exported(rows: list[dict], threads: int, warmup: int, runs: int, note: str = "") -> None:
    """One round: every exported model of every row (``row["onnx"]``, ``row["openvino"]``) timed in a process of
    its own, each cell of ``RUNTIME_COLUMNS`` keeping its fastest round (:func:`keep_fastest`).

    Raises:
        RuntimeError: a timing failed; the message is the child's last error line.
    """
    from ultralytics.utils import LOGGER

    for row in rows:
        for key, (fmt, header) in RUNTIME_COLUMNS.items():
            if fmt in row:
                LOGGER.info(f"benchmark: {row['model']} {header[:-3]}, {threads} threads, {runs} runs{note}")
                keep_fastest(row, key, timing.time_in_own_process(row[fmt], threads, warmup, runs)[:2])


def benchmark(
    models: list[str],
    imgsz: int = 640,
    batch: int = 1,
    runs: int = 100,
    warmup: int = 10,
    threads: int | None = None,
    project: str | None = None,
    name: str = "benchmark",
    rounds: int = 1,
) -> tuple[str, Path]:
    """Measure ``models`` side by side; returns the table and the run directory it was written to.

    ``threads`` (default: every CPU core) is used by torch and ONNX Runtime alike; Ultralytics sets
    ``OMP_NUM_THREADS=1`` for training, which would otherwise leave torch on one thread. ``rounds``:
    every measurement is repeated in that many interleaved rounds and each cell keeps its fastest round
    (a machine's drift then lands on every model alike, not on whichever ran during it).
    """
    from ultralytics.utils import RUNS_DIR
    from ultralytics.utils.files import increment_path

    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got rounds={rounds}")
    out_dir = increment_path(Path(project or RUNS_DIR / "benchmark") / name).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    from ultralytics.utils import LOGGER

    threads = threads or os.cpu_count() or 1
    prepared = [prepare(m, imgsz, batch, out_dir) for m in models]
    x = torch.rand(batch, 3, imgsz, imgsz)
    of_round = f" (round {{}} of {rounds})" if rounds > 1 else ""
    for r in range(1, rounds + 1):
        time_exported([row for row, _ in prepared], threads, warmup, runs, of_round.format(r))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        steps, step_warmup = max(runs // 10, 2), min(warmup, 2)  # a training step costs ~10 inferences
        for r in range(1, rounds + 1):
            for row, model in prepared:
                LOGGER.info(
                    f"benchmark: {row['model']} torch eager CPU, {threads} threads, {runs} runs" + of_round.format(r)
                )
                keep_fastest(row, "torch", time_torch(model, x, runs, warmup))
            for row, model in prepared:
                LOGGER.info(
                    f"benchmark: {row['model']} training step (batch {TRAIN_STEP[0]}, {TRAIN_STEP[1]} px)"
                    + of_round.format(r)
                )
                keep_fastest(row, "train", time_train_step(model, steps, step_warmup) or (None, None))
    finally:
        torch.set_num_threads(previous)
    for row, model in prepared:
        row["trt_fp16_ms"] = _tensorrt_ms(model, imgsz, batch, runs, warmup)
    rows = [{k: v for k, v in row.items() if k not in {"onnx", "openvino"}} for row, _ in prepared]
    table = format_table(rows, imgsz, batch, runs, threads, rounds)
    (out_dir / "benchmark.md").write_text(table + "\n")
    with (out_dir / "benchmark.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table, out_dir
