"""Task models of YOLO-Master: Ultralytics' task models whose loss adds the MoE balancing term.

Each class only adds behaviour (zoo names as ``cfg``, the MoE term in ``loss``), never state, and the
trainers build these classes directly (``engine/trainer.py``).
"""

from __future__ import annotations

from torch import nn
from ultralytics.nn.tasks import ClassificationModel, DetectionModel, OBBModel, PoseModel, SegmentationModel

from ..zoo import load_model_yaml
from .legacy import MoECriterion
from .moe_loss import add_moe_loss


class MoEModelMixin:
    """Accepts zoo names; ``loss`` is the task's loss plus the weighted MoE auxiliary loss."""

    moe_loss_per_image = True  # Ultralytics' detection-family losses are sums x batch size; ours follows

    def __init__(self, cfg="yolo-master-n.yaml", *args, **kwargs) -> None:
        super().__init__(cfg if isinstance(cfg, dict) else load_model_yaml(cfg), *args, **kwargs)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if isinstance(self.__dict__.get("criterion"), MoECriterion):  # an old checkpoint's wrapper
            self.criterion = None

    def loss(self, batch, preds=None):
        loss, items = super().loss(batch, preds)
        return add_moe_loss(self, loss, items, per_image=self.moe_loss_per_image)


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
