"""Small touches of Ultralytics' runtime behaviour, each for one reason given beside it.

- offline fonts: plotting asks ``check_font`` for Arial and, when the font is not on disk, probes
  the asset server; we point those lookups at a font on disk;
- ``quiet_logs``: Ultralytics' classifier prints its summary whatever ``verbose`` says;
- ``hidden_keys``: validators re-check ``args`` against Ultralytics' defaults and reject our keys;
- ``reset_epoch_data``: exact resume needs each epoch's batches to depend only on (seed, epoch);
- ``reusable_qnn_backend``: a second QNN model in one process (``predict`` then ``val``) failed with
  "EP library is already registered": Ultralytics registers the QNN plugin on every load;
- ``full_precision_openvino``: OpenVINO's CPU plugin runs a float32 IR in bfloat16 wherever the CPU has
  it (AVX512_BF16, AMX), unasked.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

FONT_MODULES = ("ultralytics.utils.checks", "ultralytics.utils.plotting", "ultralytics.data.utils")


def configure_environment() -> None:
    """Default Ultralytics to offline, no auto-install (read once when ``ultralytics`` is imported)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    # MNN's converter wrapper, when imported, pip-installs a logging SDK and posts usage to a server;
    # it runs without that logger when the module cannot be imported.
    sys.modules.setdefault("MNN.tools.utils.log", None)


def local_font(font: str = "Arial.ttf") -> Path:
    """A font file on disk for ``font``, never downloaded."""
    from matplotlib import font_manager
    from ultralytics.utils import USER_CONFIG_DIR

    name = Path(font).name
    if (USER_CONFIG_DIR / name).exists():
        return USER_CONFIG_DIR / name
    for entry in font_manager.fontManager.ttflist:
        if Path(entry.fname).name == name and os.path.exists(entry.fname):
            return Path(entry.fname)
    return Path(font_manager.findfont("DejaVu Sans"))


def use_local_fonts() -> None:
    """Route Ultralytics' font lookups to :func:`local_font` while running offline."""
    from ultralytics.utils import env_bool

    if not env_bool("YOLO_OFFLINE"):
        return
    for module in FONT_MODULES:
        importlib.import_module(module).check_font = local_font


@contextmanager
def quiet_logs():
    """Ultralytics' logger at WARNING for the duration (model summaries it prints regardless of ``verbose``)."""
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)


@contextmanager
def patched_attribute(owner, name: str, value):
    """``owner.name`` set to ``value`` for the duration, then put back (how the touches below reach one
    call inside an Ultralytics or converter function without replacing the function)."""
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


@contextmanager
def hidden_keys(args, keys):
    """Temporarily take ``keys`` off the ``args`` namespace (validators re-validate it against the defaults)."""
    saved = {k: args.__dict__.pop(k) for k in keys if k in args.__dict__}
    try:
        yield args
    finally:
        args.__dict__.update(saved)


def map_deprecated_keys(args: dict) -> None:
    """Rename deprecated keys (``half=True`` -> ``quantize=16``, ...) in place, with Ultralytics' warning."""
    from ultralytics.cfg import _handle_deprecation

    _handle_deprecation(args)


def reset_epoch_data(loader) -> None:
    """Fresh loader iterator and an empty mosaic buffer, as at the start of a run.

    The sampler draws each epoch's permutation lazily from the loader's generator and a new iterator
    takes its worker seed from it; the dataset's mosaic buffer carries images from one epoch into the
    next. Both must restart for an epoch's batches to depend only on the seed and the epoch.
    """
    if hasattr(loader, "reset"):
        loader.reset()
    dataset = loader.dataset
    if isinstance(getattr(dataset, "buffer", None), list):
        for i in dataset.buffer:
            dataset.ims[i] = dataset.im_hw0[i] = dataset.im_hw[i] = None
        dataset.buffer.clear()


def reusable_qnn_backend() -> None:
    """Let Ultralytics' QNN backend load more than one model per process: ONNX Runtime refuses to
    register the QNN plugin library twice, and the backend registers it on every load. Wrapped so that
    a registration already made is reused (idempotent)."""
    backend = importlib.import_module("ultralytics.nn.backends.qnn").QNNBackend
    if hasattr(backend.load_model, "__wrapped__"):
        return
    load_model = backend.load_model

    def load_model_once_registered(self, weight):
        import onnxruntime

        register = onnxruntime.register_execution_provider_library

        def register_once(name, path):
            if not any(d.ep_name == name for d in onnxruntime.get_ep_devices()):
                register(name, path)

        with patched_attribute(onnxruntime, "register_execution_provider_library", register_once):
            return load_model(self, weight)

    load_model_once_registered.__wrapped__ = load_model
    backend.load_model = load_model_once_registered


def full_precision_openvino() -> None:
    """Compile OpenVINO models exported in full precision (no ``half``/``int8``) with float32 inference on
    the CPU. OpenVINO's default there is bfloat16 wherever the CPU has it: about three significant digits,
    and an ES-MoE gate whose top scores are close can then pick other experts (measured on an AVX512_BF16
    CPU: 0.07-0.53 of the output's range over 8 inputs, 0.01-0.02 on inputs whose routes are far apart).
    ``half=True`` exports keep OpenVINO's choice."""
    backend = importlib.import_module("ultralytics.nn.backends.openvino").OpenVINOBackend
    if hasattr(backend.load_model, "__wrapped__"):
        return
    load_model = backend.load_model

    def load_model_full_precision(self, weight):
        import openvino as ov

        if _exported_quantized(weight):
            return load_model(self, weight)
        compile_model = ov.Core.compile_model

        def compile_float32(core, model, device_name=None, config=None, **kwargs):
            if device_name == "CPU":
                config = {"INFERENCE_PRECISION_HINT": ov.Type.f32, **(config or {})}
            return compile_model(core, model, device_name=device_name, config=config, **kwargs)

        with patched_attribute(ov.Core, "compile_model", compile_float32):
            return load_model(self, weight)

    load_model_full_precision.__wrapped__ = load_model
    backend.load_model = load_model_full_precision


def _exported_quantized(weight) -> bool:
    """Whether an exported OpenVINO model's ``metadata.yaml`` records ``half`` or ``int8`` (``quantize``)."""
    from ..validate import exported_metadata

    folder = Path(weight) if Path(weight).is_dir() else Path(weight).parent
    args = (exported_metadata(folder) or {}).get("args", {})
    return bool(args.get("quantize") or args.get("half") or args.get("int8"))
