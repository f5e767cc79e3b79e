"""Export preparation for ES-MoE models: supported formats, the strategy each one traces, early checks.

The block's own eval forward is what gets traced; this module only sets ``ESMoE.strategy`` on every
block for the duration of an export and refuses combinations that cannot work, with one line each.
"""

from __future__ import annotations

from contextlib import contextmanager
from importlib.util import find_spec

import torch
from torch import nn

from ..nn import EXPORT_STRATEGIES, moe_layers

# The strategy each format traces by default (README "Export" has the measurements):
# ONNX Runtime runs `slice` fastest; TensorRT gets `gather`, which needs no data-dependent shapes;
# OpenVINO runs the dense-routed form fastest (gate and TopK in the graph, every expert computed, the
# unchosen ones weighted by zero: the same function; measured at 640 px, 2 threads: dense 0.79x slice,
# 0.86x gather, 0.83x branch). The sparse forms save inside one layer there but not in the whole model.
FORMAT_STRATEGY = {"onnx": "slice", "torchscript": "slice", "engine": "gather", "openvino": "dense"}
SUPPORTED_FORMATS = tuple(FORMAT_STRATEGY)
EXTRAS = {"openvino": ("openvino", "pip install 'yolo-master[openvino]' (or pip install openvino)")}


def export_strategy(fmt: str, strategy: str | None, dynamic: bool, has_moe: bool) -> str | None:
    """Validate an export request; return the ES-MoE strategy to trace (None for models without ES-MoE).

    Raises:
        ValueError: unsupported format, unknown strategy, or a dynamic batch with a sparse strategy.
    """
    if fmt in EXTRAS and find_spec(EXTRAS[fmt][0]) is None:
        raise RuntimeError(f"format={fmt} needs {EXTRAS[fmt][0]}, which is not installed: {EXTRAS[fmt][1]}")
    if not has_moe:
        return None
    if fmt not in FORMAT_STRATEGY:
        raise ValueError(
            f"ES-MoE models export to {', '.join(SUPPORTED_FORMATS)}; format '{fmt}' is not supported "
            "(its converter cannot keep the routing)"
        )
    strategy = strategy or FORMAT_STRATEGY[fmt]
    if strategy not in EXPORT_STRATEGIES:
        raise ValueError(f"unknown export strategy '{strategy}': choose one of {', '.join(EXPORT_STRATEGIES)}")
    if dynamic and strategy != "dense":
        raise ValueError(
            f"dynamic=True cannot trace the sparse '{strategy}' ES-MoE graph (it unrolls a static batch): "
            "export with a fixed batch=N, or pass strategy=dense for a dynamic graph that computes every expert"
        )
    if fmt == "engine":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "format=engine builds a TensorRT engine and needs an NVIDIA GPU: this machine has no CUDA device "
                "(format=onnx works here; run scripts/gpu_check.sh where a GPU is)"
            )
        if find_spec("tensorrt") is None:
            raise RuntimeError("format=engine needs TensorRT: pip install tensorrt (on the machine with the GPU)")
    return strategy


@contextmanager
def traced_strategy(model: nn.Module, strategy: str | None):
    """Set ``strategy`` on every routed block of ``model`` that has strategies, for the duration of the block."""
    blocks = [m for m in moe_layers(model) if strategy in m.strategies]
    saved = [b.strategy for b in blocks]
    try:
        if strategy:
            for b in blocks:
                b.strategy = strategy
        yield blocks
    finally:
        for b, s in zip(blocks, saved):
            b.strategy = s
