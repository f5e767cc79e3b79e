"""Every touch of Ultralytics beyond its public API, in one place, checked at import.

``import yolo_master`` calls :func:`install`, which first checks that the installed Ultralytics is in
the tested range and that every symbol in :data:`TOUCHES` exists; a missing one stops the import with
one line naming it and the supported range, instead of an ``AttributeError`` mid-training. Then it:

- adds our blocks to ``ultralytics.nn.tasks``' namespace and wraps its ``parse_model`` (``parser.py``);
- adds our classes to the safe-load allow-list (``checkpoints.py``);
- adds FLOPs rules for our blocks to thop (``flops.py``);
- points font lookups at fonts on disk when offline (``runtime.py``);
- lets Ultralytics' QNN backend load a second model in one process, and has its OpenVINO backend run
  full-precision exports in float32 where the CPU would pick bfloat16 (``runtime.py``).

Other modules reach Ultralytics internals only through the helpers here (``runtime.py``) or by
overriding the methods listed in :data:`TOUCHES`.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from .version import TESTED, check_ultralytics_version


class Touch(NamedTuple):
    symbol: str  # dotted path that must exist
    reason: str


TOUCHES = (
    Touch("ultralytics.nn.tasks.parse_model", "wrapped: it infers c1 / scales c2 only for its own blocks"),
    Touch("ultralytics.nn.tasks._SafeLoad._registry", "safe loading's allow-list learns our classes"),
    Touch("ultralytics.nn.tasks._SafeLoad._build", "the allow-list is built before we extend it"),
    Touch("ultralytics.nn.tasks._SafeLoad._lock", "the allow-list is extended under its lock"),
    Touch("ultralytics.utils.checks.check_font", "replaced: a font on disk instead of a download"),
    Touch("ultralytics.utils.plotting.check_font", "replaced: a font on disk instead of a download"),
    Touch("ultralytics.data.utils.check_font", "replaced: a font on disk instead of a download"),
    Touch("ultralytics.cfg._handle_deprecation", "the CLI maps deprecated keys as `yolo` does"),
    Touch("ultralytics.engine.model.Model._new", "overridden: zoo names and the scale in the file name"),
    Touch("ultralytics.engine.model.Model._load", "overridden: official YOLO-Master checkpoints convert on load"),
    Touch("ultralytics.engine.trainer.BaseTrainer.save_model", "overridden: atomic writes, resume_state.pt"),
    Touch("ultralytics.engine.trainer.BaseTrainer.resume_training", "overridden: full-precision resume"),
    Touch("ultralytics.engine.trainer.BaseTrainer.optimizer_step", "overridden: routers' per-step update"),
    Touch("ultralytics.data.build.InfiniteDataLoader.reset", "a fresh iterator each epoch (exact resume)"),
    Touch("ultralytics.nn.tasks.BaseModel.loss", "overridden: the MoE auxiliary loss joins the task loss"),
    Touch("ultralytics.nn.backends.qnn.QNNBackend.load_model", "wrapped: a second QNN model per process loads"),
    Touch("ultralytics.nn.backends.openvino.OpenVINOBackend.load_model", "wrapped: float32 IRs run in float32"),
)


def missing_symbols() -> list[str]:
    """The :data:`TOUCHES` symbols the installed Ultralytics lacks."""
    missing = []
    for touch in TOUCHES:
        parts = touch.symbol.split(".")
        for cut in range(len(parts) - 1, 0, -1):  # longest importable module prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for name in parts[cut:]:
                    obj = getattr(obj, name)
            except AttributeError:
                missing.append(touch.symbol)
            break
        else:
            missing.append(touch.symbol)
    return missing


def check_ultralytics() -> None:
    """Raise ``ImportError`` (one line) when Ultralytics is untested or lacks a symbol we rely on."""
    check_ultralytics_version()
    missing = missing_symbols()
    if missing:
        lo, hi = (".".join(map(str, v)) for v in TESTED)
        import ultralytics

        raise ImportError(
            f"yolo-master needs {missing[0]} ({_reason(missing[0])}), "
            f"which ultralytics {ultralytics.__version__} lacks: install ultralytics>={lo},<{hi}"
        )


def _reason(symbol: str) -> str:
    return next(t.reason for t in TOUCHES if t.symbol == symbol)


def install() -> None:
    """Check, then make our blocks, checkpoints, FLOPs and offline fonts work in Ultralytics (idempotent)."""
    from ..nn import BLOCKS
    from .checkpoints import allow_in_safe_load
    from .flops import register_flops_rules
    from .parser import wrap_parse_model
    from .runtime import full_precision_openvino, reusable_qnn_backend, use_local_fonts

    check_ultralytics()
    tasks = importlib.import_module("ultralytics.nn.tasks")
    for name, cls in BLOCKS.items():  # parse_model resolves YAML module names in this namespace
        setattr(tasks, name, cls)
    if not hasattr(tasks.parse_model, "__wrapped__"):
        tasks.parse_model = wrap_parse_model(tasks.parse_model)
    allow_in_safe_load(tasks)
    register_flops_rules()
    use_local_fonts()
    reusable_qnn_backend()
    full_precision_openvino()


__all__ = ("TOUCHES", "check_ultralytics", "check_ultralytics_version", "install", "missing_symbols")
