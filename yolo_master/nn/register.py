"""Make YOLO-Master blocks YAML-parsable in stock Ultralytics, without editing its files.

Ultralytics' ``parse_model`` resolves module names in the namespace of ``ultralytics.nn.tasks`` and
infers ``c1`` / width-scales ``c2`` only for the blocks in a set local to that function. So, once at
``import yolo_master``:

1. each block class is added to that namespace (so checkpoints and YAMLs name it as ``ESMoE``);
2. ``parse_model`` is wrapped. A YAML with none of our blocks goes straight to the original, so stock
   models build exactly as before. A YAML with our blocks is parsed by the original with each of our
   rows lowered to a stand-in ``Conv [c2, 1]``: Ultralytics then does the channel bookkeeping it does
   for its own blocks (``c1 = ch[f]``, ``c2 = make_divisible(min(c2, max_channels) * width, 8)``),
   and the stand-in is swapped for the real block built from those channels. The layer table is
   printed afterwards, with the real module names. A YAML with an ``ffn_moe:`` section (written by
   ``yolo-master upcycle``) gets its FFNs split into experts here too, so the trainer's rebuild of an
   upcycled checkpoint has the checkpoint's shapes.
3. thop (Ultralytics' FLOPs counter) learns to count the experts that run.
4. Ultralytics' opt-in safe checkpoint loading (``ULTRALYTICS_SAFE_LOAD=1``, a ``weights_only``
   unpickler with an allow-list of known classes) learns our classes, and nothing else.
"""

from __future__ import annotations

import importlib
from copy import deepcopy

import torch
from torch import nn

from .experts import ExpertBank
from .hierarchical import HiMoE
from .moe import ESMoE
from .moe_ffn import FFN_KEY, FFNExpertBank

# YAML name -> class with a (c1, c2, *args) signature
BLOCKS: dict[str, type[nn.Module]] = {"ESMoE": ESMoE, "HiMoE": HiMoE}
_STAND_IN = "Conv"


def _rows(d: dict) -> list:
    return d["backbone"] + d["head"]


def _lower(d: dict) -> tuple[dict, dict[int, tuple[str, list]]]:
    """Copy of the model dict with our rows replaced by stand-ins; returns ``{row index: (name, args)}``."""
    lowered = deepcopy(d)
    ours = {}
    for i, row in enumerate(_rows(lowered)):
        f, n, name, args = row
        if name in BLOCKS:
            if not isinstance(args, list) or not args:
                raise ValueError(f"layer {i} {name}: args must be a list starting with c2, got {args!r}")
            ours[i] = (name, list(args))
            row[2], row[3] = _STAND_IN, [args[0], 1]
    return lowered, ours


def _raise(model: nn.Sequential, ours: dict[int, tuple[str, list]]) -> None:
    """Swap each stand-in for the real block, built with the channels Ultralytics inferred."""
    for i, (name, args) in ours.items():
        stand_in = model[i]
        convs = list(stand_in) if isinstance(stand_in, nn.Sequential) else [stand_in]
        c1, c2 = convs[0].conv.in_channels, convs[0].conv.out_channels
        try:
            blocks = [BLOCKS[name](c1 if j == 0 else c2, c2, *args[1:]) for j in range(len(convs))]
        except (TypeError, ValueError) as e:
            raise ValueError(f"layer {i} {name} {args}: {e}") from None
        block = nn.Sequential(*blocks) if len(blocks) > 1 else blocks[0]
        block.i, block.f, block.type = stand_in.i, stand_in.f, f"{type(blocks[0]).__module__}.{name}"
        block.np = sum(p.numel() for p in block.parameters())
        block.args = [c1, c2, *args[1:]]
        model[i] = block


def layer_rows(model: nn.Sequential, d: dict) -> list[tuple]:
    """``(index, from, n, params, module, args)`` per layer, args as built for our blocks."""
    rows = []
    for i, (layer, row) in enumerate(zip(model, _rows(d))):
        n = len(layer) if isinstance(layer, nn.Sequential) and row[2] in BLOCKS else row[1]
        rows.append((i, layer.f, n, layer.np, layer.type, getattr(layer, "args", row[3])))
    return rows


