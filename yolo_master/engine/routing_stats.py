"""Routing statistics during training: which experts each MoE layer used, per epoch, and collapse warnings.

For every routed layer (``nn.moe_layers``), after each training batch we add up, per
expert, how many images selected it and how much routing weight it received. At the end of each
epoch one row per (layer, expert) is appended to ``routing.csv`` in the run directory:

    epoch, layer, expert, selected, load, maxvio, dropped

``selected`` is the fraction of images that routed to the expert (the K fractions of a layer sum to
K); ``load`` is the expert's share of the routing weight (sums to 1 per layer; eq. 12's mu);
``maxvio`` is the layer's MaxVio over the whole epoch (GigaMoE eq. 8: the most chosen expert's
count over the mean count, minus 1; 0 is perfectly balanced); ``dropped`` is the fraction of the
layer's assignments the expert capacity dropped (0 without a capacity). With variable K the
``selected`` fractions of a layer sum to the average number of experts per image. The
whole history is drawn into ``routing.png`` next to Ultralytics' plots, and a layer whose one expert
takes more than 90% of the load, or whose expert gets under 2%, is named in a warning.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import nn

from ..nn import named_moe_layers
from ..nn.routers.base import distributed

COLLAPSE_LOAD = 0.90  # one expert above this share of a layer's routing weight: collapsed
STARVED_LOAD = 0.02  # an expert below this share: starved

FIELDS = ("epoch", "layer", "expert", "selected", "load", "maxvio", "dropped")


def max_violation(selected: list[float]) -> float:
    """GigaMoE eq. 8: ``max_i load_i / mean(load) - 1`` over expert selection counts (or fractions)."""
    mean = sum(selected) / len(selected)
    return max(selected) / mean - 1 if mean > 0 else 0.0


def collapse_warnings(loads: dict[str, list[float]]) -> list[str]:
    """Readable warnings for layers whose load is collapsed onto one expert or starves one."""
    out = []
    for layer, load in loads.items():
        top = max(range(len(load)), key=load.__getitem__)
        low = min(range(len(load)), key=load.__getitem__)
        if load[top] > COLLAPSE_LOAD:
            out.append(f"MoE layer {layer} collapsed: expert {top} takes {load[top]:.0%} of the routing weight")
        elif load[low] < STARVED_LOAD:
            out.append(f"MoE layer {layer}: expert {low} is starved ({load[low]:.1%} of the routing weight)")
    return out


class RoutingStats:
    """Accumulates routing per epoch from a trainer's callbacks and writes ``routing.csv`` / ``.png``."""

    def __init__(self) -> None:
        self.images: dict[str, int] = {}
        self.selected: dict[str, torch.Tensor] = {}
        self.load: dict[str, torch.Tensor] = {}
        self.dropped: dict[str, torch.Tensor] = {}  # dropped fraction x images, summed

    def attach(self, trainer) -> None:
        trainer.add_callback("on_train_epoch_start", self.reset)
        trainer.add_callback("on_train_batch_end", self.update)
        trainer.add_callback("on_train_epoch_end", self.write)

    def reset(self, trainer=None) -> None:
        self.images, self.selected, self.load, self.dropped = {}, {}, {}, {}

    def add(self, model: nn.Module) -> None:
        """Add the latest forward's routing of every layer of ``model``."""
        for name, layer in named_moe_layers(model).items():
            routing = layer.last_routing
            if routing is None:
                continue
            dense = routing.dense.float().cpu()
            share = dense / dense.sum(1, keepdim=True).clamp_min(1e-9)
            self.images[name] = self.images.get(name, 0) + dense.shape[0]
            self.selected[name] = self.selected.get(name, 0) + (dense > 0).sum(0)
            self.load[name] = self.load.get(name, 0) + share.sum(0)
            dropped = getattr(routing, "dropped", None)
            dropped = 0.0 if dropped is None else dropped.float().cpu() * dense.shape[0]
            self.dropped[name] = self.dropped.get(name, 0) + torch.as_tensor(dropped).reshape(1)

    def update(self, trainer) -> None:
        from ultralytics.utils.torch_utils import unwrap_model

        self.add(unwrap_model(trainer.model))

    def reduce(self) -> None:
        """Sum the counts over every DDP rank, so that every rank logs the same expert loads."""
        if not distributed():
            return
        for name in sorted(self.images):  # the same order on every rank
            counts = [torch.tensor([float(self.images[name])]), self.dropped[name].float()]
            packed = torch.cat([*counts, self.selected[name].float(), self.load[name]])
            torch.distributed.all_reduce(packed)
            e = self.selected[name].numel()
            self.images[name], self.dropped[name] = int(packed[0].item()), packed[1:2]
            self.selected[name], self.load[name] = packed[2 : 2 + e], packed[2 + e :]

    def summary(self) -> dict[str, tuple[list[float], list[float]]]:
        """``{layer: (selected fractions, load shares)}`` for the epoch so far."""
        return {
            name: ((self.selected[name] / n).tolist(), (self.load[name] / n).tolist())
            for name, n in self.images.items()
        }

    def dropped_fraction(self, name: str) -> float:
        """The fraction of ``name``'s assignments the capacity dropped this epoch (image-weighted)."""
        return float(self.dropped[name].sum()) / max(self.images[name], 1)

    def write(self, trainer) -> None:
        from ultralytics.utils import LOGGER, RANK

        self.reduce()  # every rank takes part, before rank 0 writes
        if RANK not in {-1, 0} or not self.images:
            return
        summary = self.summary()
        path = Path(trainer.save_dir) / "routing.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(FIELDS)
            for layer, (selected, load) in summary.items():
                maxvio, dropped = max_violation(selected), self.dropped_fraction(layer)
                for e, (s, w) in enumerate(zip(selected, load)):
                    row = (trainer.epoch + 1, layer, e, f"{s:.5f}", f"{w:.5f}", f"{maxvio:.4f}", f"{dropped:.4f}")
                    writer.writerow(row)
        for message in collapse_warnings({layer: load for layer, (_, load) in summary.items()}):
            LOGGER.warning(message)
        if getattr(trainer.args, "plots", False):
            plot_routing(path)


def read_routing(path: Path) -> dict[str, dict[int, list[tuple[int, float]]]]:
    """``{layer: {expert: [(epoch, load), ...]}}`` from a ``routing.csv``."""
    history: dict[str, dict[int, list[tuple[int, float]]]] = {}
    with Path(path).open() as f:
        for row in csv.DictReader(f):
            series = history.setdefault(row["layer"], {}).setdefault(int(row["expert"]), [])
            series.append((int(row["epoch"]), float(row["load"])))
    return history


def plot_routing(csv_path: Path) -> Path:
    """Expert load per layer over epochs, one panel per layer, saved beside the CSV as ``routing.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    history = read_routing(csv_path)
    fig, axes = plt.subplots(1, len(history), figsize=(4 * len(history), 3.2), squeeze=False, tight_layout=True)
    for ax, (layer, experts) in zip(axes[0], history.items()):
        for e, series in sorted(experts.items()):
            epochs, loads = zip(*series)
            ax.plot(epochs, loads, marker=".", label=f"expert {e}")
        ax.axhline(1 / len(experts), color="grey", lw=0.8, ls="--")
        ax.set(title=f"ES-MoE layer {layer}", xlabel="epoch", ylabel="share of routing weight", ylim=(0, 1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    out = Path(csv_path).with_suffix(".png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
