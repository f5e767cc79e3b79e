"""``YOLOMaster``: the Ultralytics ``YOLO`` API (train / val / predict / export / info) for YOLO-Master."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from ultralytics.engine.model import Model
from ultralytics.models import yolo
from ultralytics.nn.tasks import guess_model_task
from ultralytics.utils import DEFAULT_CFG_DICT, LOGGER, RANK

from .data import resolve_data
from .engine import (
    YOLOMasterClassificationTrainer,
    YOLOMasterDetectionTrainer,
    YOLOMasterOBBTrainer,
    YOLOMasterPoseTrainer,
    YOLOMasterSegmentationTrainer,
)
from .engine.summary import training_summary
from .models import TASK_MODELS
from .validate import check_exported_folder, check_exported_request
from .zoo import find_model_yaml, is_zoo_name, load_model_yaml


def holds_only_weights(path) -> bool:
    """True for a ``.pt`` that is a plain ``{name: tensor}`` state_dict (read with ``weights_only``)."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


class YOLOMaster(Model):
    """YOLO-Master model from a zoo name (``'n.yaml'``), a model YAML, a ``.pt`` checkpoint or an exported folder.

    Examples:
        >>> model = YOLOMaster("n.yaml")
        >>> model.train(data="shapes", epochs=3, imgsz=320)
        >>> results = model.predict("image.jpg")
    """

    def __init__(self, model: str | Path = "yolo-master-n.yaml", task: str | None = None, verbose: bool = False):
        model = str(model)
        suffix = Path(model).suffix
        if Path(model).is_dir():  # an exported model folder (OpenVINO, ...): Ultralytics' AutoBackend runs it
            check_exported_folder(model)
        elif suffix in {"", ".yaml", ".yml"} or is_zoo_name(model):  # "v0.1-n" has the suffix ".1-n"
            find_model_yaml(model)  # unknown names fail here with the list of valid ones
            model = model if suffix in {".yaml", ".yml"} else f"{model}.yaml"
        elif suffix == ".pt" and not Path(model).is_file():
            raise FileNotFoundError(f"checkpoint '{model}' not found (YOLO-Master never downloads weights)")
        super().__init__(model=model, task=task, verbose=verbose)

    def _new(self, cfg: str, task: str | None = None, verbose: bool = False) -> None:
        """Build a new model from a zoo name or YAML (the scale comes from the name, e.g. ``-s``)."""
        cfg_dict = load_model_yaml(cfg)
        self.cfg = cfg_dict["yaml_file"]
        self.task = task or guess_model_task(cfg_dict)
        self.model = self._smart_load("model")(cfg_dict, verbose=verbose and RANK == -1)
        self.overrides["model"] = self.cfg
        self.overrides["task"] = self.task
        self.model.args = {**DEFAULT_CFG_DICT, **self.overrides}
        self.model.task = self.task
        self.model_name = self.cfg

    def _load(self, weights: str, task: str | None = None) -> None:
        """Ultralytics' checkpoint loading, plus official YOLO-Master checkpoints, converted in memory."""
        from .official import is_official_checkpoint, load_official

        if str(weights).endswith(".pt") and Path(weights).is_file() and is_official_checkpoint(weights):
            self.model, self.ckpt, info = load_official(weights)
            LOGGER.info(info.notice())
            self.model.pt_path = self.ckpt_path = self.model_name = str(weights)
            self.task = info.task
            self.overrides = {**self.model.args, "model": str(weights), "task": self.task}
            return
        try:
            super()._load(weights, task)
        except Exception:
            if holds_only_weights(weights):
                raise ValueError(
                    f"'{weights}' holds only weights (a state_dict), not a model: build the architecture, e.g. "
                    "m = YOLOMaster('n.yaml'), then m.model.load_state_dict(torch.load(path))"
                ) from None
            raise

    def train(self, trainer=None, **kwargs: Any):
        """Ultralytics ``train`` plus ``data=shapes`` (generated offline) and the ``moe`` gain."""
        if not kwargs.get("resume") and kwargs.get("data") in (None, "") and not (self.ckpt or {}).get("train_args"):
            raise ValueError("train needs data=..., e.g. model.train(data='shapes', epochs=3)")
        finished = self.ckpt is not None and (self.ckpt.get("epoch", -1) < 0 or self.ckpt.get("optimizer") is None)
        if kwargs.get("resume") is True and finished:  # Ultralytics would start a new run on its default dataset
            raise ValueError(
                f"{self.ckpt_path} is from a finished run: nothing to resume; to train it further, start a new run "
                f"from it (model={self.ckpt_path} data=... epochs=...)"
            )
        if "data" in kwargs:
            kwargs["data"] = resolve_data(kwargs["data"])
        result = super().train(trainer=trainer, **kwargs)
        if RANK in {-1, 0} and self.trainer is not None:
            LOGGER.info(training_summary(self.trainer))
        return result

    def predict(self, source=None, stream: bool = False, predictor=None, **kwargs: Any):
        """Ultralytics ``predict``; image arrays and tensors are checked first (shape, dtype, range)."""
        from .validate import check_image_arrays

        check_image_arrays(source)
        check_exported_request(self.model, kwargs)
        return super().predict(source=source, stream=stream, predictor=predictor, **kwargs)

    def val(self, validator=None, **kwargs: Any):
        """Ultralytics ``val`` plus ``data=shapes``."""
        if "data" in kwargs:
            kwargs["data"] = resolve_data(kwargs["data"])
        check_exported_request(self.model, kwargs)
        return super().val(validator=validator, **kwargs)

    def export(self, strategy: str | None = None, **kwargs: Any) -> str:
        """Ultralytics ``export`` with the ES-MoE routing kept in the graph.

        Args:
            strategy: ES-MoE graph strategy (``slice``, ``gather``, ``branch``, ``slots``, ``dense`` or
                ``masked``); default per format.
            **kwargs: Ultralytics export arguments (``format``, ``imgsz``, ``batch``, ``half``, ...).
        """
        from .export.formats import FORMATS
        from .export.prepare import (
            check_converted,
            deepx_compiler_in_a_child,
            export_form,
            export_strategy,
            offline_onnx2tf_sample,
            remove_stale_qnn_context,
            report_placement,
            traced_strategy,
            xilinx_routing_in_float,
        )
        from .nn import HiMoE, moe_layers

        layers = moe_layers(self.model) if isinstance(self.model, nn.Module) else []  # formats must keep routing
        fmt = str(kwargs.get("format", "torchscript")).lower()
        dynamic = bool(kwargs.get("dynamic", False))
        if dynamic and any(isinstance(m, HiMoE) for m in layers):
            raise ValueError("dynamic=True cannot trace a HiMoE graph (it unrolls a static batch): export with batch=N")
        # only blocks with strategies (ES-MoE) unroll the batch; FFN-MoE (upcycled) graphs are batch-generic
        unrolled_dynamic = dynamic and any(m.strategies for m in layers)
        chosen = export_strategy(fmt, strategy, unrolled_dynamic, bool(layers))
        if chosen:
            LOGGER.info(f"yolo-master export: format={fmt}: {export_form(fmt, chosen, unrolled_dynamic)}")
        spec = FORMATS.get(fmt)
        # without data (given or recorded in the checkpoint) Ultralytics downloads coco8: offline, a traceback
        if not kwargs.get("data") and not self.overrides.get("data"):
            if spec and spec.quantized:
                raise ValueError(
                    f"format={fmt} is always quantized and calibrates on images: give data=..., e.g. data=shapes"
                )
            if kwargs.get("int8") or str(kwargs.get("quantize")) == "8":
                raise ValueError("int8=True calibrates on images: give data=..., e.g. data=shapes")
        if "data" in kwargs:
            kwargs["data"] = resolve_data(kwargs["data"])
        if spec and spec.opset and not kwargs.get("opset"):
            kwargs["opset"] = spec.opset
        remove_stale_qnn_context(self.model, fmt)
        comparisons = bool(spec and spec.comparisons)
        with (
            traced_strategy(self.model, chosen, comparisons, spec.depthwise_tile if spec else None),
            offline_onnx2tf_sample(fmt),
            deepx_compiler_in_a_child(fmt),
            xilinx_routing_in_float(fmt),
        ):
            exported = super().export(**kwargs)
        check_converted(fmt, exported)
        report_placement(fmt, exported)
        return exported

    @property
    def task_map(self) -> dict[str, dict[str, Any]]:
        """Our models and trainers; Ultralytics' validators and predictors."""
        stock = {
            "detect": (YOLOMasterDetectionTrainer, yolo.detect.DetectionValidator, yolo.detect.DetectionPredictor),
            "segment": (
                YOLOMasterSegmentationTrainer,
                yolo.segment.SegmentationValidator,
                yolo.segment.SegmentationPredictor,
            ),
            "pose": (YOLOMasterPoseTrainer, yolo.pose.PoseValidator, yolo.pose.PosePredictor),
            "obb": (YOLOMasterOBBTrainer, yolo.obb.OBBValidator, yolo.obb.OBBPredictor),
            "classify": (
                YOLOMasterClassificationTrainer,
                yolo.classify.ClassificationValidator,
                yolo.classify.ClassificationPredictor,
            ),
        }
        return {
            task: {"model": TASK_MODELS[task], "trainer": trainer, "validator": validator, "predictor": predictor}
            for task, (trainer, validator, predictor) in stock.items()
        }
