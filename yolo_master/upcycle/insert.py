"""Putting a dense model's layers into an architecture with ES-MoE blocks, without changing its function.

Two layouts:

- ``graft`` (default): the dense model's own YAML with the target's ES-MoE rows inserted where the
  target has them (after the same number of non-ES-MoE rows, e.g. after the P2 / P3 / P4 stages of
  the zoo), every ``from`` index shifted; a layer read from a stage now reads the ES-MoE after it, as
  in the zoo. Every dense layer keeps its weights, so the whole model is function-preserving.
- ``target``: the target YAML as it is. Its layers are matched to the dense layers in order by
  (module type, parameter shapes), like a diff of the two layer lists; matched layers load, the
  others start fresh (new) and unmatched dense layers are dropped (skipped). Only the matched part
  keeps its function: e.g. YOLO12's A2C2f head has no counterpart in the zoo's C3k2 head.

An inserted ES-MoE block is ``x + Norm(sum_k w_k E_k(x))``; zeroing its output norm's weight and
bias makes it exactly the identity. This is the zero-init residual branch (Goyal et al. 2017,
ReZero): the norm still gets gradients (``dL/dgamma = sum(g * x_hat)``, ``dL/dbeta = sum(g)``), so the
first optimiser step moves it off zero and from then on the experts and the router learn too.
"""

from __future__ import annotations

from difflib import SequenceMatcher

from torch import nn

from ..nn import ESMoE

MOE_ROW = "ESMoE"


class UpcycleError(ValueError):
    """The checkpoint and the requested target cannot be combined (one readable line; CLI exit 2)."""


def identity_init(block: ESMoE) -> None:
    """Make an ES-MoE block the identity: zero output norm, shortcut carries the input through."""
    if not block.add:
        raise UpcycleError(
            f"ES-MoE {block.c1}->{block.c2} channels has no identity shortcut, so it cannot be inserted "
            "without changing the model: its output channels must equal its input channels"
        )
    nn.init.zeros_(block.norm.weight)
    nn.init.zeros_(block.norm.bias)


def _rows(d: dict) -> list:
    return d["backbone"] + d["head"]


def _absolute(f, i: int) -> list[int]:
    return [x if x >= 0 else i + x for x in (f if isinstance(f, list) else [f])]


def graft_yaml(dense: dict, target: dict) -> tuple[dict, dict[int, int], list[int]]:
    """The dense model dict with the target's ES-MoE rows inserted at the same positions.

    Returns:
        ``(model dict, {dense index: new index}, [indices of the inserted rows])``.
    """
    target_rows = _rows(target)
    inserts = []  # (position among the non-ES-MoE rows, row, in backbone)
    kept = 0
    for i, row in enumerate(target_rows):
        if row[2] == MOE_ROW:
            if row[0] != -1:
                raise UpcycleError(f"target layer {i} ESMoE reads layer {row[0]}: only -1 (the previous layer) grafts")
            inserts.append((kept, row, i < len(target["backbone"])))
        else:
            kept += 1
    if not inserts:
        raise UpcycleError(f"target {target.get('yaml_file', 'YAML')} has no ESMoE rows to insert")
    rows, n_backbone = _rows(dense), len(dense["backbone"])
    if any(row[2] == MOE_ROW for row in rows):
        raise UpcycleError("the checkpoint already has ES-MoE blocks (a YOLO-Master model): upcycle it without to=")
    for p, _, in_backbone in inserts:
        limit = n_backbone if in_backbone else len(rows) - 1  # not after the output layer
        if p < 1 or p > limit:
            part = "backbone" if in_backbone else "model"
            raise UpcycleError(
                f"incompatible checkpoint: the target puts an ES-MoE block after {part} layer {p - 1}, "
                f"but the checkpoint's {part} has {limit} layers"
            )
    positions = [p for p, _, _ in inserts]
    new_index = {j: j + sum(p <= j for p in positions) for j in range(len(rows))}
    read_index = {j: new_index[j] + sum(p == j + 1 for p in positions) for j in range(len(rows))}  # via its ES-MoE

    out_rows, inserted = [], []
    for j, (f, n, m, args) in enumerate(rows):
        for row in (row for p, row, _ in inserts if p == j):
            prev = rows[j - 1][3]
            c2 = prev[0] if prev and isinstance(prev[0], int) and not isinstance(prev[0], bool) else row[3][0]
            inserted.append(len(out_rows))
            out_rows.append([-1, 1, MOE_ROW, [c2, *row[3][1:]]])
        me = new_index[j]
        new_f = [
            -1 if x < 0 else read_index[x] - me if o < 0 else read_index[x]  # relative stays relative
            for o, x in zip(f if isinstance(f, list) else [f], _absolute(f, j))
        ]
        out_rows.append([new_f if isinstance(f, list) else new_f[0], n, m, list(args)])
    grafted = {k: v for k, v in dense.items() if k not in {"backbone", "head"}}
    n_new_backbone = n_backbone + sum(b for _, _, b in inserts)
    grafted["backbone"], grafted["head"] = out_rows[:n_new_backbone], out_rows[n_new_backbone:]
    return grafted, new_index, inserted


def signature(layer: nn.Module) -> tuple:
    """What must agree for a dense layer's weights to load into a target layer: type and every tensor shape."""
    return type(layer).__name__, tuple((k, tuple(v.shape)) for k, v in layer.state_dict().items())


def match_layers(dense: nn.Sequential, target: nn.Sequential) -> dict[int, int]:
    """``{target index: dense index}`` for layers that agree in :func:`signature`, aligned in order."""
    a = [signature(m) for m in dense]
    b = [signature(m) for m in target]
    matcher = SequenceMatcher(a=a, b=b, autojunk=False)
    return {blk.b + t: blk.a + t for blk in matcher.get_matching_blocks() for t in range(blk.size)}


def copy_layers(dense: nn.Sequential, target: nn.Sequential, mapping: dict[int, int]) -> None:
    """Load each mapped dense layer's state into its target layer (same type, same shapes: strict)."""
    for t, d in mapping.items():
        target[t].load_state_dict(dense[d].state_dict())
