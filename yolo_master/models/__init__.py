"""Task models of YOLO-Master."""

from .tasks import (
    TASK_MODELS,
    YOLOMasterClassificationModel,
    YOLOMasterDetectionModel,
    YOLOMasterOBBModel,
    YOLOMasterPoseModel,
    YOLOMasterSegmentationModel,
)

__all__ = (
    "TASK_MODELS",
    "YOLOMasterClassificationModel",
    "YOLOMasterDetectionModel",
    "YOLOMasterOBBModel",
    "YOLOMasterPoseModel",
    "YOLOMasterSegmentationModel",
)
