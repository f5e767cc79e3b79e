"""Ultralytics' FLOPs counter (thop), taught what our routed blocks compute.

thop adds a module's own rule to what its children count. Our blocks' router convolutions and norms
are counted by thop's own rules; the experts are not modules that run, so each block class gets a
rule adding :func:`~yolo_master.nn.cost.expert_macs` (the experts that run, from the configuration).
"""

from __future__ import annotations

import importlib

from ..nn import BLOCKS, FFNMoE
from ..nn.cost import expert_macs


def _count_experts(block, inputs: tuple, output) -> None:
    x = inputs[0]
    block.total_ops += expert_macs(block, x.shape[0], x.shape[2], x.shape[3])


def register_flops_rules() -> None:
    """Add the rule for every routed block class to thop's table (when thop is installed)."""
    try:
        hooks = importlib.import_module("thop.profile").register_hooks
    except (ImportError, AttributeError):
        return
    for cls in (*BLOCKS.values(), FFNMoE):
        hooks[cls] = _count_experts
