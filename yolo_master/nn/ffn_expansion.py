"""Which dense blocks act as FFNs, and replacing them by :class:`~yolo_master.nn.moe_ffn.FFNMoE`.

Here, not in ``upcycle/``, because building a model from a YAML with an ``ffn_moe:`` section needs
it (the parser hook applies the section), and the model floor must not import the upcycling floor.

An FFN here is an ``nn.Sequential`` of two Ultralytics ``Conv`` with 1x1 kernels, ``c -> H -> c``,
SiLU after the first, nothing after the second, each with its BatchNorm: YOLO12's ``ABlock.mlp``
(area-attention blocks of A2C2f) and YOLO11's ``PSABlock.ffn`` (C2PSA). They are the transformer FFNs
Dynamic-DINO upcycles, and being 1x1 they split into hidden-width partitions exactly. C3k2's 3x3
bottlenecks are left dense (see the package docstring).

The expansion is recorded in the model YAML under ``ffn_moe: {experts, split, layers}``; every model
built from such a YAML (the trainer's rebuild of a checkpoint, a resumed run) gets the same blocks
back, through the parser hook (``integration/parser.py``), before the checkpoint's weights are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .moe_ffn import FFNMoE, check_expansion

FFN_KEY = "ffn_moe"  # model YAML section written by `yolo-master upcycle`: {experts, split, layers}


@dataclass(frozen=True)
class ExpandedFFN:
    """One FFN that became an FFN-MoE."""

    path: str  # module path, e.g. "model.8.m.0.0.mlp"
    layer: int  # model index
    channels: int
    hidden: int
    dense_params: int
    block: FFNMoE


def is_ffn(m: nn.Module) -> bool:
    """True for ``Sequential(Conv(c, H, 1), Conv(H, c, 1, act=False))`` with unfused BatchNorms."""
    from ultralytics.nn.modules import Conv

    if not isinstance(m, nn.Sequential) or len(m) != 2 or not all(type(x) is Conv for x in m):
        return False
    up, down = m
    if not (hasattr(up, "bn") and hasattr(down, "bn")):
        return False  # fused (deployment) layers: no statistics to allocate
    convs = (up.conv, down.conv)
    pointwise = all(c.kernel_size == (1, 1) and c.stride == (1, 1) and c.groups == 1 and c.bias is None for c in convs)
    shapes = up.conv.in_channels == down.conv.out_channels and up.conv.out_channels == down.conv.in_channels
    return pointwise and shapes and isinstance(up.act, nn.SiLU) and isinstance(down.act, nn.Identity)


def find_ffns(seq: nn.Sequential, layers: list[int] | None = None) -> list[tuple[int, str, nn.Module, str]]:
    """``(layer index, module path, parent, attribute)`` of every FFN in ``seq`` (a task model's ``.model``)."""
    found = []
    for i, layer in enumerate(seq):
        if layers is not None and i not in layers:
            continue
        for name, parent in layer.named_modules():
            for attr, child in parent.named_children():
                if is_ffn(child):
                    found.append((i, ".".join(p for p in ("model", str(i), name, attr) if p), parent, attr))
    return found


def expand_ffns(seq: nn.Sequential, copies: int, split: int, layers: list[int] | None = None) -> list[ExpandedFFN]:
    """Replace every FFN of ``seq`` (in ``layers``, default all) by its upcycled FFN-MoE, in place.

    Raises:
        ValueError: bad ``experts`` / ``split``, or a ``split`` that does not divide some FFN's hidden width.
    """
    check_expansion(copies, split)
    found = find_ffns(seq, layers)
    widths = sorted({parent.get_submodule(attr)[0].conv.out_channels for _, _, parent, attr in found})
    bad = [w for w in widths if w % split]
    if bad:
        raise ValueError(
            f"split={split} must divide the hidden width of every FFN it splits; widths here: "
            f"{', '.join(map(str, widths))} (try split=1, 2 or another common divisor)"
        )
    out = []
    for i, path, parent, attr in found:
        ffn = getattr(parent, attr)
        block = FFNMoE.from_dense(ffn, copies, split)
        setattr(parent, attr, block)
        up = ffn[0].conv
        out.append(
            ExpandedFFN(path, i, up.in_channels, up.out_channels, sum(p.numel() for p in ffn.parameters()), block)
        )
    for i in {e.layer for e in out}:
        seq[i].np = sum(p.numel() for p in seq[i].parameters())  # the layer table's count
    return out


def check_options(options) -> dict:
    """Validate a YAML ``ffn_moe`` section; returns it with defaults filled in."""
    if not isinstance(options, dict):
        raise ValueError(f"model YAML '{FFN_KEY}:' must be a mapping with experts, split, layers; got {options!r}")
    unknown = set(options) - {"experts", "split", "layers"}
    if unknown:
        raise ValueError(f"model YAML '{FFN_KEY}:' has unknown keys {sorted(unknown)} (use experts, split, layers)")
    experts, split = check_expansion(options.get("experts", 4), options.get("split", 2))
    layers = options.get("layers")
    if layers is not None and (not isinstance(layers, list) or not all(isinstance(i, int) for i in layers)):
        raise ValueError(f"model YAML '{FFN_KEY}: layers:' must be a list of layer indices, got {layers!r}")
    return {"experts": experts, "split": split, "layers": layers}


def apply_ffn_section(seq: nn.Sequential, options) -> None:
    """Give the layers of a model built from a YAML with an ``ffn_moe`` section their FFN-MoE blocks."""
    if options is not None:
        options = check_options(options)
        expand_ffns(seq, options["experts"], options["split"], options["layers"])
