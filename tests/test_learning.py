"""The model learns: a fixed small budget on the offline data reaches a measured mAP50, and the same
budget with the routed branch's gradient cut falls clearly short.

The budget and thresholds were set from measurements on a 2-core CPU; rerun them (and print the
table the thresholds come from) with

    python tests/test_learning.py --seeds 0 1 2

Measured (2026-12-03, seeds 0 / 1 / 2, each run about a minute): mAP50 0.072 / 0.051 / 0.051 normal,
0.016 / 0.033 / 0.022 with the gradient cut (best epoch): the cut runs reach 0.22 / 0.64 / 0.44 of the
normal ones. Seed 0, the one tested (training is deterministic: the test reproduced 0.072 and 0.016
exactly), keeps a 2.4x margin on the learning threshold and 2.2x on the cut bound; at this budget the
separation depends on the seed (seed 1 would not pass the 0.5 bound), so a change of budget or seed
needs a new measurement.

"Cut" detaches every ES-MoE block's routed sum ``Norm(sum_k w_k E_k(x))``: no gradient reaches the
experts, the gate or the block's norm, and, since the model trained here uses the paper's exact block
(no shortcut), none reaches the layers before the last block either: what a routed branch that passes no
gradient would do. (A gate whose weights alone are detached would still learn here; test_block.py and
test_loss.py check the gate's gradient directly.) The forward pass is unchanged, so only learning
differs. A shortcut block would carry the earlier layers' gradient around the cut; with it the zoo model
barely noticed (measured 0.086 cut vs 0.101 normal at this budget), which is why the test model has
none.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

import pytest

BUDGET = {"epochs": 8, "imgsz": 64, "batch": 8, "nbs": 8, "warmup_epochs": 1}
DATA = {"train": 256, "val": 64, "imgsz": 64}  # the easy preset, like the main job's `data=shapes`
SEED = 0
LEARNS = 0.03  # mAP50 the normal run must reach (measured 0.072 for seed 0, 0.051 for seeds 1 and 2)
CUT_AT_MOST = 0.5  # the cut run must stay below this share of the normal run (measured 0.22 for seed 0)


@contextlib.contextmanager
def routed_gradient_cut():
    """Detach each ES-MoE block's routed branch (a shortcut, where there is one, still carries the input's)."""
    from yolo_master.nn import ESMoE

    forward = ESMoE.forward

    def cut(self, x):
        y = forward(self, x)
        return x + (y - x).detach() if self.add else y.detach()

    ESMoE.forward = cut
    try:
        yield
    finally:
        ESMoE.forward = forward


def paper_block_yaml(folder: Path) -> Path:
    """The zoo's n model with the paper's exact block (no shortcut): every feature past an ES-MoE
    block passes through the routed experts, so their gradient is the only way back."""
    import yaml

    from yolo_master.zoo import cfg_dir

    cfg = yaml.safe_load((cfg_dir() / "detect" / "yolo-master.yaml").read_text())
    cfg["scales"] = {"n": cfg["scales"]["n"]}
    for row in cfg["backbone"]:
        if row[2] == "ESMoE":
            row[3] = [*row[3][:3], None, 8, False]  # c2, E, K, kernels (default), reduction, shortcut
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "yolo-master-paper-block-n.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_budget(data: Path, seed: int, cut: bool, project: Path) -> float:
    """Train :func:`paper_block_yaml` on ``data`` for :data:`BUDGET`; return the final mAP50 (best.pt)."""
    from yolo_master import YOLOMaster

    model = YOLOMaster(paper_block_yaml(project))
    with routed_gradient_cut() if cut else contextlib.nullcontext():
        model.train(
            data=str(data), seed=seed, deterministic=True, workers=0, device="cpu", plots=False, val=True,
            project=str(project), name=f"{'cut' if cut else 'normal'}-{seed}", exist_ok=True, verbose=False, **BUDGET,
        )  # fmt: skip
    return float(model.trainer.metrics["metrics/mAP50(B)"])


def make_data(folder: Path) -> Path:
    from yolo_master.data.shapes import generate

    return generate(folder, seed=0, **DATA)


@pytest.mark.slow
def test_the_model_learns_and_not_without_the_routed_gradient(tmp_path):
    data = make_data(tmp_path / "shapes")
    normal = train_budget(data, seed=SEED, cut=False, project=tmp_path / "runs")
    assert normal >= LEARNS, f"mAP50 {normal:.3f} after the fixed budget: the model no longer learns"
    cut = train_budget(data, seed=SEED, cut=True, project=tmp_path / "runs")
    assert cut <= CUT_AT_MOST * normal, (
        f"cutting the routed branch's gradient barely matters (mAP50 {cut:.3f} vs {normal:.3f}): "
        "the test cannot tell a model whose experts learn from one whose experts do not"
    )


def main(argv: list[str] | None = None) -> None:
    """Measure the budget over several seeds, normal and cut, and print the table behind the thresholds."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", type=Path, default=Path("runs/learning"))
    a = ap.parse_args(argv)
    data = make_data(a.work / "shapes")
    rows = {cut: [train_budget(data, s, cut, a.work / "runs") for s in a.seeds] for cut in (False, True)}
    print(f"budget {BUDGET}, data {DATA}, seeds {a.seeds}")
    for cut, values in rows.items():
        spread = f"{statistics.mean(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"
        print(f"{'cut' if cut else 'normal':7s} mAP50 {spread}: {', '.join(f'{v:.3f}' for v in values)}")
    print("cut / normal per seed:", ", ".join(f"{c / max(n, 1e-9):.2f}" for n, c in zip(rows[False], rows[True])))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
