"""Routers and the paper's ablations side by side on the offline shapes benchmark, at equal epochs and
over several seeds (issues 7 and 16).

    python scripts/compare_routers.py                      # routers table, 3 seeds -> reports/routers-detect.md
    python scripts/compare_routers.py --experiment table2  # GigaMoE Table 2: distributions P (shared + variable K)
    python scripts/compare_routers.py --experiment table4  # GigaMoE Table 4: no / fixed / linear / cosine bias rate
    python scripts/compare_routers.py --task classify      # the same on shapes-cls (top-1 / top-5 accuracy)
    python scripts/compare_routers.py --experiment all --epochs 30 --train 512 --imgsz 320   # a longer run

The YOLO-Master paper's ablations (section 4.3), each with from-scratch YOLO11n and YOLO12n rows for
reference, on the easy shapes preset (``--preset``; the main job's data) -> reports/ablations.md:

    python scripts/compare_routers.py --experiment placement  # Table 5: no ES-MoE / neck / backbone / both
    python scripts/compare_routers.py --experiment experts    # Table 6: E = 2, 4, 8 (top-2, every block)
    python scripts/compare_routers.py --experiment topk       # Table 7: K = 1, 2, 3, 4 of 4 experts
    python scripts/compare_routers.py --experiment loss       # Table 8: DFL on / off x MoE weight
    python scripts/compare_routers.py --experiment ablations  # the four, sharing identical runs

Each writes reports/ablations-EXPERIMENT.md (the four together: reports/ablations.md).

Every run trains the n scale from scratch with the same data, epochs and seed, then measures on the
validation images, one image at a time: mAP50-95 / mAP50 (top-1 / top-5 accuracy for classify;
Ultralytics' final validation), parameters,
active parameters, GFLOPs averaged over the validation images (routed experts counted as they actually
ran: variable K runs a different number per image), MaxVio over the validation set (GigaMoE eq. 8,
per layer, averaged over layers), the experts run per image and per layer, and torch-eager CPU latency
at batch 1. Finished runs are kept as JSON in the work folder, named by what was trained (model,
``moe:`` section, E / K, loss gains, seed, data and budget), so an interrupted comparison picks up where
it stopped and a configuration that appears in two tables (top-2 of 4 in Tables 6 and 7) trains once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
import yaml
from report import emit
from ultralytics import YOLO

from yolo_master import YOLOMaster
from yolo_master.data.shapes import generate
from yolo_master.engine.routing_stats import max_violation
from yolo_master.nn import named_moe_layers
from yolo_master.nn.cost import active_params, conv_expert_blocks, routed_macs, routed_per_image
from yolo_master.zoo import cfg_dir


class Config(NamedTuple):
    """One row: the model source, its ``moe:`` section, (E, K) for every ES-MoE block, training overrides.

    ``source``: ``esmoe`` (the zoo's model), ``himoe`` (its HiMoE variant), a placement variant of the
    zoo (``nomoe``, ``neck``, ``full``) or a stock Ultralytics model (``yolo11n``, ``yolo12n``).
    """

    source: str
    moe: dict | None = None
    experts: tuple[int, int] | None = None
    hyp: dict | None = None


P_GIGAMOE = [0.4, 0.3, 0.2, 0.1]
STOCK = {"yolo11n": "yolo11n", "yolo12n": "yolo12n", "dense": "yolo12n"}  # source -> stock model (by task)
PLACEMENT = {"nomoe": "detect/yolo-master-nomoe.yaml", "neck": "detect/yolo-master-neck.yaml",
             "full": "detect/yolo-master-full.yaml"}  # fmt: skip
ROUTERS = {
    "ES-MoE (aux loss)": Config("esmoe", {}),
    "+ bias balancing": Config("esmoe", {"balance": "bias"}),
    "+ shared expert": Config("esmoe", {"shared": True, "balance": "bias"}),
    "variable K (shared, P=.4/.3/.2/.1)": Config("esmoe", {"shared": True, "k_dist": P_GIGAMOE, "balance": "bias"}),
    "hierarchical (HiMoE)": Config("himoe", {}),
    "soft mixture (all experts)": Config("esmoe", {"router": "soft"}),
    "dense YOLO12n": Config("dense"),
}
REFERENCES = {"YOLO11n (from scratch)": Config("yolo11n"), "YOLO12n (from scratch)": Config("yolo12n")}
ABLATIONS = {  # the paper's section 4.3: experiment -> (title, rows); the references end every table
    "placement": ("Table 5: ES-MoE placement", {
        "baseline (no ES-MoE)": Config("nomoe"),
        "neck only": Config("neck"),
        "backbone only (our default)": Config("esmoe"),
        "both (full)": Config("full"),
    }),
    "experts": ("Table 6: number of experts (top-2, every ES-MoE block)", {
        f"E = {e}": Config("esmoe", experts=(e, 2)) for e in (2, 4, 8)
    }),
    "topk": ("Table 7: top-K with 4 experts (every ES-MoE block)", {
        f"K = {k} ({100 - 25 * k}% sparse)": Config("esmoe", experts=(4, k)) for k in (1, 2, 3, 4)
    }),
    "loss": ("Table 8: DFL and MoE loss configurations", {
        "config 1: DFL + MoE 0.5 (our default)": Config("esmoe"),
        "config 2: no DFL, MoE 0.5": Config("esmoe", hyp={"dfl": 0.0}),
        "config 3: DFL + MoE 1.0": Config("esmoe", hyp={"moe": 1.0}),
        "config 4: DFL + MoE 1.5": Config("esmoe", hyp={"moe": 1.5}),
        "config 5: no DFL, MoE 1.5 (paper's choice)": Config("esmoe", hyp={"dfl": 0.0, "moe": 1.5}),
    }),
}  # fmt: skip
TASKS = {  # task -> (zoo YAML, dense baseline, metric columns in results.csv, metric names, latency size)
    "detect": ("detect/yolo-master.yaml", "yolo12n.yaml", ("metrics/mAP50-95(B)", "metrics/mAP50(B)"),
               ("mAP50-95", "mAP50"), 640),
    "classify": ("classify/yolo-master-cls.yaml", "yolo12n-cls.yaml",
                 ("metrics/accuracy_top1", "metrics/accuracy_top5"), ("top-1", "top-5"), 224),
}  # fmt: skip
PAPER = {  # the paper's COCO numbers (section 4.3) beside our rows: (what they are, row -> value)
    "placement": ("Table 5, mAP (%)", {"baseline (no ES-MoE)": "60.8", "neck only": "58.2",
                                        "backbone only (our default)": "62.1", "both (full)": "54.9"}),
    "experts": ("Table 6, mAP50 / mAP (%)", {"E = 2": "81.4 / 61.0", "E = 4": "82.2 / 62.3", "E = 8": "82.0 / 62.0"}),
    "topk": ("Table 7, mAP50 / mAP (%)", {"K = 1 (75% sparse)": "81.1 / 61.3", "K = 2 (50% sparse)": "81.9 / 61.8",
                                          "K = 3 (25% sparse)": "81.6 / 61.8", "K = 4 (0% sparse)": "81.6 / 61.9"}),
    "loss": ("Table 8, mAP (%)", {"config 1: DFL + MoE 0.5 (our default)": "61.9", "config 2: no DFL, MoE 0.5": "61.9",
                                  "config 3: DFL + MoE 1.0": "61.9", "config 4: DFL + MoE 1.5": "61.4",
                                  "config 5: no DFL, MoE 1.5 (paper's choice)": "62.2"}),
}  # fmt: skip
HIMOE_ARGS = [8, 2, 4, 2]  # N_e, K, N_s, K_s: the HiMoE defaults
TABLE2 = {  # GigaMoE Table 2: (p0, p1, p2, p3) = share of images given 0..3 routed experts, shared expert always
    "shared only (1,0,0,0)": [1.0, 0.0, 0.0, 0.0],
    "shared + 1 (0,1,0,0)": [0.0, 1.0, 0.0, 0.0],
    "shared + 2 (0,0,1,0)": [0.0, 0.0, 1.0, 0.0],
    "shared + 3 (0,0,0,1)": [0.0, 0.0, 0.0, 1.0],
    "uniform (.25,.25,.25,.25)": [0.25, 0.25, 0.25, 0.25],
    "pyramid (.1,.2,.3,.4)": [0.1, 0.2, 0.3, 0.4],
    "inverted pyramid (.4,.3,.2,.1)": P_GIGAMOE,
}
TABLE4 = {  # GigaMoE Table 4: the bias update rate (u_init = 1e-2)
    "no balancing": {"balance": "loss"},
    "fixed rate": {"balance": "bias", "bias_decay": "constant"},
    "linear decay": {"balance": "bias", "bias_decay": "linear"},
    "cosine decay": {"balance": "bias", "bias_decay": "cosine"},
}


def model_yaml(config: Config, folder: Path, task: str) -> str:
    """A model YAML for one row: the zoo's n scale (or a placement variant) with a ``moe:`` section and
    (E, K) set on every ES-MoE row (``himoe``: ES-MoE rows swapped for HiMoE rows of the same width),
    or a stock model's name."""
    if config.source in STOCK:
        return STOCK[config.source] + TASKS[task][1].removeprefix("yolo12n")
    cfg = yaml.safe_load((cfg_dir() / PLACEMENT.get(config.source, TASKS[task][0])).read_text())
    cfg["scales"] = {"n": cfg["scales"]["n"]}
    for row in cfg["backbone"] + cfg["head"]:
        if row[2] == "ESMoE" and config.source == "himoe":
            row[2], row[3] = "HiMoE", [row[3][0], *HIMOE_ARGS]
        elif row[2] == "ESMoE" and config.experts:
            row[3] = [row[3][0], *config.experts]
    if config.moe:
        cfg["moe"] = config.moe
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task}-{config.source}-{digest(config.moe, config.experts)}-n.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def digest(*parts) -> str:
    """A short stable name for JSON-able ``parts``."""
    return hashlib.md5(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:8]


