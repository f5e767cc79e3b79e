"""Detection model of YOLO-Master: an Ultralytics ``DetectionModel`` whose loss adds the MoE term."""

from __future__ import annotations

from ultralytics.nn.tasks import DetectionModel

from ..zoo import load_model_yaml
from .moe_loss import MoECriterion


class MoEModelMixin:
    """Adds the MoE balancing loss to whatever criterion the task model builds, and accepts zoo names."""

    def __init__(self, cfg="yolo-master-n.yaml", *args, **kwargs) -> None:
        super().__init__(cfg if isinstance(cfg, dict) else load_model_yaml(cfg), *args, **kwargs)

    def init_criterion(self):
        return MoECriterion(super().init_criterion(), self)


class YOLOMasterDetectionModel(MoEModelMixin, DetectionModel):
    """YOLO-Master detector: the zoo YAML's network plus ``lambda * L_LB`` in the training loss."""
