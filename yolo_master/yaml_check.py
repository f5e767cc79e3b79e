"""Checks of a model YAML before Ultralytics parses it, so a mistake is one line naming the layer.

Ultralytics' parser assumes a well-formed file: a typo in a module name, a row with three fields or
a ``from`` index pointing forward ends in a KeyError / IndexError deep inside it. Every model that
``YOLOMaster`` or the CLI builds passes through :func:`check_model_dict` first.
"""

from __future__ import annotations

import importlib
import math

import torch

from .nn import BLOCKS


def _module_exists(name: str) -> bool:
    if name.startswith("nn."):
        return hasattr(torch.nn, name[3:])
    if name.startswith("torchvision.ops."):
        return hasattr(importlib.import_module("torchvision").ops, name[16:])
    return name in BLOCKS or hasattr(importlib.import_module("ultralytics.nn.tasks"), name)


def _number(value) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_model_dict(d: dict, source: str = "model YAML") -> None:
    """Raise ``ValueError`` with one line naming the first problem in ``d``."""
    nc = d.get("nc")
    if nc is not None and (not _is_int(nc) or nc < 1):
        raise ValueError(f"{source}: nc must be a positive integer (the number of classes), got {nc!r}")
    scales = d.get("scales")
    if scales is not None:
        if not isinstance(scales, dict) or not scales:
            raise ValueError(f"{source}: 'scales' must map a scale name to [depth, width, max_channels]")
        for name, values in scales.items():
            ok = isinstance(values, list) and len(values) == 3 and all(_number(v) and v > 0 for v in values)
            if not ok:
                raise ValueError(
                    f"{source}: scale '{name}' must be [depth, width, max_channels], each > 0, got {values!r}"
                )
    scale = d.get("scale")
    if scale and scales and scale not in scales:
        raise ValueError(f"{source}: 'scale: {scale}' is not one of its scales ({', '.join(map(str, scales))})")
    for part in ("backbone", "head"):
        if not isinstance(d.get(part), list) or not d[part]:
            raise ValueError(f"{source}: '{part}' must be a non-empty list of [from, repeats, module, args] rows")
    for i, row in enumerate(d["backbone"] + d["head"]):
        where = f"{source}: layer {i}"
        if not isinstance(row, list) or len(row) != 4:
            raise ValueError(f"{where}: expected [from, repeats, module, args], got {row!r}")
        f, n, name, args = row
        sources = f if isinstance(f, list) else [f]
        if not sources or not all(_is_int(x) and (x < i if x >= 0 else -x <= max(i, 1)) for x in sources):
            raise ValueError(f"{where}: 'from' must name earlier layers (e.g. -1 or [-1, 6]), got {f!r}")
        if not _is_int(n) or n < 1:
            raise ValueError(f"{where}: repeats must be a positive integer, got {n!r}")
        if not isinstance(name, str) or not _module_exists(name):
            raise ValueError(f"{where}: unknown module {name!r} (a typo? YOLO-Master adds: {', '.join(BLOCKS)})")
        if not isinstance(args, list):
            raise ValueError(f"{where}: args must be a list, got {args!r}")
        if name in BLOCKS:
            if isinstance(f, list) and len(f) != 1:
                raise ValueError(f"{where} {name}: takes one input ('from' a single layer, e.g. -1), got {f!r}")
            if not args or not _is_int(args[0]) or args[0] < 1:
                raise ValueError(
                    f"{where} {name}: the first arg is the output channels c2, a positive integer; got {args!r}"
                )
            if any(not _is_int(a) for a in args[1:3]):
                raise ValueError(f"{where} {name}: num_experts and top_k must be integers, got {args[1:3]!r}")
