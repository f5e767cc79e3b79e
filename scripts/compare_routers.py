"""Routers side by side on the offline shapes benchmark, at equal epochs and over several seeds (issue 7).

    python scripts/compare_routers.py                      # routers table, 3 seeds -> reports/routers.md
    python scripts/compare_routers.py --experiment table2  # GigaMoE Table 2: distributions P (shared + variable K)
    python scripts/compare_routers.py --experiment table4  # GigaMoE Table 4: no / fixed / linear / cosine bias rate
    python scripts/compare_routers.py --task classify      # the same on shapes-cls (top-1 / top-5 accuracy)
    python scripts/compare_routers.py --experiment all --epochs 30 --train 512 --imgsz 320   # a longer run

Every run trains the n scale from scratch with the same data, epochs and seed, then measures on the
validation images, one image at a time: mAP50-95 / mAP50 (top-1 / top-5 accuracy for classify;
Ultralytics' final validation), parameters,
active parameters, GFLOPs averaged over the validation images (routed experts counted as they actually
ran: variable K runs a different number per image), MaxVio over the validation set (GigaMoE eq. 8,
per layer, averaged over layers), the experts run per image and per layer, and torch-eager CPU latency
at batch 1. Finished runs are kept as JSON in the work folder: an interrupted comparison picks up
where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from pathlib import Path

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

P_GIGAMOE = [0.4, 0.3, 0.2, 0.1]
ROUTERS = {  # name -> (model: the zoo's ES-MoE, its HiMoE variant or the dense stock model, `moe:` section)
    "ES-MoE (aux loss)": ("esmoe", {}),
    "+ bias balancing": ("esmoe", {"balance": "bias"}),
    "+ shared expert": ("esmoe", {"shared": True, "balance": "bias"}),
    "variable K (shared, P=.4/.3/.2/.1)": ("esmoe", {"shared": True, "k_dist": P_GIGAMOE, "balance": "bias"}),
    "hierarchical (HiMoE)": ("himoe", {}),
    "soft mixture (all experts)": ("esmoe", {"router": "soft"}),
    "dense YOLO12n": ("dense", None),
}
TASKS = {  # task -> (zoo YAML, dense baseline, metric columns in results.csv, metric names, latency size)
    "detect": ("detect/yolo-master.yaml", "yolo12n.yaml", ("metrics/mAP50-95(B)", "metrics/mAP50(B)"),
               ("mAP50-95", "mAP50"), 640),
    "classify": ("classify/yolo-master-cls.yaml", "yolo12n-cls.yaml",
                 ("metrics/accuracy_top1", "metrics/accuracy_top5"), ("top-1", "top-5"), 224),
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


def model_yaml(source: str, moe: dict | None, folder: Path, task: str) -> str:
    """A model YAML for one router: the zoo's n scale with a ``moe:`` section (``himoe``: its ES-MoE rows
    swapped for HiMoE rows of the same width), or the dense stock model's name."""
    if source == "dense":
        return TASKS[task][1]
    cfg = yaml.safe_load((cfg_dir() / TASKS[task][0]).read_text())
    cfg["scales"] = {"n": cfg["scales"]["n"]}
    if source == "himoe":
        for row in cfg["backbone"] + cfg["head"]:
            if row[2] == "ESMoE":
                row[2], row[3] = "HiMoE", [row[3][0], *HIMOE_ARGS]
    if moe:
        cfg["moe"] = moe
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5(json.dumps(moe, sort_keys=True).encode()).hexdigest()[:8]
    path = folder / f"{task}-{source}-{digest}-n.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


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


