"""Deployment glue: which ES-MoE strategy each export format traces, and checks of exported graphs."""

from .graph import GraphReport, inspect_onnx
from .prepare import FORMAT_STRATEGY, SUPPORTED_FORMATS, export_strategy

__all__ = ("FORMAT_STRATEGY", "SUPPORTED_FORMATS", "GraphReport", "export_strategy", "inspect_onnx")
