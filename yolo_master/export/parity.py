"""Running exported graphs next to PyTorch: ONNX Runtime sessions and routes chosen on purpose.

Shared by the tests, ``yolo-master benchmark`` and ``scripts/``: parity checks and per-route timings
need an input-independent route (:func:`force_route`) and a CPU session with a known thread count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def force_route(block: nn.Module, experts: tuple[int, ...], input_weight: float = 0.0) -> None:
    """Bias ``block``'s gate so that ``experts`` win its top-K, in that order, for any input.

    ``input_weight`` scales the gate's last layer instead of zeroing it, keeping some input dependence
    (far below the bias gap) so the routing weights still vary between inputs.
    """
    logits = block.router.logits
    with torch.no_grad():
        logits.weight.mul_(input_weight)
        logits.bias.fill_(-20.0)
        for rank, e in enumerate(experts):
            logits.bias[e] = 10.0 - rank


def ort_session(model: str | Path | bytes, threads: int | None = None):
    """An ONNX Runtime CPU session for a file or serialized model (``threads`` intra-op threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_onnx(session_or_path, x: np.ndarray | torch.Tensor) -> list[np.ndarray]:
    """Every output of one ONNX Runtime run on ``x`` (the model's first input)."""
    session = session_or_path if hasattr(session_or_path, "run") else ort_session(session_or_path)
    x = x.numpy() if torch.is_tensor(x) else x
    return session.run(None, {session.get_inputs()[0].name: x})