def print_layer_table(model: nn.Sequential, d: dict) -> None:
    """The layer table Ultralytics prints while building, with our blocks under their own names."""
    from ultralytics.utils import LOGGER

    LOGGER.info(f"\n{'':>3}{'from':>20}{'n':>3}{'params':>10}  {'module':<45}{'arguments':<30}")
    for i, f, n, np_, t, args in layer_rows(model, d):
        LOGGER.info(f"{i:>3}{f!s:>20}{n:>3}{np_:10.0f}  {t:<45}{args!s:<30}")


BALANCE_DECAYS = ("constant", "linear", "cosine")
MOE_KEYS = ("balance", "bias_rate", "bias_decay", "router", "shared", "k_dist", "capacity")


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def parse_moe_options(options: dict | None) -> dict:
    """Validate the model YAML's ``moe:`` section; one readable ``ValueError`` per mistake.

    Keys (all optional; leaving them all out reproduces the paper's ES-MoE exactly):
        balance: ``loss`` (default, eq. 12-13 only) or ``bias`` (adds GigaMoE's loss-free bias balancing,
            Algorithm 1), with ``bias_rate`` (u_init, default 1e-2) and ``bias_decay`` (constant | linear |
            cosine over training).
        router: ``topk`` (default) or ``soft`` (every expert, softmax over experts per image: the rho
            paper's per-sample Soft MoE, the dense baseline).
        shared: ``true`` adds GigaMoE's always-on shared expert (taking one of the K slots).
        k_dist: GigaMoE's ``P = (p_0, ..., p_kmax)``: sparsity-guided variable K (0..k_max experts per image).
        capacity: training capacity factor for the routed experts (e.g. 1.25); dropped assignments fall
            back to the shared expert and the residual.
    """
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValueError(f"model YAML 'moe:' must be a mapping of options, got {options!r}")
    unknown = sorted(set(options) - set(MOE_KEYS))
    if unknown:
        raise ValueError(f"model YAML 'moe:' section: unknown keys {unknown} (use {', '.join(MOE_KEYS)})")
    o = {"balance": "loss", "bias_rate": 1e-2, "bias_decay": "constant", "router": "topk", "shared": False}
    o.update({"k_dist": None, "capacity": None, **options})
    if o["balance"] not in {"loss", "bias"}:
        raise ValueError(f"model YAML 'moe: balance: {o['balance']}': choose loss or bias")
    if not _number(o["bias_rate"]) or o["bias_rate"] <= 0:
        raise ValueError(f"model YAML 'moe: bias_rate: {o['bias_rate']}': a positive number, e.g. 0.01")
    if o["bias_decay"] not in BALANCE_DECAYS:
        raise ValueError(f"model YAML 'moe: bias_decay: {o['bias_decay']}': choose {', '.join(BALANCE_DECAYS)}")
    if o["router"] not in {"topk", "soft"}:
        raise ValueError(f"model YAML 'moe: router: {o['router']}': choose topk or soft")
    if not isinstance(o["shared"], bool):
        raise ValueError(f"model YAML 'moe: shared: {o['shared']}': true or false")
    if o["k_dist"] is not None:
        from .variable_k import check_distribution

        try:
            o["k_dist"] = check_distribution(o["k_dist"])
        except ValueError as e:
            raise ValueError(f"model YAML 'moe:' {e}") from None
    if o["capacity"] is not None and (not _number(o["capacity"]) or o["capacity"] <= 0):
        raise ValueError(f"model YAML 'moe: capacity: {o['capacity']}': a positive factor, e.g. 1.25")
    if o["router"] == "soft" and (o["k_dist"] is not None or o["capacity"] is not None):
        raise ValueError("model YAML 'moe: router: soft' runs every expert: k_dist and capacity do not apply")
    return o


def apply_moe_options(model: nn.Module, options: dict | None) -> None:
    """Apply the model YAML's ``moe:`` section (see :func:`parse_moe_options`) to every ES-MoE block."""
    o = parse_moe_options(options)
    for m in model.modules():
        if isinstance(m, ESMoE):
            m.router.bias_rate = float(o["bias_rate"]) if o["balance"] == "bias" else 0.0
            m.router.bias_decay = o["bias_decay"]
            m.configure(shared=o["shared"], soft=o["router"] == "soft", k_dist=o["k_dist"], capacity=o["capacity"])
            m.np = sum(p.numel() for p in m.parameters())  # the layer table's count, after a shared expert


