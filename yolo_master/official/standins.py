"""Inert stand-ins for the classes an official YOLO-Master checkpoint pickles, and what may be unpickled.

Official checkpoints name the fork's own classes (``ultralytics.nn.modules.moe...``), which stock
Ultralytics does not have. They are unpickled with ``weights_only=True``: only the globals allowed here
can be named, each official class becomes an empty ``nn.Module`` holding the pickled parameters and
attributes (no code of the checkpoint runs, none of the fork is imported), and anything else stops the
load with a line naming it. The stand-ins exist only long enough for ``convert.py`` to read their tensors.
"""

from __future__ import annotations

import importlib

from torch import nn

V0_MODULES = ("ultralytics.nn.modules.moe",)  # code of the v0.0.0 tag: one module
V26_MODULES = ("ultralytics.nn.modules.moe.modules", "ultralytics.nn.modules.moe.routers",
               "ultralytics.nn.modules.moe.experts", "ultralytics.nn.modules.moe.loss")  # fmt: skip
MOE_PREFIX = "ultralytics.nn.modules.moe"


class OfficialModule(nn.Module):
    """An official class's instance, unpickled as plain module state (parameters, buffers, attributes)."""

    official_name = ""

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"{self.official_name} from an official checkpoint is converted before use")


def _stand_in(name: str) -> type[OfficialModule]:
    return type(name, (OfficialModule,), {"official_name": name, "__module__": __name__})


# official class -> the release it belongs to; both code layouts name the same classes
OFFICIAL_CLASSES = {
    "ES_MOE": "v0",
    "DynamicRoutingLayer": "v0",
    "EfficientExpertGroup": "v0",
    "DepthwiseSeparableConv": "v0",
    "OptimizedMOEImproved": "v0.1",
    "EfficientSpatialRouter": "v0.1",
    "SimpleExpert": "v0.1",
    "MoELoss": "v0.1",
}
STAND_INS = {name: _stand_in(name) for name in OFFICIAL_CLASSES}
TASK_CLASSES = ("DetectionModel", "SegmentationModel", "ClassificationModel")


# plain data types a release may carry beside the model (metrics as numpy scalars, args as a namespace)
DATA_GLOBALS = {
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "ultralytics.utils.IterableSimpleNamespace",
    "types.SimpleNamespace",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
}


def allowed_global(name: str):
    """The object a pickled global ``name`` may become, or ``None`` when it must be refused."""
    module, _, attr = name.rpartition(".")
    if name in DATA_GLOBALS or module == "numpy.dtypes":
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return None
    if module.startswith(MOE_PREFIX):
        return STAND_INS.get(attr) if module in V0_MODULES + V26_MODULES else None
    if (
        module == "ultralytics.nn.tasks"
        and attr in TASK_CLASSES
        or module.startswith(("torch.nn.modules.", "ultralytics.nn.modules."))
    ):
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return None
        return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None
    return None
