"""MoE-tuning experiment (issue 8): upcycle a trained dense YOLO12n, or keep training it, or start over?

    python scripts/upcycle_experiment.py                 # small defaults: about 15 min on 2 CPU cores
    python scripts/upcycle_experiment.py --train 2000 --val 400 --imgsz 320 --pretrain 30 --tune 20 --device 0

Per seed, on the offline ``shapes`` benchmark, a dense ``yolo12n`` is trained ``--pretrain`` epochs
(the user's checkpoint), then, for the same total number of epochs:

- (a) dense:    that checkpoint trained ``--tune`` more epochs;
- (b) MoE-tuned: that checkpoint upcycled (``--to``, ``--experts`` x ``--split``) and trained ``--tune`` epochs;
- (c) scratch:  YOLO-Master (``--scratch``) trained ``--pretrain + --tune`` epochs from random weights;
- (d) reference: ``yolo12n`` trained ``--pretrain + --tune`` epochs in one run (how much of (c)'s lead is
  the architecture, and how much one uninterrupted schedule).

Every run uses the same hyperparameters, except that (a) and (b), which start from a trained model,
skip the warmup (``--tune-warmup 0``): Ultralytics' warmup restarts the biases at learning rate
``warmup_bias_lr=0.1``, which wipes much of what a small checkpoint learned. The upcycled checkpoint is
validated before tuning, next to
the dense one, to show it starts where the dense model was. Writes ``reports/upcycle.md`` (tables)
and ``reports/upcycle.png`` (validation mAP50-95 per epoch: mean over seeds, min-max band), plus a
micro-benchmark of one FFN against its FFN-MoE (batch 1, torch eager and ONNX Runtime).
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import yolo_master  # noqa: F401  (offline defaults, registration)

ARMS = ("dense", "moe", "scratch", "dense-scratch")
LABELS = {
    "dense": "(a) dense, continued",
    "moe": "(b) upcycled, MoE-tuned",
    "scratch": "(c) YOLO-Master, scratch",
    "dense-scratch": "(d) yolo12n, scratch (reference)",
}
FROM_SCRATCH = ("scratch", "dense-scratch")
MAP, MAP50 = "metrics/mAP50-95(B)", "metrics/mAP50(B)"


def read_results(run: Path) -> list[dict]:
    with (run / "results.csv").open() as f:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def hyper(a, seed: int) -> dict:
    return dict(
        imgsz=a.imgsz,
        batch=a.batch,
        device=a.device,
        workers=a.workers,
        optimizer="AdamW",
        lr0=a.lr0,
        warmup_epochs=1,
        seed=seed,
        deterministic=True,
        plots=False,
        verbose=False,
        exist_ok=True,
        project=str(a.work),
    )


def val_map(model, data: str, a) -> float:
    metrics = model.val(data=data, imgsz=a.imgsz, batch=a.batch, device=a.device, workers=0, plots=False, verbose=False)
    return float(metrics.box.map)


def run_seed(seed: int, data: str, a) -> dict:
    """All three arms for one seed; returns their curves, start mAPs, parameters and timings."""
    from ultralytics import YOLO

    from yolo_master import YOLOMaster
    from yolo_master.upcycle import upcycle

    h = hyper(a, seed)
    out: dict = {"seed": seed}
    t = time.perf_counter()
    YOLO("yolo12n.yaml").train(data=data, epochs=a.pretrain, name=f"s{seed}-pretrain", **h)
    dense_pt = a.work / f"s{seed}-pretrain" / "weights" / "last.pt"
    out["pretrain"] = read_results(a.work / f"s{seed}-pretrain")
    out["time_pretrain"] = time.perf_counter() - t

    moe_pt, report = upcycle(dense_pt, to=a.to, experts=a.experts, split=a.split, out=a.work / f"s{seed}-moe.pt")
    print(report)
    out["params"] = {"dense": report.dense_params, "moe": report.moe_params}
    out["start"] = {"dense": val_map(YOLO(str(dense_pt)), data, a), "moe": val_map(YOLOMaster(str(moe_pt)), data, a)}

    from yolo_master.nn.cost import active_params

    tune = {**h, "warmup_epochs": a.tune_warmup, "lr0": a.tune_lr0 or a.lr0}
    for arm, make, epochs, args in (
        ("dense", lambda: YOLO(str(dense_pt)), a.tune, tune),
        ("moe", lambda: YOLOMaster(str(moe_pt)), a.tune, tune),
        ("scratch", lambda: YOLOMaster(a.scratch), a.pretrain + a.tune, h),
        ("dense-scratch", lambda: YOLO("yolo12n.yaml"), a.pretrain + a.tune, h),
    ):
        if arm == "dense-scratch" and a.no_reference:
            continue
        t = time.perf_counter()
        model = make()
        model.train(data=data, epochs=epochs, name=f"s{seed}-{arm}", **args)
        out[arm] = read_results(a.work / f"s{seed}-{arm}")
        out[f"time_{arm}"] = time.perf_counter() - t
        out["params"].setdefault(arm, (active_params(model.model), sum(p.numel() for p in model.model.parameters())))
    return out


def curve(result: dict, arm: str) -> list[float]:
    """mAP50-95 per epoch over the whole budget (the tuned arms continue the pretraining curve)."""
    tail = [r[MAP] for r in result[arm]]
    return tail if arm in FROM_SCRATCH else [r[MAP] for r in result["pretrain"]] + tail


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def tables(results: list[dict], a) -> str:
    seeds = [r["seed"] for r in results]
    lines = [
        f"# MoE-tuning on the shapes benchmark ({len(seeds)} seeds)",
        "",
        f"yolo12n trained {a.pretrain} epochs, then {a.tune} more epochs dense (a) or upcycled "
        f"(to={a.to}, experts={a.experts}, split={a.split}) (b); YOLO-Master from scratch for "
        f"{a.pretrain + a.tune} epochs (c). shapes: {a.train} train / {a.val} val images at {a.imgsz} px, "
        f"batch {a.batch}, AdamW lr0={a.lr0} ({a.tune_lr0 or a.lr0} when tuning), warmup 1 epoch from scratch "
        f"and {a.tune_warmup} when tuning, "
        f"device {a.device}. "
        "Command: `python scripts/upcycle_experiment.py " + " ".join(a.argv) + "`",
        "",
        "| arm | params active / total (M) | final mAP50-95 | final mAP50 | best mAP50-95 | s / epoch |",
        "|---|---|---|---|---|---|",
    ]
    for arm in [arm for arm in ARMS if arm in results[0]]:
        act, tot = results[0]["params"][arm]
        final = [r[arm][-1][MAP] for r in results]
        final50 = [r[arm][-1][MAP50] for r in results]
        best = [max(curve(r, arm)) for r in results]
        epochs = a.pretrain + a.tune if arm in FROM_SCRATCH else a.tune
        speed = statistics.mean(r[f"time_{arm}"] / epochs for r in results)
        lines.append(
            f"| {LABELS[arm]} | {act / 1e6:.2f} / {tot / 1e6:.2f} | {mean_std(final)} | {mean_std(final50)} | "
            f"{mean_std(best)} | {speed:.1f} |"
        )
    lines += ["", "Per seed, final mAP50-95 (and mAP50-95 of the checkpoints before tuning):", ""]
    arms = [arm for arm in ARMS if arm in results[0]]
    lines += ["| seed | start: dense | start: upcycled | " + " | ".join(LABELS[arm] for arm in arms) + " | (b) - (a) |"]
    lines += ["|---" * (len(arms) + 4) + "|"]
    for r in results:
        final = " | ".join(f"{r[arm][-1][MAP]:.4f}" for arm in arms)
        lines.append(
            f"| {r['seed']} | {r['start']['dense']:.4f} | {r['start']['moe']:.4f} | {final} "
            f"| {r['moe'][-1][MAP] - r['dense'][-1][MAP]:+.4f} |"
        )
    diffs = [r["moe"][-1][MAP] - r["dense"][-1][MAP] for r in results]
    wins = sum(d > 0 for d in diffs)
    lines += [
        "",
        f"(b) - (a), final mAP50-95: {mean_std(diffs)} over {len(diffs)} seeds; (b) ahead in {wins} of {len(diffs)}. "
        "At this scale (a few hundred images, a few epochs, mAP of a few hundredths) a difference smaller "
        "than about two standard deviations is noise.",
    ]
    return "\n".join(lines)


def plot(results: list[dict], a, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), tight_layout=True)
    for arm in [arm for arm in ARMS if arm in results[0]]:
        curves = np.array([curve(r, arm) for r in results])
        x = np.arange(1, curves.shape[1] + 1)
        ax.plot(x, curves.mean(0), marker=".", label=LABELS[arm])
        ax.fill_between(x, curves.min(0), curves.max(0), alpha=0.2)
    ax.axvline(a.pretrain + 0.5, color="grey", ls="--", lw=0.8)
    ax.text(a.pretrain + 0.6, ax.get_ylim()[1] * 0.95, "upcycled here", fontsize=8, va="top")
    ax.set(xlabel="epoch (same total budget)", ylabel="val mAP50-95", title="MoE-tuning vs dense vs scratch")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def steady(fn) -> float:
    """Lowest of three medians (ms): a shared machine's bursts inflate single measurements."""
    from yolo_master.benchmark import latency

    return min(latency(fn, 10, 100)[0] for _ in range(3))


