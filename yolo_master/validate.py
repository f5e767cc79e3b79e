"""Checks of values a user types on the command line, before any work starts: one line each.

Ultralytics validates the types of its own keys (``check_cfg``); these add the ranges and forms that
would otherwise fail deep inside torch or ONNX Runtime, or be accepted silently.
"""

from __future__ import annotations

import glob
import math
from pathlib import Path

STRIDE = 32  # the largest stride of every zoo model: sizes are rounded up to a multiple of it
MAX_IMGSZ = 4096
MAX_UNROLLED_BATCH = 64  # the sparse export graphs unroll the batch image by image


class ValueProblem(ValueError):
    """A value out of range or of the wrong form (exit status 2)."""


def _sizes(key: str, value) -> list[int]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or len(values) > 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise ValueProblem(f"'{key}={value}' must be an integer image size (or [height, width]), e.g. {key}=640")
    if any(not STRIDE <= v <= MAX_IMGSZ for v in values):
        raise ValueProblem(f"'{key}={value}' must be between {STRIDE} and {MAX_IMGSZ} pixels")
    return list(values)


def image_size(value, key: str = "imgsz") -> int:
    """A square size for ``info`` / ``benchmark`` / ``routes``, rounded up to a multiple of the stride."""
    sizes = _sizes(key, value)
    size = max(sizes)
    rounded = math.ceil(size / STRIDE) * STRIDE
    if rounded != size or len(set(sizes)) > 1:
        print(f"{key}={value}: using {rounded} (square, a multiple of the model stride {STRIDE})")
    return rounded


def check_imgsz(value) -> None:
    """``imgsz`` for Ultralytics' own modes (which round it to the stride themselves)."""
    _sizes("imgsz", value)


def check_batch(mode: str, value) -> None:
    """``batch >= 1``; training also takes Ultralytics' auto-batch forms (-1, or a fraction in (0, 1))."""
    auto = mode == "train" and (value == -1 or (isinstance(value, float) and 0 < value < 1))
    if auto:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        extra = " (or -1 / a fraction in (0, 1) for auto-batch)" if mode == "train" else ""
        raise ValueProblem(f"'batch={value}' must be an integer >= 1{extra}")


def check_export_batch(value, dynamic: bool, strategy: str | None) -> None:
    """The sparse graphs are unrolled per image: refuse a batch that would make a huge graph."""
    if not dynamic and strategy != "dense" and isinstance(value, int) and value > MAX_UNROLLED_BATCH:
        raise ValueProblem(
            f"'batch={value}': the sparse ES-MoE graph is unrolled image by image, so a batch over "
            f"{MAX_UNROLLED_BATCH} makes a graph that size; export batch<={MAX_UNROLLED_BATCH}, or strategy=dense "
            "dynamic=True for any batch"
        )


def check_output(out: str | Path, source: str | Path, exist_ok: bool, source_name: str = "input") -> None:
    """An output file may not be its own input, nor replace an existing file unless ``exist_ok``."""
    out = Path(out)
    if out.resolve() == Path(source).resolve():
        raise ValueProblem(f"out={out} would overwrite the {source_name}: choose another name")
    if out.exists() and not exist_ok:
        raise ValueProblem(f"{out} exists: choose another out=, or pass exist_ok=True to replace it")


def check_exported_folder(folder: str | Path) -> None:
    """An exported model folder (``*_openvino_model/`` and the like) must keep the ``metadata.yaml`` that
    export writes beside the model: without it Ultralytics guesses the task, names and image size. An ONNX
    model in the folder (``*_xilinx_model/``) carries that metadata itself."""
    folder = Path(folder)
    if not (folder / "metadata.yaml").is_file() and not any(folder.glob("*.onnx")):
        raise ValueProblem(
            f"'{folder}' has no metadata.yaml (the task, class names, image size and batch that export writes "
            "beside the model): copy it back from the export, or export again"
        )


