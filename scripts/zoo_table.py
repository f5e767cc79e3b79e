"""Measure every zoo model: parameters, active parameters and GFLOPs at 640 (detection vs published targets).

    python scripts/zoo_table.py [--out reports/zoo.md]

Prints the markdown tables the README's "Model zoo" section is copied from.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from report import emit
from ultralytics.utils.torch_utils import get_flops

from yolo_master import YOLOMaster
from yolo_master.nn.cost import active_params

TARGETS = {"n": (2.69, 8.8), "s": (9.71, 29.4), "m": (23.9, 98.0), "l": (30.2, 119.7), "x": (67.4, 266.1)}


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    rows = [
        "| model | params (M) | target | diff | active (M) | GFLOPs@640 | target | diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scale, (tp, tf) in TARGETS.items():
        net = YOLOMaster(f"yolo-master-{scale}.yaml").model
        p = sum(x.numel() for x in net.parameters()) / 1e6
        f = get_flops(net, 640)
        rows.append(
            f"| yolo-master-{scale} | {p:.2f} | {tp} | {p / tp - 1:+.1%} | {active_params(net) / 1e6:.2f} "
            f"| {f:.1f} | {tf} | {f / tf - 1:+.1%} |"
        )
    rows += ["", "| model | params (M) | active (M) | GFLOPs@640 |", "|---|---|---|---|"]
    for prefix in ("seg", "pose", "obb", "cls"):
        for scale in TARGETS:
            net = YOLOMaster(f"yolo-master-{prefix}-{scale}.yaml").model
            p, f = sum(x.numel() for x in net.parameters()) / 1e6, get_flops(net, 640)
            rows.append(f"| yolo-master-{prefix}-{scale} | {p:.2f} | {active_params(net) / 1e6:.2f} | {f:.1f} |")
    return emit("\n".join(rows), a.out)


if __name__ == "__main__":
    main()
