"""Official YOLO-Master checkpoints (github Tencent/YOLO-Master) -> models built from our blocks, exactly.

1. Unpickle with ``weights_only`` and the stand-ins of ``standins.py`` (no code from the file runs).
2. Rewrite the checkpoint's own model YAML: ``ES_MOE`` rows become :class:`~yolo_master.nn.ESMoEv0`
   rows and ``ModularRouterExpertMoE`` / ``OptimizedMOEImproved`` rows :class:`~yolo_master.nn.SpatialMoE`
   rows, with E and K read from the pickled blocks, never from defaults (the fork's defaults changed
   after the release: its v0 YAML builds another model at its newer commits).
3. Build our task model from that YAML and load every tensor: stock layers by name, the MoE blocks
   through the key map below. Every tensor of the file must land and every tensor of ours be filled.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from ..models import TASK_MODELS
from .standins import MOE_PREFIX, allowed_global

ROW_NAMES = {"ES_MOE": "ESMoEv0", "ModularRouterExpertMoE": "SpatialMoE", "OptimizedMOEImproved": "SpatialMoE"}
KEEP_ARGS = ("imgsz", "data", "task", "single_cls")  # as Ultralytics keeps from a checkpoint's train_args
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


class OfficialCheckpointError(RuntimeError):
    """An official checkpoint that cannot be converted (one line naming the file and the reason)."""


@dataclass
class OfficialInfo:
    """What was found in an official checkpoint."""

    path: str
    release: str  # "v0" (ES_MOE) or "v0.1" (OptimizedMOEImproved)
    layout: str  # "v0.0.0" (one moe module) or "v26.02" (moe/ package)
    task: str
    blocks: dict[int, str] = field(default_factory=dict)  # layer index -> our block row, e.g. "ESMoEv0 [256, 3]"

    def notice(self) -> str:
        return (
            f"{Path(self.path).name}: official YOLO-Master {self.release} checkpoint ({self.layout} code layout, "
            f"{self.task}), converted in memory to yolo-master blocks; `yolo-master convert model={self.path}` "
            "writes a native copy"
        )


def checkpoint_globals(path: str | Path) -> list[str]:
    """The globals a checkpoint's pickle names (read without unpickling)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception as e:  # not a zip archive, truncated, ...
        raise OfficialCheckpointError(
            f"'{path}' is not a loadable checkpoint ({type(e).__name__}: the file is empty, truncated or corrupted)"
        ) from None


def is_official_checkpoint(path: str | Path) -> bool:
    """True when the checkpoint names classes of the official fork's MoE modules."""
    try:
        names = checkpoint_globals(path)
    except OfficialCheckpointError:
        return False
    return any(n.startswith(MOE_PREFIX + ".") for n in names)