def _wrap_parse_model(original):
    def parse_model(d, ch, verbose=True):
        lowered, ours = _lower(d)
        if not ours and d.get(FFN_KEY) is None:
            return original(d, ch, verbose)
        model, save = original(lowered, ch, verbose=False)
        _raise(model, ours)
        apply_moe_options(model, d.get("moe"))
        if d.get(FFN_KEY) is not None:  # an upcycled checkpoint's FFNs, split as `yolo-master upcycle` split them
            from ..upcycle.expand import apply_yaml  # not at import time: upcycle/ imports the model classes

            apply_yaml(model, d[FFN_KEY])
        if verbose:
            print_layer_table(model, d)
        return model, save

    parse_model.__wrapped__ = original
    parse_model.__doc__ = original.__doc__
    return parse_model


def _per_pixel(bank: ExpertBank, e: int) -> int:
    k = bank.kernel_sizes[e]
    return bank.c1 * (k * k + 2 + bank.c2)  # depthwise + BN + pointwise


def routed_macs(bank: ExpertBank, x: torch.Tensor, indices: torch.Tensor) -> float:
    """Multiply-accumulates of the routed experts for one forward: the expected number of routed experts
    per image (K, or ``sum_j j p_j`` with variable K) at their average size. The average, not the route an
    input happened to take, so the count is reproducible."""
    routed = bank.num_routed
    per_image = bank.expected_routed if bank.expected_routed is not None else indices.shape[1] - bank.num_shared
    mean = sum(_per_pixel(bank, e) for e in range(routed)) / routed
    return x.shape[0] * x.shape[2] * x.shape[3] * per_image * mean


def shared_macs(bank: ExpertBank, x: torch.Tensor) -> float:
    """Multiply-accumulates of the always-on shared expert(s), if any."""
    shared = range(bank.num_routed, bank.num_experts)
    return x.shape[0] * x.shape[2] * x.shape[3] * sum(_per_pixel(bank, e) for e in shared)


def _count_expert_bank(bank: ExpertBank, inputs: tuple, output) -> None:
    """thop rule for the expert bank: routed (:func:`routed_macs`) plus shared experts."""
    bank.total_ops += routed_macs(bank, inputs[0], inputs[1]) + shared_macs(bank, inputs[0])


def _count_ffn_expert_bank(bank: FFNExpertBank, inputs: tuple, output) -> None:
    """thop rule for the FFN-MoE experts (``moe_ffn.py``): K experts of width ``hidden``, two 1x1 layers each."""
    x, indices = inputs[0], inputs[1]
    bank.total_ops += indices.numel() * x.shape[2] * x.shape[3] * bank.hidden * (2 * bank.c + 1)


def safe_load_classes() -> list[type]:
    """Every class of ours that a checkpoint may name (models, blocks, per-forward state, criterion)."""
    from ..models import TASK_MODELS
    from ..models.moe_loss import MoECriterion
    from .moe import Transient
    from .moe_ffn import FFNExpertBank, FFNMoE
    from .routing import TopKRouter

    return [*TASK_MODELS.values(), ESMoE, HiMoE, ExpertBank, TopKRouter, Transient, MoECriterion, FFNMoE, FFNExpertBank]


def _allow_in_safe_load(tasks) -> None:
    safe = getattr(tasks, "_SafeLoad", None)
    if safe is None or not getattr(safe, "SUPPORTED", False):
        return
    with safe._lock:
        if safe._registry is None:
            safe._registry = safe._build()
        safe._registry.update({f"{c.__module__}.{c.__qualname__}": c for c in safe_load_classes()})


def register() -> None:
    """Idempotently register our blocks with Ultralytics (and thop, when installed)."""
    tasks = importlib.import_module("ultralytics.nn.tasks")
    for name, cls in BLOCKS.items():
        setattr(tasks, name, cls)
    if not hasattr(tasks.parse_model, "__wrapped__"):
        tasks.parse_model = _wrap_parse_model(tasks.parse_model)
    _allow_in_safe_load(tasks)
    try:
        thop_profile = importlib.import_module("thop.profile")
        thop_profile.register_hooks[ExpertBank] = _count_expert_bank
        thop_profile.register_hooks[FFNExpertBank] = _count_ffn_expert_bank
    except (ImportError, AttributeError):
        pass
