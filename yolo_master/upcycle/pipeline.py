"""``upcycle()``: a trained dense checkpoint in, a YOLO-Master checkpoint that starts where it was out.

Steps: read the dense model; build the new architecture (the dense one, or with the target's ES-MoE
blocks inserted, or the target as-is); load the dense weights layer by layer; make inserted ES-MoE
blocks the identity; split every FFN into experts; check that a model rebuilt from the new YAML
takes the weights (what the trainer does with a ``.pt``) and how far the predictions moved at step 0.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import torch
from torch import nn

from ..integration.runtime import quiet_logs
from ..models import TASK_MODELS
from ..nn import ESMoE, FFNMoE
from ..nn.cost import active_params
from ..nn.ffn_expansion import FFN_KEY, expand_ffns
from ..nn.moe_ffn import check_expansion
from ..validate import check_output
from .checkpoint import load_dense, save_upcycled
from .insert import UpcycleError, copy_layers, graft_yaml, identity_init, match_layers
from .report import UpcycleReport

LAYOUTS = ("graft", "target")
CHECK_IMGSZ = 160  # step-0 check input size: a multiple of every stride, small enough to be instant
MIN_LOADED = 0.5  # layout=target: below this share of the dense weights loaded, it is not an upcycling


def count_params(net: nn.Module) -> tuple[int, int]:
    """``(active, total)`` parameters; MoE layers count only what one image uses."""
    return active_params(net), sum(p.numel() for p in net.parameters())


def output_tensors(out) -> list[torch.Tensor]:
    """Every tensor of a model output (detection returns decoded boxes plus the raw head maps)."""
    if torch.is_tensor(out):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in output_tensors(o)] if isinstance(out, (list, tuple)) else []


@torch.no_grad()
def step0_diff(dense: nn.Module, moe: nn.Module, imgsz: int = CHECK_IMGSZ, seed: int = 0) -> float:
    """Max of ``|moe - dense| / max(1, |dense|)`` over every eval output tensor for two random images.

    Absolute where outputs are at most 1, relative above (box coordinates in pixels, where float32
    itself resolves only ~1e-5 at a few hundred).
    """
    x = torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(seed))
    pairs = list(zip(output_tensors(dense.eval()(x)), output_tensors(moe.eval()(x))))
    if any(a.shape != b.shape for a, b in pairs):
        return float("inf")  # a target architecture with other output shapes
    return max(((a - b).abs() / a.abs().clamp_min(1.0)).max().item() for a, b in pairs)


def _build(task: str, d: dict, nc: int) -> nn.Module:
    """A task model from a model dict, quietly (Ultralytics' classifier prints its summary regardless)."""
    with quiet_logs():
        return TASK_MODELS[task](deepcopy(d), nc=nc, verbose=False)


def _target_dict(to: str | Path) -> dict:
    from ..zoo import load_model_yaml

    return load_model_yaml(to)


def _plan(dense: nn.Module, to, layout: str) -> tuple[dict, dict[int, int], list[int], str]:
    """``(new model dict, {new index: dense index}, inserted ES-MoE indices, target name)``."""
    from ultralytics.nn.tasks import guess_model_task

    if to is None:
        d = deepcopy(dense.yaml)
        return d, {i: i for i in range(len(dense.model))}, [], str(d.get("yaml_file", "dense architecture"))
    target = _target_dict(to)
    task, target_task = dense.task, guess_model_task(target)
    if task != target_task:
        raise UpcycleError(
            f"the checkpoint is a {task} model but to={to} is a {target_task} model: choose a {task} YAML"
        )
    name = str(target.get("yaml_file", to))
    if layout == "graft":
        d, new_index, inserted = graft_yaml(dense.yaml, target)
        return d, {n: j for j, n in new_index.items()}, inserted, f"{d.get('yaml_file', 'dense')} + ES-MoE of {name}"
    target["nc"] = dense.yaml.get("nc", target.get("nc"))
    net = _build(task, target, target["nc"])
    mapping = match_layers(dense.model, net.model)
    fits = sum(p.numel() for j in mapping.values() for p in dense.model[j].parameters())
    share = fits / max(sum(p.numel() for p in dense.model.parameters()), 1)
    if share < MIN_LOADED:
        raise UpcycleError(
            f"incompatible checkpoint: only {share:.0%} of its weights fit {name} (another scale or family?); "
            "layout=graft keeps the checkpoint's own layers"
        )
    inserted = [i for i, m in enumerate(net.model) if isinstance(m, ESMoE) and i not in mapping]
    return target, mapping, inserted, name


def upcycle(
    model: str | Path,
    to: str | Path | None = None,
    experts: int = 4,
    split: int = 2,
    layout: str = "graft",
    out: str | Path | None = None,
    seed: int = 0,
    exist_ok: bool = False,
) -> tuple[Path, UpcycleReport]:
    """Upcycle the dense checkpoint ``model`` and write ``<stem>-moe.pt`` beside it (or ``out``).

    Args:
        model: a trained Ultralytics ``.pt`` (detect, classify, ...).
        to: optional target YAML or zoo name whose ES-MoE blocks to insert (``n.yaml``, ``cls-n.yaml``).
        experts: N, copies of each FFN.
        split: k, partitions of each copy (experts chosen per image); must divide the FFN hidden widths.
        layout: ``graft`` (the checkpoint's layers plus the target's ES-MoE blocks: same predictions) or
            ``target`` (the target YAML exactly; only matching layers load).
        out: output path.
        seed: seed of the new random weights (routers).
        exist_ok: replace an existing output file (refused otherwise).

    Returns:
        ``(output path, report)``.
    """
    check_expansion(experts, split)
    if layout not in LAYOUTS:
        raise UpcycleError(f"layout={layout} is not one of {', '.join(LAYOUTS)}")
    if layout != "graft" and to is None:
        raise UpcycleError(f"layout={layout} needs a target: to=n.yaml (or another YAML / zoo name)")
    path = Path(out) if out else Path(str(model)).with_name(f"{Path(str(model)).stem}-moe.pt")
    check_output(path, str(model), exist_ok, "dense checkpoint")
    dense, ckpt = load_dense(model)
    if any(isinstance(m, FFNMoE) for m in dense.modules()):
        raise UpcycleError(f"'{model}' is already upcycled (it has FFN-MoE blocks)")
    torch.manual_seed(seed)
    d, mapping, inserted, target_name = _plan(dense, to, layout)
    d.pop(FFN_KEY, None)
    task, nc = dense.task, dense.yaml.get("nc")
    net = _build(task, d, nc)
    copy_layers(dense.model, net.model, mapping)
    for i in inserted:
        identity_init(net.model[i])
    expanded = expand_ffns(net.model, experts, split)
    if not expanded and not inserted:
        raise UpcycleError(f"nothing to upcycle in '{model}': no FFN blocks to split and no to= with ES-MoE blocks")
    if expanded:
        net.yaml[FFN_KEY] = {"experts": experts, "split": split, "layers": sorted({e.layer for e in expanded})}
    net.names, net.task = getattr(dense, "names", None), task
    net.args = dict(getattr(dense, "args", None) or {})
    _check_rebuild(net, task, nc)

    types = {i: type(m).__name__ for i, m in enumerate(net.model)}
    report = UpcycleReport(str(model), target_name, layout if to is not None else "dense", experts, split)
    report.loaded = [(t, j, types[t]) for t, j in sorted(mapping.items())]
    report.new = [
        (i, t, "inserted ES-MoE, identity-initialised" if i in inserted else "no counterpart in the checkpoint")
        for i, t in types.items()
        if i not in mapping
    ]
    used = set(mapping.values())
    report.skipped = [(j, type(m).__name__) for j, m in enumerate(dense.model) if j not in used]
    report.ffns = [(e.path, e.channels, e.hidden) for e in expanded]
    report.dense_params, report.moe_params = count_params(dense), count_params(net)
    report.function_preserving = not report.skipped and all("inserted" in why for _, _, why in report.new)
    report.step0_max_diff = step0_diff(dense, net)
    report.output = str(path)
    save_upcycled(net, ckpt, report.as_dict(), path)
    return path, report


def _check_rebuild(net: nn.Module, task: str, nc: int) -> None:
    """A model built from the new YAML must take every tensor (the trainer rebuilds ``.pt`` models that way)."""
    rebuilt = _build(task, net.yaml, nc)
    theirs, ours = rebuilt.state_dict(), net.state_dict()
    bad = sorted(k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape)
    bad += sorted(k for k in theirs if k not in ours)
    if bad:
        raise RuntimeError(f"upcycled model does not rebuild from its YAML: {len(bad)} tensors differ, e.g. {bad[0]}")
