"""Ultralytics' model parser, taught our blocks.

``parse_model`` resolves module names in the namespace of ``ultralytics.nn.tasks`` and infers ``c1`` /
width-scales ``c2`` only for the blocks in a set local to that function. So the wrapper installed at
``import yolo_master``:

1. gives a YAML with none of our blocks (and no ``ffn_moe:`` section) straight to the original, so
   stock models build exactly as before;
2. otherwise parses a copy in which each of our rows is a stand-in ``Conv [c2, 1]``: Ultralytics then
   does the channel bookkeeping it does for its own blocks (``c1 = ch[f]``,
   ``c2 = make_divisible(min(c2, max_channels) * width, 8)``), and each stand-in is swapped for the
   real block, built from those channels and the YAML's validated ``moe:`` options;
3. splits the FFNs of a YAML with an ``ffn_moe:`` section (written by ``yolo-master upcycle``), so the
   trainer's rebuild of an upcycled checkpoint has the checkpoint's shapes;
4. prints the layer table afterwards, with the real module names.
"""

from __future__ import annotations

from copy import deepcopy

from torch import nn

from ..nn import BLOCKS, ESMoE, MoEOptions
from ..nn.ffn_expansion import FFN_KEY, apply_ffn_section

STAND_IN = "Conv"


def model_rows(d: dict) -> list:
    """Every ``[from, n, module, args]`` row of a model dict, backbone then head."""
    return d["backbone"] + d["head"]


def with_stand_ins(d: dict) -> tuple[dict, dict[int, tuple[str, list]]]:
    """Copy of the model dict with our rows replaced by stand-ins; returns ``{row index: (name, args)}``."""
    lowered = deepcopy(d)
    ours = {}
    for i, row in enumerate(model_rows(lowered)):
        f, n, name, args = row
        if name in BLOCKS:
            if not isinstance(args, list) or not args:
                raise ValueError(f"layer {i} {name}: args must be a list starting with c2, got {args!r}")
            ours[i] = (name, list(args))
            row[2], row[3] = STAND_IN, [args[0], 1]
    return lowered, ours


def build_blocks(model: nn.Sequential, ours: dict[int, tuple[str, list]], options: MoEOptions) -> None:
    """Swap each stand-in for the real block, built with the channels Ultralytics inferred."""
    for i, (name, args) in ours.items():
        stand_in = model[i]
        convs = list(stand_in) if isinstance(stand_in, nn.Sequential) else [stand_in]
        c1, c2 = convs[0].conv.in_channels, convs[0].conv.out_channels
        extra = {"options": options} if issubclass(BLOCKS[name], ESMoE) else {}
        try:
            blocks = [BLOCKS[name](c1 if j == 0 else c2, c2, *args[1:], **extra) for j in range(len(convs))]
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
    for i, (layer, row) in enumerate(zip(model, model_rows(d))):
        n = len(layer) if isinstance(layer, nn.Sequential) and row[2] in BLOCKS else row[1]
        rows.append((i, layer.f, n, layer.np, layer.type, getattr(layer, "args", row[3])))
    return rows


def print_layer_table(model: nn.Sequential, d: dict) -> None:
    """The layer table Ultralytics prints while building, with our blocks under their own names."""
    from ultralytics.utils import LOGGER

    LOGGER.info(f"\n{'':>3}{'from':>20}{'n':>3}{'params':>10}  {'module':<45}{'arguments':<30}")
    for i, f, n, np_, t, args in layer_rows(model, d):
        LOGGER.info(f"{i:>3}{f!s:>20}{n:>3}{np_:10.0f}  {t:<45}{args!s:<30}")


def check_options_apply(ours: dict[int, tuple[str, list]], options: MoEOptions) -> None:
    """A non-empty ``moe:`` section on a model without ES-MoE blocks would do nothing: say so."""
    if not options.is_default and not any(issubclass(BLOCKS[name], ESMoE) for name, _ in ours.values()):
        raise ValueError(
            "model YAML 'moe:' options apply to ESMoE blocks, and this model has none "
            "(HiMoE takes its settings in its own row): remove the section or add ESMoE rows"
        )


def wrap_parse_model(original):
    """``parse_model`` that builds our blocks; stock YAMLs go straight to ``original``."""

    def parse_model(d, ch, verbose=True):
        lowered, ours = with_stand_ins(d)
        if not ours and d.get(FFN_KEY) is None and d.get("moe") is None:
            return original(d, ch, verbose)
        options = MoEOptions.from_yaml(d.get("moe"))
        check_options_apply(ours, options)
        model, save = original(lowered, ch, verbose=False)
        build_blocks(model, ours, options)
        if d.get(FFN_KEY) is not None:
            apply_ffn_section(model, d[FFN_KEY])
        if verbose:
            print_layer_table(model, d)
        return model, save

    parse_model.__wrapped__ = original
    parse_model.__doc__ = original.__doc__
    return parse_model
