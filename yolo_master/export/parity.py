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


def calibrate_norms(net: nn.Module, images: torch.Tensor) -> None:
    """Give every BatchNorm the statistics of ``images`` (one train-mode pass, momentum 1), then eval.

    A freshly initialised detector shrinks its features about tenfold per stage, so its output hardly
    depends on the routing (a wrong route changed it by 3e-8 relative in the N model): a parity check
    on it could not see a wrong route. Calibrated, features keep unit scale and routes matter.
    """
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
        elif hasattr(m, "bn_momentum"):  # expert banks keep their statistics in stacked buffers
            m.bn_momentum = 1.0
    net.train()
    with torch.no_grad():
        net(images)
    net.eval()


def steer_apart(net: nn.Module, xa: torch.Tensor, xb: torch.Tensor, margin: float = 4.0) -> None:
    """Set every top-K ES-MoE gate of ``net`` so that ``xa`` and ``xb`` take different experts in it.

    Expert 0's logit rises along the direction from ``xb``'s gate features to ``xa``'s, expert 1's falls
    (``+-margin`` at the two inputs), experts ``2..K`` sit in between (always chosen), the rest far below:
    ``xa`` runs ``{0, 2..K}``, ``xb`` ``{1, 2..K}``, and the graph must follow the gate to match.
    Blocks are steered in order, each from the features the ones before it produce.
    """
    from ..nn import ESMoE

    for block in (m for m in net.modules() if isinstance(m, ESMoE) and m.top_k < m.num_experts):
        ha, hb = (_gate_features(net, block, x) for x in (xa, xb))
        direction = (ha - hb) / (ha - hb).norm() ** 2
        offset = float(direction @ (ha + hb)) / 2
        logits = block.router.logits
        with torch.no_grad():
            logits.weight.zero_()
            logits.bias.fill_(-20.0)
            logits.bias[1 : block.top_k + 1] = 0.0
            for e, sign in ((0, 1.0), (1, -1.0)):
                logits.weight[e, :, 0, 0] = sign * margin * direction
                logits.bias[e] = -sign * margin * offset


def _gate_features(net: nn.Module, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The hidden gate features (after the reduction and SiLU) ``block`` sees when ``net`` runs ``x``."""
    seen = {}
    hook = block.register_forward_pre_hook(lambda _, args: seen.setdefault("x", args[0]))
    try:
        with torch.no_grad():
            net(x)
    finally:
        hook.remove()
    r = block.router
    with torch.no_grad():
        return r.act(r.reduce(r.pool(seen["x"]))).flatten(1)[0]


def wrong_route_error(net: nn.Module, xa: torch.Tensor, xb: torch.Tensor) -> float:
    """Relative error of ``net``'s output on ``xb`` if every routed block reused ``xa``'s routing: how far
    off an export that baked one route in (or lost the routing) would be, the size a parity check must see."""
    right, wrong = right_and_wrong_route(net, xa, xb)
    return float((wrong - right).abs().max() / right.abs().max())


def right_and_wrong_route(net: nn.Module, xa: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``net``'s output on ``xb``, and what it would be if every routed block reused ``xa``'s routing."""
    from ..nn import moe_layers

    blocks = [b for b in moe_layers(net) if hasattr(b, "route")]
    with torch.no_grad():
        net(xa)
        kept = [b.last_routing for b in blocks]
        right = _first(net(xb))
        try:
            for b, routing in zip(blocks, kept):
                b.route = lambda x, routing=routing: routing
            wrong = _first(net(xb))
        finally:
            for b in blocks:
                del b.route
    return right, wrong


def _first(y):
    return y[0] if isinstance(y, (list, tuple)) else y