def exported_metadata(model) -> dict | None:
    """The ``metadata.yaml`` of an exported model folder (``model`` as Ultralytics keeps it: a path); else None."""
    if not isinstance(model, (str, Path)) or not (Path(model) / "metadata.yaml").is_file():
        return None
    import yaml

    return yaml.safe_load((Path(model) / "metadata.yaml").read_text()) or {}


def check_exported_request(model, args: dict) -> None:
    """``imgsz`` and ``batch`` asked of a static exported model (``model`` as Ultralytics keeps an exported
    folder: its path; anything else passes) must be the ones it was exported with (Ultralytics runs such
    requests without an error)."""
    metadata = exported_metadata(model)
    if not metadata or metadata.get("args", {}).get("dynamic") or "imgsz" not in metadata:
        return
    size, batch = [int(v) for v in metadata["imgsz"]], int(metadata.get("batch", 1))
    if "imgsz" in args and args["imgsz"] is not None:
        asked = [math.ceil(v / STRIDE) * STRIDE for v in _sizes("imgsz", args["imgsz"])]  # as Ultralytics rounds
        asked = asked * 2 if len(asked) == 1 else asked
        if asked != size:
            shown = size[0] if size[0] == size[1] else size
            raise ValueProblem(
                f"{model} was exported for imgsz={shown}: run it with imgsz={shown} (or leave imgsz out), "
                f"or export again with imgsz={args['imgsz']} (dynamic=True where the format allows)"
            )
    if args.get("batch") not in (None, batch) and int(args["batch"]) > batch:
        raise ValueProblem(
            f"{model} was exported for batch={batch}: use batch<={batch}, or export again with batch={args['batch']}"
        )


def check_source(source) -> None:
    """What Ultralytics accepts as a source: a file or folder, a glob with matches, a webcam index,
    ``screen``, or a URL / stream (those may use the network, on purpose)."""
    text = str(source)
    if text.isdigit() or text.startswith("screen") or "://" in text or Path(text).exists():
        return
    if any(c in text for c in "*?[") and glob.glob(text, recursive=True):
        return
    raise FileNotFoundError(f"source '{source}' does not exist")


def check_image_arrays(source) -> None:
    """Arrays given to ``predict`` in Python: ``H x W x C`` uint8 as OpenCV reads images (BGR, 0-255), and
    tensors ``B x 3 x H x W`` floats in [0, 1], as Ultralytics takes them; anything else says how to fix it."""
    import numpy as np
    import torch

    for a in source if isinstance(source, (list, tuple)) else [source]:
        if isinstance(a, np.ndarray):
            shape = tuple(a.shape)
            if a.ndim not in (2, 3) or (a.ndim == 3 and shape[2] not in (1, 3, 4)):
                hint = ""
                if a.ndim == 3 and shape[0] in (1, 3, 4):
                    hint = " (it looks channel-first: pass a.transpose(1, 2, 0))"
                raise ValueProblem(f"an image array must be height x width [x 1, 3 or 4 channels], got {shape}{hint}")
            if a.dtype != np.uint8:
                if a.dtype.kind == "f" and not np.isfinite(a).all():
                    raise ValueProblem("the image array holds NaN or Inf values")
                hint = " (values in [0, 1]? pass (a * 255).astype(np.uint8))" if a.dtype.kind == "f" else ""
                raise ValueProblem(f"an image array must be uint8, 0-255 (BGR as OpenCV reads it), got {a.dtype}{hint}")
        elif isinstance(a, torch.Tensor):
            if a.ndim != 4 or a.shape[1] != 3 or not a.is_floating_point():
                raise ValueProblem(f"an image tensor must be float, batch x 3 x height x width, got {tuple(a.shape)}")
            if not torch.isfinite(a).all() or a.min() < 0 or a.max() > 1:
                raise ValueProblem("an image tensor must hold finite values in [0, 1]")
