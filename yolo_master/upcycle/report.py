"""What an upcycling did, for the user (printed) and for the record (stored in the checkpoint).

Per target layer: loaded from which dense layer, or new (and why); per dense layer left out: skipped;
each FFN that became experts; and active / total parameters before and after, the way Dynamic-DINO's
Table 8 reports them: MoE-tuning adds total parameters and keeps the active ones (almost) equal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class UpcycleReport:
    """The outcome of one upcycling; every field is plain data (safe in a ``weights_only`` checkpoint)."""

    source: str
    target: str
    layout: str
    experts: int
    split: int
    loaded: list[tuple[int, int, str]] = field(default_factory=list)  # (new index, dense index, module)
    new: list[tuple[int, str, str]] = field(default_factory=list)  # (new index, module, why)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (dense index, module)
    ffns: list[tuple[str, int, int]] = field(default_factory=list)  # (module path, channels, hidden width)
    dense_params: tuple[int, int] = (0, 0)  # (active, total)
    moe_params: tuple[int, int] = (0, 0)
    step0_max_diff: float | None = None  # max |upcycled - dense| / max(1, |dense|), random images, eval mode
    function_preserving: bool = True
    output: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """The human-readable report."""
        out = [f"upcycle {self.source} -> {self.target} (layout={self.layout})"]
        if self.loaded:
            pairs = ", ".join(f"{d}->{n}" if d != n else str(n) for n, d, _ in self.loaded)
            out.append(f"  loaded   {len(self.loaded)} layers from the checkpoint (dense->new index): {pairs}")
        for i, module, why in self.new:
            out.append(f"  new      layer {i} {module}: {why}")
        for i, module in self.skipped:
            out.append(f"  skipped  dense layer {i} {module}: no counterpart in the target")
        if self.ffns:
            e, k = self.experts * self.split, self.split
            widths = sorted({(c, h) for _, c, h in self.ffns})
            shapes = ", ".join(f"{c}->{h}->{c}" for c, h in widths)
            out.append(
                f"  expanded {len(self.ffns)} FFNs ({shapes}) into {self.experts} copies x {self.split} partitions"
                f" = {e} experts, top-{k} per image"
            )
        else:
            out.append("  expanded no FFN (the model has no Conv 1x1 -> Conv 1x1 feed-forward blocks)")
        (da, dt), (ma, mt) = self.dense_params, self.moe_params
        out.append(f"  parameters (active / total): dense {da / 1e6:.3f}M / {dt / 1e6:.3f}M")
        out.append(
            f"                               MoE   {ma / 1e6:.3f}M / {mt / 1e6:.3f}M  "
            f"(active {ma / max(da, 1) - 1:+.1%}, total {mt / max(dt, 1) - 1:+.1%})"
        )
        if self.step0_max_diff is not None:
            verdict = "same predictions" if self.function_preserving else "differs: new layers are untrained"
            out.append(
                f"  step-0 check: max |MoE - dense| / max(1, |dense|) = {self.step0_max_diff:.1e} on random images "
                f"({verdict})"
            )
        if self.output:
            out.append(f"  written to {self.output}: train it with 'yolo-master train model={self.output} data=...'")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())
