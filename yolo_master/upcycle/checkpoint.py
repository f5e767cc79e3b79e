"""Reading the dense checkpoint and writing the upcycled one, in Ultralytics' own checkpoint format.

The output is what ``Model.save`` writes (``model``, ``train_args``, date / version metadata) plus an
``upcycle`` record, so ``yolo-master train|val|predict|export model=x-moe.pt`` take it like any ``.pt``.
Unlike ``Model.save`` the model stays in float32: folding the hidden BatchNorm into fp16 weights
would round the upcycled FFN away from the dense one, and the first MoE-tuning checkpoint halves it anyway.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from .insert import UpcycleError


def load_dense(path: str | Path) -> tuple[nn.Module, dict]:
    """The checkpoint's model (float32, eval) and the checkpoint dict.

    Raises:
        FileNotFoundError: no such file.
        UpcycleError: not a ``.pt``, not readable as a checkpoint, or holding no Ultralytics model.
    """
    from ultralytics.nn.tasks import torch_safe_load

    path = Path(str(path))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' not found (upcycle needs a trained .pt; nothing is downloaded)")
    if path.suffix != ".pt":
        raise UpcycleError(f"model={path} is not a .pt checkpoint: upcycle starts from trained weights")
    try:
        ckpt, _ = torch_safe_load(str(path))
    except (TypeError, AttributeError, RuntimeError) as e:  # Ultralytics' damaged-file errors, foreign pickles
        raise UpcycleError(f"'{path}' is not a loadable Ultralytics checkpoint ({type(e).__name__})") from None
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(model, nn.Module) or not isinstance(getattr(model, "yaml", None), dict):
        raise UpcycleError(
            f"'{path}' holds no Ultralytics model (expected a dict with 'model' or 'ema' built from a YAML)"
        )
    from ultralytics.nn.tasks import guess_model_task

    model = model.float().eval()
    model.task = getattr(model, "task", None) or guess_model_task(model)  # as Ultralytics' load_checkpoint
    model.args = {**(getattr(model, "args", None) or {}), **(ckpt.get("train_args") or {})}
    return model, ckpt


def save_upcycled(model: nn.Module, ckpt: dict, record: dict, out: str | Path) -> Path:
    """Write ``model`` (float32) as an Ultralytics checkpoint, atomically; returns the path."""
    from ultralytics import __version__

    from ..engine.atomic import write_atomically

    out = Path(str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    model.criterion = None  # training-only state, rebuilt by the trainer
    buffer = io.BytesIO()
    torch.save(
        {
            "date": datetime.now().astimezone().isoformat(),
            "version": __version__,
            "license": "AGPL-3.0 License (https://ultralytics.com/license)",
            "docs": "https://docs.ultralytics.com",
            "model": model,
            "train_args": dict(ckpt.get("train_args") or {}),
            "upcycle": record,
        },
        buffer,
    )
    write_atomically(out, buffer.getvalue())
    return out
