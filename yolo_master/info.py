"""``yolo-master info``: the layer table with ESMoE rows, total and active parameters, GFLOPs, rho.

rho (compute leverage, after the sparse-MoE-in-vision paper) = FLOPs of the routed experts that run /
all FLOPs of the model, both for one image at ``imgsz`` and counted the same way (thop, Ultralytics'
counter; routed experts at K x their average size). MoE only pays off when rho is large. Nothing here
changes the model it is given (its train / eval mode is put back).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .integration.parser import layer_rows
from .nn.cost import active_params, conv_expert_blocks, routed_macs


@contextmanager
def evaluating(net: nn.Module):
    """``net`` in eval mode for the duration; every module's own mode restored afterwards."""
    modes = {m: m.training for m in net.modules()}
    net.eval()
    try:
        yield net
    finally:
        for m, training in modes.items():
            m.training = training


def routed_gflops(net: nn.Module, imgsz: int) -> float:
    """GFLOPs of the routed convolution experts in one eval forward of a blank ``imgsz`` image (2 x MACs)."""
    total = 0.0

    def count(block, inputs, output):
        nonlocal total
        x = inputs[0]
        total += routed_macs(block, x.shape[0], x.shape[2], x.shape[3])

    handles = [m.register_forward_hook(count) for m in conv_expert_blocks(net)]
    try:
        p = next(net.parameters())
        with torch.inference_mode(), evaluating(net):
            net(torch.zeros(1, 3, imgsz, imgsz, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
    return 2 * total / 1e9


def model_info(model, imgsz: int = 640) -> str:
    """Render the table for a ``YOLOMaster`` (or any Ultralytics model wrapper)."""
    from ultralytics.utils.torch_utils import get_flops

    net = model.model
    lines = [f"{'':>3}{'from':>20}{'n':>3}{'params':>11}{'active':>11}  {'module':<40}arguments"]
    for (i, f, n, np_, t, args), layer in zip(layer_rows(net.model, net.yaml), net.model):
        lines.append(f"{i:>3}{f!s:>20}{n:>3}{np_:11,d}{active_params(layer):11,d}  {t:<40}{args}")
    total, active = sum(p.numel() for p in net.parameters()), active_params(net)
    with evaluating(net):
        gflops = get_flops(net, imgsz)
    name = net.yaml.get("yaml_file", "model")
    rho = routed_gflops(net, imgsz) / gflops if gflops else 0.0
    lines.append(
        f"{name}: {len(net.model)} layers, {total:,} parameters, {active:,} active per image "
        f"({active / total:.0%}), {gflops:.1f} GFLOPs at {imgsz} (top-K experts), "
        f"rho {rho:.3f} (routed-expert FLOPs / all FLOPs)"
    )
    return "\n".join(lines)