def val_images(data: Path, imgsz: int) -> list[torch.Tensor]:
    """The validation images, resized to ``imgsz`` squares, as ``(1, 3, imgsz, imgsz)`` tensors in [0, 1]."""
    files = sorted((data / "val").glob("*/*")) if data.is_dir() else sorted((data.parent / "images" / "val").glob("*"))
    out = []
    for path in files:
        im = cv2.resize(cv2.imread(str(path))[:, :, ::-1], (imgsz, imgsz))
        out.append(torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].float() / 255)
    return out


def measure_routing(net: torch.nn.Module, images: list[torch.Tensor], imgsz: int) -> dict:
    """Experts run per image and MaxVio per layer over ``images`` (batch 1, eval), and the GFLOPs that
    follow from the experts that actually ran."""
    from ultralytics.utils.torch_utils import get_flops

    layers = named_moe_layers(net)
    counts = {name: 0 for name in layers}
    runs = {name: 0.0 for name in layers}
    with torch.inference_mode():
        for im in images:
            net(im)
            for name, layer in layers.items():
                r = layer.last_routing
                ran = r.indices.shape[1] if hasattr(layer, "groups") else int((r.weights != 0).sum())
                runs[name] += ran
                counts[name] = counts[name] + (r.dense[0] != 0).float()
    n = max(len(images), 1)
    experts = {name: runs[name] / n for name in layers}
    maxvio = [max_violation(c.tolist()) for c in counts.values()]
    return {
        "gflops": get_flops(net, imgsz) + measured_minus_expected_gflops(net, experts, imgsz),
        "maxvio": statistics.mean(maxvio) if maxvio else float("nan"),
        "experts": experts,
    }