def _unpickle(path: Path, names: list[str]) -> dict:
    """The checkpoint dict, unpickled with only ``names`` (its globals) that :func:`allowed_global` allows."""
    allowed = {n: allowed_global(n) for n in names}
    unknown = [n for n in names if allowed[n] is None and not _torch_builtin(n)]
    moe = sorted({n.rpartition(".")[2] for n in names if n.startswith(MOE_PREFIX + ".")})
    if unknown:
        unsupported = [n for n in unknown if n.startswith(MOE_PREFIX)]
        what = (
            f"official MoE class {unsupported[0].rpartition('.')[2]} (a release after v0.1, such as v0.10), "
            "which yolo-master does not support"
            if unsupported
            else f"{unknown[0]}, which is not allowed in a checkpoint"
        )
        raise OfficialCheckpointError(
            f"'{path}' references {what}; supported official releases: v0 (ES_MOE) and v0.1 (OptimizedMOEImproved)"
        )
    entries = [(obj, n) for n, obj in allowed.items() if obj is not None]
    if "numpy.dtype" in names:  # numpy scalars also need their concrete dtype classes, absent from the scan
        import numpy as np

        entries += [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_)]
    try:
        with torch.serialization.safe_globals(entries):
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        why = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        raise OfficialCheckpointError(f"'{path}' could not be read as an official checkpoint ({why})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("ema") or ckpt.get("model"), nn.Module):
        raise OfficialCheckpointError(f"'{path}' holds no model (expected a dict with 'model' or 'ema'); found {moe}")
    return ckpt


def _torch_builtin(name: str) -> bool:
    """Globals torch's ``weights_only`` unpickler allows by itself (tensors, storages, containers)."""
    return (
        name.startswith(("torch._utils.", "torch."))
        and not name.startswith("torch.nn.")
        or name
        in {
            "collections.OrderedDict",
            "builtins.set",
            "__builtin__.set",
        }
    )


def _layer_rows(d: dict) -> list:
    return d["backbone"] + d["head"]


def _top_k(block: nn.Module) -> int | None:
    """K of an official ES_MOE / OptimizedMOEImproved, ``None`` for the dense softmax over all experts."""
    router = getattr(block, "routing", None)
    use = block.__dict__.get("use_top_k", getattr(router, "__dict__", {}).get("use_top_k", True))
    if not use:
        return None
    k = block.__dict__.get("top_k", getattr(router, "__dict__", {}).get("top_k"))
    return int(k) if k is not None else None


def _official_blocks(net: nn.Module) -> dict[int, nn.Module]:
    return {i: m for i, m in enumerate(net.model) if type(m).__name__ in ("ES_MOE", "OptimizedMOEImproved")}


def rewrite_yaml(d: dict, blocks: dict[int, nn.Module]) -> dict:
    """The official model dict with our block names and the E / K of each pickled block."""
    d = copy.deepcopy(d)
    rows = _layer_rows(d)
    for i, row in enumerate(rows):
        name = row[2]
        if name not in ROW_NAMES:
            continue
        if i not in blocks:
            raise OfficialCheckpointError(f"layer {i} is {name} in the model YAML but not in the weights")
        block = blocks[i]
        experts = len(block.experts)
        c2 = row[3][0] if row[3] else None
        k = _top_k(block)
        if ROW_NAMES[name] == "ESMoEv0":
            row[2], row[3] = "ESMoEv0", [c2, experts] + ([k] if k is not None and k < experts else [])
        else:
            row[2], row[3] = "SpatialMoE", [c2, experts, k or int(block.routing.__dict__.get("top_k", 2))]
    scales = d.get("scales") or {}
    if not d.get("scale") and len(scales) == 1:  # releases store scale '' with their one scale in `scales`
        d["scale"] = next(iter(scales))
    d.pop("yaml_file", None)
    return d


def _es_keys(prefix: str, block: nn.Module, bank_offsets: list[int], ours: dict, theirs: dict) -> None:
    """Map one ES_MOE's tensors onto an ESMoEv0's (packed depthwise taps, stacked expert tensors)."""
    o, t = f"{prefix}.", f"{prefix}."
    ours[o + "router.reduce.weight"] = theirs.pop(t + "routing.routing_network.0.weight")
    ours[o + "router.reduce.bias"] = theirs.pop(t + "routing.routing_network.0.bias")
    ours[o + "router.logits.weight"] = theirs.pop(t + "routing.routing_network.2.weight")
    ours[o + "router.logits.bias"] = theirs.pop(t + "routing.routing_network.2.bias")
    dw, pw = ours[o + "experts.dw_weight"].clone(), ours[o + "experts.pw_weight"].clone()
    bn = {name: ours[f"{o}experts.bn_{name}"].clone() for name in BN_TENSORS}
    for e in range(len(block.experts)):
        src = f"{t}experts.{e}.conv."
        w = theirs.pop(src + "depthwise.weight")
        dw[:, bank_offsets[e] : bank_offsets[e + 1]] = w.reshape(w.shape[0], -1)
        pw[e] = theirs.pop(src + "pointwise.weight")[:, :, 0, 0]
        for name in BN_TENSORS:
            bn[name][e] = theirs.pop(src + f"bn.{name}")
        theirs.pop(src + "bn.num_batches_tracked", None)
    ours[o + "experts.dw_weight"], ours[o + "experts.pw_weight"] = dw, pw
    for name, value in bn.items():
        ours[f"{o}experts.bn_{name}"] = value
    for name in (*BN_TENSORS, "num_batches_tracked"):
        ours[f"{o}norm.{name}"] = theirs.pop(f"{t}norm.0.{name}")


def _spatial_keys(prefix: str, block: nn.Module, ours: dict, theirs: dict) -> None:
    """Map one OptimizedMOEImproved's tensors onto a SpatialMoE's."""
    o, t = f"{prefix}.", f"{prefix}."
    for key in [k for k in theirs if k.startswith(t + "routing.router.")]:
        ours[o + "router.router." + key[len(t + "routing.router.") :]] = theirs.pop(key)
    # expert e's Sequential(Conv 1x1, BN, SiLU, Conv 1x1, BN) -> row e of the bank's stacked tensors
    parts = {"w1": "0.weight", "w2": "3.weight"}
    parts.update({f"bn{j}_{name}": f"{index}.{name}" for j, index in ((1, 1), (2, 4)) for name in BN_TENSORS})
    for ours_name, theirs_name in parts.items():
        stacked = ours[f"{o}experts.{ours_name}"].clone()
        for e in range(len(block.experts)):
            value = theirs.pop(f"{t}experts.{e}.conv.{theirs_name}")
            stacked[e] = value[:, :, 0, 0] if value.dim() == 4 else value
        ours[f"{o}experts.{ours_name}"] = stacked
    for e in range(len(block.experts)):
        for index in (1, 4):
            theirs.pop(f"{t}experts.{e}.conv.{index}.num_batches_tracked", None)
    ours[o + "shared.conv.weight"] = theirs.pop(t + "shared_expert.0.weight")
    for name in (*BN_TENSORS, "num_batches_tracked"):
        ours[f"{o}shared.bn.{name}"] = theirs.pop(f"{t}shared_expert.1.{name}")


def _expert_bn(block: nn.Module) -> nn.Module | None:
    """The first expert BatchNorm of an official block (its eps / momentum are the bank's)."""
    for m in block.experts.modules():
        if isinstance(m, nn.BatchNorm2d):
            return m
    return None


def convert(official: nn.Module, path: str) -> tuple[nn.Module, OfficialInfo]:
    """Our task model with ``official``'s weights (float32, eval)."""
    from ultralytics.nn.tasks import guess_model_task

    from ..integration.runtime import quiet_logs

    official = official.float()
    blocks = _official_blocks(official)
    if not blocks:
        raise OfficialCheckpointError(f"'{path}' names official MoE classes but its model has no MoE layers")
    task = getattr(official, "task", None) or guess_model_task(official)
    d = rewrite_yaml(official.yaml, blocks)
    release = "v0.1" if any(type(b).__name__ == "OptimizedMOEImproved" for b in blocks.values()) else "v0"
    family = ("esmoe" if release == "v0" else "v0.1") + {"segment": "-seg", "classify": "-cls"}.get(task, "")
    d["yaml_file"] = f"yolo-master-{family}-{d.get('scale') or 'n'}.yaml"  # the zoo's name for this architecture
    nc = getattr(official, "nc", None) or d.get("nc")
    with quiet_logs():
        net = TASK_MODELS[task](d, nc=nc, ch=d.get("channels", 3), verbose=False)
    ours, theirs = net.state_dict(), dict(official.state_dict())
    for i, block in blocks.items():
        prefix = f"model.{i}"
        if type(block).__name__ == "ES_MOE":
            _es_keys(prefix, block, net.model[i].experts.offsets, ours, theirs)
        else:
            _spatial_keys(prefix, block, ours, theirs)
        bn = _expert_bn(block)
        if bn is not None:
            net.model[i].experts.bn_eps, net.model[i].experts.bn_momentum = bn.eps, bn.momentum
    for key in list(theirs):  # stock layers: same names, same shapes
        if key in ours and ours[key].shape == theirs[key].shape:
            ours[key] = theirs.pop(key)
    leftover = [k for k in theirs if not k.endswith("num_batches_tracked")]
    if leftover:
        raise OfficialCheckpointError(
            f"'{path}': {len(leftover)} tensors have no place in the converted model, e.g. {leftover[0]}"
        )
    net.load_state_dict(ours, strict=True)
    net.names = getattr(official, "names", None) or net.names
    net.task = task
    info = OfficialInfo(str(path), release, "", task)
    info.blocks = {i: f"{row[2]} {row[3]}" for i, row in enumerate(_layer_rows(d)) if i in blocks}
    return net.eval(), info


def load_official(path: str | Path) -> tuple[nn.Module, dict, OfficialInfo]:
    """``(our model, a native checkpoint dict, what was found)`` for an official checkpoint file.

    Raises:
        OfficialCheckpointError: one line naming the file, what was found and what is supported.
    """
    path = Path(path)
    names = checkpoint_globals(path)
    ckpt = _unpickle(path, names)
    official = ckpt.get("ema") or ckpt.get("model")
    net, info = convert(official, str(path))
    info.layout = "v26.02" if any(re.match(rf"{MOE_PREFIX}\.\w+\.", n) for n in names) else "v0.0.0"
    args = {k: v for k, v in (ckpt.get("train_args") or {}).items() if k in KEEP_ARGS}
    net.args = args
    native = {
        "date": datetime.now().astimezone().isoformat(),
        "version": ckpt.get("version"),
        "model": net,
        "train_args": args,
        "official": {"source": str(path), "release": info.release, "layout": info.layout, "blocks": info.blocks},
    }
    return net, native, info


__all__ = ("OfficialCheckpointError", "OfficialInfo", "is_official_checkpoint", "load_official")