def bench_ffn(threads: int = 2) -> str:
    """One FFN vs its FFN-MoE at the yolo12n / 640 px shapes, batch 1: the cost of routing + gathered weights."""
    import onnxruntime as ort
    from torch import nn
    from ultralytics.nn.modules import Conv

    from yolo_master.nn.moe_ffn import FFNMoE

    torch.set_num_threads(threads)
    rows = ["| FFN (c -> H -> c, side) | torch dense | torch FFN-MoE | ratio | ORT dense | ORT FFN-MoE | ratio |"]
    rows.append("|---|---|---|---|---|---|---|")
    for c, side in ((64, 40), (128, 20)):
        dense = nn.Sequential(Conv(c, 2 * c, 1), Conv(2 * c, c, 1, act=False)).eval()
        moe = FFNMoE.from_dense(dense, 4, 2).eval()
        x = torch.randn(1, c, side, side)
        cells = []
        with torch.inference_mode():
            cells += [steady(lambda m=m, x=x: m(x)) for m in (dense, moe)]
        for m in (dense, moe):
            buffer = io.BytesIO()
            torch.onnx.export(m, x, buffer, dynamo=False, opset_version=17)
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: x.numpy()}
            cells.append(steady(lambda s=session, f=feed: s.run(None, f)))
        t_d, t_m, o_d, o_m = cells
        rows.append(
            f"| {c} -> {2 * c} -> {c}, {side}x{side} | {t_d:.3f} ms | {t_m:.3f} ms | {t_m / t_d:.2f} | "
            f"{o_d:.3f} ms | {o_m:.3f} ms | {o_m / o_d:.2f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pretrain", type=int, default=8, help="epochs of the dense model before the split")
    ap.add_argument("--tune", type=int, default=6, help="epochs after the split (dense or MoE-tuning)")
    ap.add_argument("--train", type=int, default=192, help="training images")
    ap.add_argument("--val", type=int, default=64, help="validation images")
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr0", type=float, default=0.004, help="AdamW learning rate (every run)")
    ap.add_argument("--tune-warmup", type=float, default=0.0, help="warmup epochs of (a) and (b)")
    ap.add_argument("--tune-lr0", type=float, default=None, help="learning rate of (a) and (b) (default: --lr0)")
    ap.add_argument("--no-reference", action="store_true", help="skip (d), yolo12n trained from scratch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--to", default="n.yaml", help="target whose ES-MoE blocks are inserted")
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--split", type=int, default=2)
    ap.add_argument("--scratch", default="n.yaml", help="the from-scratch YOLO-Master model")
    ap.add_argument("--work", type=Path, default=Path("runs/upcycle-experiment"))
    ap.add_argument("--out", type=Path, default=Path("reports/upcycle.md"))
    ap.add_argument("--no-bench", action="store_true", help="skip the FFN micro-benchmark")
    a = ap.parse_args(argv)
    a.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    a.work = a.work.resolve()

    from yolo_master.data.shapes import generate

    data = str(generate(a.work / "data", train=a.train, val=a.val, imgsz=a.imgsz, seed=0))
    started = time.perf_counter()
    results = [run_seed(seed, data, a) for seed in a.seeds]
    text = tables(results, a)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    png = a.out.with_suffix(".png")
    plot(results, a, png)
    text += f"\n\n![mAP50-95 per epoch]({png.name})\n"
    if not a.no_bench:
        text += "\n## Cost of one upcycled FFN (experts=4, split=2), batch 1, 2 threads\n\n" + bench_ffn() + "\n"
        text += (
            "\nActive FLOPs are the dense FFN's; the extra time is the gate (GAP + two 1x1 convs + TopK) and "
            "the per-image weight gather, and that ONNX Runtime runs MatMul with graph-valued weights "
            "instead of its prepacked 1x1 convolutions.\n"
        )
    text += f"\nTotal wall time: {(time.perf_counter() - started) / 60:.1f} min.\n"
    a.out.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
