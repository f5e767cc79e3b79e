"""``yolo-master info``: the layer table with ESMoE rows, total and active parameters, GFLOPs."""

from __future__ import annotations

from torch import nn

from .nn.register import layer_rows


def active_params(module: nn.Module) -> int:
    """Parameters used for one image: MoE layers count only their top-K experts."""
    if hasattr(module, "active_params"):
        return module.active_params()
    own = sum(p.numel() for p in module.parameters(recurse=False))
    return own + sum(active_params(child) for child in module.children())


def model_info(model, imgsz: int = 640) -> str:
    """Render the table for a ``YOLOMaster`` (or any Ultralytics model wrapper)."""
    from ultralytics.utils.torch_utils import get_flops

    net = model.model
    lines = [f"{'':>3}{'from':>20}{'n':>3}{'params':>11}{'active':>11}  {'module':<40}arguments"]
    for (i, f, n, np_, t, args), layer in zip(layer_rows(net.model, net.yaml), net.model):
        lines.append(f"{i:>3}{f!s:>20}{n:>3}{np_:11,d}{active_params(layer):11,d}  {t:<40}{args}")
    total, active = sum(p.numel() for p in net.parameters()), active_params(net)
    gflops = get_flops(net, imgsz)
    name = net.yaml.get("yaml_file", "model")
    lines.append(
        f"{name}: {len(net.model)} layers, {total:,} parameters, {active:,} active per image "
        f"({active / total:.0%}), {gflops:.1f} GFLOPs at {imgsz} (top-K experts)"
    )
    return "\n".join(lines)
