"""Trainer glue between YOLO-Master models and Ultralytics' engine."""

from .trainer import (
    YOLOMasterClassificationTrainer,
    YOLOMasterDetectionTrainer,
    YOLOMasterOBBTrainer,
    YOLOMasterPoseTrainer,
    YOLOMasterSegmentationTrainer,
)

__all__ = (
    "YOLOMasterClassificationTrainer",
    "YOLOMasterDetectionTrainer",
    "YOLOMasterOBBTrainer",
    "YOLOMasterPoseTrainer",
    "YOLOMasterSegmentationTrainer",
)