def run_one(name: str, source: str, moe: dict | None, seed: int, a: argparse.Namespace, data: Path) -> dict:
    """Train one router for one seed and measure it; cached as JSON in the work folder."""
    key = f"{a.task}-{a.experiment_name}-{name}-{seed}".replace(" ", "_").replace("/", "_")
    cache = a.work / "results" / f"{key}.json"
    if cache.exists():
        result = json.loads(cache.read_text())
        if result["latency"] is None and a.latency and seed == a.seeds[0]:  # trained with --no-latency earlier
            net = YOLO(result["weights"]).model.float().eval()
            result["latency"] = latency_ms(net, a.latency_imgsz or TASKS[a.task][4])
            cache.write_text(json.dumps(result))
        return result
    cfg = model_yaml(source, moe, a.work / "yamls", a.task)
    model = YOLOMaster(cfg) if source != "dense" else YOLO(cfg)  # the dense baseline: stock Ultralytics, as is
    model.train(
        data=str(data), epochs=a.epochs, imgsz=a.imgsz, batch=a.batch, nbs=a.batch, seed=seed, deterministic=True,
        workers=0, device="cpu", plots=False, project=str(a.work / "runs"), name=key, exist_ok=True, verbose=False,
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
    lines = [
        f"### {title}",
        "",
        f"{a.task}, n scale, {a.epochs} epochs, {a.train} train / {a.val} val shapes images at {a.imgsz} px, "
        f"batch {a.batch} (an optimizer step per batch), seeds {', '.join(map(str, a.seeds))} (mean ± std); "
        f"GFLOPs at {a.imgsz} px averaged over the val images; latency: torch eager, CPU, batch 1, "
        f"{a.latency_imgsz or TASKS[a.task][4]} px, {os.cpu_count()} threads, first seed.",
        "",
        f"| router | {' | '.join(TASKS[a.task][3])} | params (M) | active (M) | GFLOPs (avg) | MaxVio (val) "
        "| experts / image | latency (ms) | vs first row |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        lat = runs[0]["latency"]
        experts = "/".join(f"{v:.2f}" for v in runs[0]["experts"].values()) or "-"
        lines.append(
            f"| {name} | {mean_std([r['map'] for r in runs])} | {mean_std([r['map50'] for r in runs])} "
            f"| {runs[0]['params']:.2f} | {runs[0]['active']:.2f} | {statistics.mean(r['gflops'] for r in runs):.2f} "
            f"| {mean_std([r['maxvio'] for r in runs])} | {experts} | {fmt_lat(lat) if lat else '- | -'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", choices=("routers", "table2", "table4", "all"), default="routers")
    ap.add_argument("--task", choices=tuple(TASKS), default="detect")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train", type=int, default=64)
    ap.add_argument("--val", type=int, default=32)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--latency-imgsz", type=int, help="default 640 (detect), 224 (classify)")
    ap.add_argument(
        "--no-latency", dest="latency", action="store_false",
        help="train and measure only; a later run without it times the cached models (on a quiet machine)",
    )  # fmt: skip
    ap.add_argument("--work", type=Path, default=Path("runs/compare_routers"))
    ap.add_argument("--out", type=Path, help="default reports/routers-TASK.md")
    a = ap.parse_args(argv)
    a.out = a.out or Path(f"reports/routers-{a.task}.md")
    data = generate(a.work / f"data-{a.task}", train=a.train, val=a.val, imgsz=a.imgsz, seed=0, task=a.task)
    experiments = {
        "routers": ("Routers side by side", ROUTERS),
        "table2": ("GigaMoE Table 2: expert allocation P (shared expert + bias balancing)", {
            k: ("esmoe", {"shared": True, "k_dist": p, "balance": "bias"}) for k, p in TABLE2.items()
        }),
        "table4": ("GigaMoE Table 4: load balancing (ES-MoE top-2, u_init 1e-2)", {
            k: ("esmoe", moe) for k, moe in TABLE4.items()
        }),
    }  # fmt: skip
    chosen = list(experiments) if a.experiment == "all" else [a.experiment]
    sections = []
    for exp in chosen:
        title, configs = experiments[exp]
        seeds = a.seeds if exp == "routers" else a.seeds[:1]
        a.experiment_name = exp
        results = {name: [run_one(name, src, moe, s, a, data) for s in seeds] for name, (src, moe) in configs.items()}
        sections.append(table(title, results, argparse.Namespace(**{**vars(a), "seeds": seeds})))
    text = "\n\n".join(sections)
    return emit(f"## Router comparison (scripts/compare_routers.py)\n\n{text}", a.out)


if __name__ == "__main__":
    main()
