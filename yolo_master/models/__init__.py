"""Task models of YOLO-Master."""

from .detect import YOLOMasterDetectionModel

__all__ = ("YOLOMasterDetectionModel",)