def measured_minus_expected_gflops(net: torch.nn.Module, experts: dict[str, float], imgsz: int) -> float:
    """GFLOPs to add to the configuration's count (expected experts per image) for the experts that ran."""
    sizes = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o: sizes.__setitem__(m, i[0].shape[2:])) for m in conv_expert_blocks(net)
    ]
    with torch.inference_mode():
        net(torch.zeros(1, 3, imgsz, imgsz))
    for h in hooks:
        h.remove()
    extra = 0.0
    for name, layer in named_moe_layers(net).items():
        if layer in sizes:
            per_expert = routed_macs(layer, 1, *sizes[layer]) / routed_per_image(layer)
            extra += (experts[name] - routed_per_image(layer)) * per_expert
    return 2 * extra / 1e9


def latency_ms(net: torch.nn.Module, imgsz: int, runs: int = 20) -> float:
    """Median torch-eager CPU latency of one image (warm-up excluded)."""
    x = torch.rand(1, 3, imgsz, imgsz)
    torch.set_num_threads(os.cpu_count() or 1)  # Ultralytics sets OMP_NUM_THREADS=1 for its loaders
    torch.use_deterministic_algorithms(False)  # training with deterministic=True left the slow kernels on
    times = []
    with torch.inference_mode():
        for i in range(runs + 3):
            t = time.perf_counter()
            net(x)
            if i >= 3:
                times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def run_one(name: str, config: Config, seed: int, a: argparse.Namespace, data: Path) -> dict:
    """Train one row for one seed and measure it; cached as JSON in the work folder."""
    budget = [a.task, a.preset, a.train, a.val, a.imgsz, a.epochs, a.batch]
    key = f"{a.task}-{config.source}-{digest(config._asdict(), budget)}-s{seed}"
    cache = a.work / "results" / f"{key}.json"
    if cache.exists():
        result = json.loads(cache.read_text())
        if result["latency"] is None and a.latency and seed == a.seeds[0]:  # trained with --no-latency earlier
            net = YOLO(result["weights"]).model.float().eval()
            result["latency"] = latency_ms(net, a.latency_imgsz or TASKS[a.task][4])
            cache.write_text(json.dumps(result))
        return {**result, "router": name}
    cfg = model_yaml(config, a.work / "yamls", a.task)
    model = YOLO(cfg) if config.source in STOCK else YOLOMaster(cfg)  # stock baselines: Ultralytics, as is
    model.train(
        data=str(data), epochs=a.epochs, imgsz=a.imgsz, batch=a.batch, nbs=a.batch, seed=seed, deterministic=True,
        workers=0, device="cpu", plots=False, project=str(a.work / "runs"), name=key, exist_ok=True, verbose=False,
        **(config.hyp or {}),
    )  # fmt: skip
    save_dir = Path(model.trainer.save_dir)
    last = [r for r in (save_dir / "results.csv").read_text().splitlines() if r.strip()]
    header, final = last[0].split(","), last[-1].split(",")
    row = {k.strip(): float(v) for k, v in zip(header, final)}
    net = YOLO(save_dir / "weights" / "last.pt").model.float().eval()
    result = {
        "router": name,
        "seed": seed,
        "map": row.get(TASKS[a.task][2][0], float("nan")),
        "map50": row.get(TASKS[a.task][2][1], float("nan")),
        "curve": [float(r.split(",")[header.index(TASKS[a.task][2][1])]) for r in last[1:]],
        "params": sum(p.numel() for p in net.parameters()) / 1e6,
        "active": active_params(net) / 1e6,
        **measure_routing(net, val_images(data, a.imgsz), a.imgsz),
        "weights": str(save_dir / "weights" / "last.pt"),
        "latency": latency_ms(net, a.latency_imgsz or TASKS[a.task][4]) if a.latency and seed == a.seeds[0] else None,
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result))
    return result


