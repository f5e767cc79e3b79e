"""Task models of YOLO-Master: Ultralytics' task models whose loss adds the MoE balancing term.

Each class only adds behaviour (zoo names as ``cfg`` and the wrapped criterion), never state, so a
stock task model built by Ultralytics' own trainer code can be promoted to ours with
:func:`promote` and keep every per-task detail of how Ultralytics builds it.
"""

from __future__ import annotations

from torch import nn
from ultralytics.nn.tasks import ClassificationModel, DetectionModel, OBBModel, PoseModel, SegmentationModel

from ..zoo import load_model_yaml
from .moe_loss import MoECriterion


class MoEModelMixin:
    """Accepts zoo names and wraps whatever criterion the task model builds with :class:`MoECriterion`."""

    moe_loss_per_image = True  # Ultralytics' detection-family losses are sums x batch size; ours follows

    def __init__(self, cfg="yolo-master-n.yaml", *args, **kwargs) -> None:
        super().__init__(cfg if isinstance(cfg, dict) else load_model_yaml(cfg), *args, **kwargs)

    def init_criterion(self):
        return MoECriterion(super().init_criterion(), self, per_image=self.moe_loss_per_image)


class YOLOMasterDetectionModel(MoEModelMixin, DetectionModel):
    """YOLO-Master detector."""


class YOLOMasterSegmentationModel(MoEModelMixin, SegmentationModel):
    """YOLO-Master instance segmentation."""


class YOLOMasterPoseModel(MoEModelMixin, PoseModel):
    """YOLO-Master pose estimation."""


class YOLOMasterOBBModel(MoEModelMixin, OBBModel):
    """YOLO-Master oriented bounding boxes."""


class YOLOMasterClassificationModel(MoEModelMixin, ClassificationModel):
    """YOLO-Master classifier (its cross-entropy is a batch mean, so the MoE term is not scaled by batch)."""

    moe_loss_per_image = False


TASK_MODELS: dict[str, type[nn.Module]] = {
    "detect": YOLOMasterDetectionModel,
    "segment": YOLOMasterSegmentationModel,
    "pose": YOLOMasterPoseModel,
    "obb": YOLOMasterOBBModel,
    "classify": YOLOMasterClassificationModel,
}


_OURS_FOR_STOCK = {cls.__bases__[1]: cls for cls in TASK_MODELS.values()}  # DetectionModel -> ours, ...


def promote(model: nn.Module) -> nn.Module:
    """Turn a stock Ultralytics task model into our subclass of it, in place (behaviour only, no new state)."""
    cls = _OURS_FOR_STOCK.get(type(model))
    if cls is not None:
        model.__class__ = cls
        model.criterion = None  # rebuilt, wrapped, on the next loss call
    return model
