"""Trainer glue between YOLO-Master models and Ultralytics' engine."""

from .trainer import YOLOMasterDetectionTrainer

__all__ = ("YOLOMasterDetectionTrainer",)