def mean_std(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(title: str, results: dict[str, list[dict]], a: argparse.Namespace) -> str:
    base = next(iter(results.values()))[0]["latency"]
    fmt_lat = (lambda v: f"{v:.1f} | {v / base:.2f}x") if base else (lambda v: "- | -")
    paper = PAPER.get(a.experiment_name)
    lines = [
        f"### {title}",
        "",
        f"{a.task}, n scale, {a.epochs} epochs, {a.train} train / {a.val} val shapes ({a.preset}) images at "
        f"{a.imgsz} px, batch {a.batch} (an optimizer step per batch), seeds {', '.join(map(str, a.seeds))} "
        f"(mean ± std); GFLOPs at {a.imgsz} px averaged over the val images; latency: torch eager, CPU, batch 1, "
        f"{a.latency_imgsz or TASKS[a.task][4]} px, {os.cpu_count()} threads, first seed."
        + (f" Paper: {paper[0]}." if paper else ""),
        "",
        f"| configuration | {' | '.join(TASKS[a.task][3])} | params (M) | active (M) | GFLOPs (avg) | MaxVio (val) "
        "| experts / image | latency (ms) | vs first row |" + (" paper |" if paper else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if paper else ""),
    ]
    for name, runs in results.items():
        lat = runs[0]["latency"]
        experts = "/".join(f"{v:.2f}" for v in runs[0]["experts"].values()) or "-"
        lines.append(
            f"| {name} | {mean_std([r['map'] for r in runs])} | {mean_std([r['map50'] for r in runs])} "
            f"| {runs[0]['params']:.2f} | {runs[0]['active']:.2f} | {statistics.mean(r['gflops'] for r in runs):.2f} "
            f"| {mean_std([r['maxvio'] for r in runs])} | {experts} | {fmt_lat(lat) if lat else '- | -'} |"
            + (f" {paper[1].get(name, '-')} |" if paper else "")
        )
    return "\n".join(lines)


def experiments(a: argparse.Namespace) -> dict[str, tuple[str, dict[str, Config], list[int]]]:
    """Every experiment: name -> (title, rows, seeds)."""
    table2 = {k: Config("esmoe", {"shared": True, "k_dist": p, "balance": "bias"}) for k, p in TABLE2.items()}
    found = {
        "routers": ("Routers side by side", ROUTERS, a.seeds),
        "table2": ("GigaMoE Table 2: expert allocation P (shared expert + bias balancing)", table2, a.seeds[:1]),
        "table4": ("GigaMoE Table 4: load balancing (ES-MoE top-2, u_init 1e-2)",
                   {k: Config("esmoe", moe) for k, moe in TABLE4.items()}, a.seeds[:1]),
    }  # fmt: skip
    for name, (title, rows) in ABLATIONS.items():
        found[name] = (f"YOLO-Master {title}", {**rows, **REFERENCES}, a.seeds)
    return found


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    groups = {"all": ["routers", "table2", "table4"], "ablations": list(ABLATIONS)}
    ap.add_argument("--experiment", choices=("routers", "table2", "table4", *ABLATIONS, *groups), default="routers")
    ap.add_argument("--task", choices=tuple(TASKS), default="detect")
    ap.add_argument("--epochs", type=int, help="default 5 (routers), 10 (ablations)")
    ap.add_argument("--train", type=int, help="default 64 (routers), 256 (ablations)")
    ap.add_argument("--val", type=int, help="default 32 (routers), 64 (ablations)")
    ap.add_argument("--imgsz", type=int, help="default 160 (routers), 96 (ablations)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--preset", choices=("easy", "hard"), help="shapes preset: hard (routers), easy (ablations)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--latency-imgsz", type=int, help="default 640 (detect), 224 (classify)")
    ap.add_argument(
        "--no-latency", dest="latency", action="store_false",
        help="train and measure only; a later run without it times the cached models (on a quiet machine)",
    )  # fmt: skip
    ap.add_argument("--work", type=Path, default=Path("runs/compare_routers"))
    ap.add_argument("--out", type=Path, help="default reports/routers-TASK.md, reports/ablations[-EXPERIMENT].md")
    a = ap.parse_args(argv)
    chosen = groups.get(a.experiment, [a.experiment])
    ablation = chosen[0] in ABLATIONS
    if ablation and a.task != "detect":
        ap.error("the paper's ablations are detection experiments: use --task detect")
    defaults = (10, 256, 64, 96, "easy") if ablation else (5, 64, 32, 160, "hard")
    for field, value in zip(("epochs", "train", "val", "imgsz", "preset"), defaults):
        setattr(a, field, getattr(a, field) or value)
    a.out = a.out or Path(
        (f"reports/ablations-{a.experiment}.md" if a.experiment in ABLATIONS else "reports/ablations.md")
        if ablation
        else f"reports/routers-{a.task}.md"
    )
    data = generate(
        a.work / f"data-{a.task}-{a.preset}", train=a.train, val=a.val, imgsz=a.imgsz, seed=0, task=a.task,
        preset=a.preset,
    )  # fmt: skip
    found = experiments(a)
    sections = []
    for exp in chosen:
        title, configs, seeds = found[exp]
        a.experiment_name = exp
        results = {name: [run_one(name, config, s, a, data) for s in seeds] for name, config in configs.items()}
        sections.append(table(title, results, argparse.Namespace(**{**vars(a), "seeds": seeds})))
    text = "\n\n".join(sections)
    heading = "YOLO-Master ablations" if ablation else "Router comparison"
    return emit(f"## {heading} (scripts/compare_routers.py)\n\n{text}", a.out)


if __name__ == "__main__":
    main()
