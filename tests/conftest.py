"""Shared fixtures: a tiny generated dataset, and a way to run the CLI exactly as a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import yolo_master  # noqa: F401  (offline defaults + registration before anything else imports ultralytics)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own folder: exports and runs/ never land in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def shapes_yaml(tmp_path_factory) -> Path:
    """16 training and 8 validation images at 160 px."""
    from yolo_master.data.shapes import generate

    return generate(tmp_path_factory.mktemp("data") / "shapes", train=16, val=8, imgsz=160, seed=0)


def cli_command() -> list[str]:
    """The installed ``yolo-master`` script next to this interpreter, else ``python -m yolo_master.cli``."""
    script = Path(sys.executable).with_name("yolo-master")
    return [str(script)] if script.exists() else [sys.executable, "-m", "yolo_master.cli"]


def run_cli(*args: str, cwd: Path, timeout: int = 600, wrapper: list[str] | None = None, env: dict | None = None):
    """Run the CLI in a fresh process; returns the CompletedProcess (text mode)."""
    env = {**os.environ, "YOLO_VERBOSE": "true", "PYTHONUNBUFFERED": "1", **(env or {})}
    env.pop("YOLO_MASTER_DEBUG", None)
    cmd = (wrapper or cli_command()) + list(args)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def real_batch(task, data_path):
    """Four samples as Ultralytics' own dataloader collates them for ``task``."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.dataset import ClassificationDataset
    from ultralytics.data.utils import check_cls_dataset, check_det_dataset

    cfg = get_cfg(overrides={"task": task, "imgsz": 64, "mosaic": 0.0})
    if task == "classify":
        data = check_cls_dataset(str(data_path))
        ds = ClassificationDataset(str(data["train"]), args=cfg, augment=False, prefix="")
        items = [ds[i] for i in range(4)]
        return {"img": torch.stack([x["img"] for x in items]), "cls": torch.tensor([x["cls"] for x in items])}
    data = check_det_dataset(str(data_path))
    ds = build_yolo_dataset(cfg, data["train"], 4, data, mode="val")
    return ds.collate_fn([ds[i] for i in range(4)])


def images(n: int, c: int = 8, size: int = 6) -> torch.Tensor:
    """Inputs of varied complexity: a random contrast per image spreads routes and variance scores."""
    return torch.randn(n, c, size, size) * torch.rand(n, 1, 1, 1).mul(3).add(0.1) + torch.randn(n, c, 1, 1)


def each_route_in_turn(model):
    """Force every ES-MoE layer of ``model`` (a ``YOLOMaster``) through each of its K-of-E expert
    combinations in turn (a layer with fewer combinations cycles); yields ``(blocks, chosen)`` per round,
    ``chosen`` holding each block's experts in the order its router ranks them."""
    import itertools

    from yolo_master import ESMoE
    from yolo_master.export.parity import force_route

    blocks = [m for m in model.model.modules() if isinstance(m, ESMoE)]
    combos = [list(itertools.combinations(range(b.num_experts), b.top_k)) for b in blocks]
    for round_ in range(max(map(len, combos))):
        chosen = [list(c[round_ % len(c)]) for c in combos]
        for b, c in zip(blocks, chosen):
            force_route(b, tuple(c), input_weight=0.01)
        yield blocks, chosen


def randomize_stats(block):
    """Non-trivial BatchNorm statistics and affine terms, so that a reference really exercises them."""
    with torch.no_grad():
        block.experts.bn_running_mean.normal_(0, 0.5)
        block.experts.bn_running_var.uniform_(0.5, 2.0)
        block.experts.bn_weight.normal_(1, 0.2)
        block.experts.bn_bias.normal_(0, 0.2)
        block.norm.running_mean.normal_(0, 0.5)
        block.norm.running_var.uniform_(0.5, 2.0)
    return block


def loop_reference(block, x: torch.Tensor) -> torch.Tensor:
    """An ES-MoE block in eval mode, the obvious way: per image, each expert with a non-zero routing
    weight as its own depthwise / BN / SiLU / pointwise, then the shared expert(s) with weight 1."""
    import torch.nn.functional as F

    routing = block.router(x)
    bank, e_routed = block.experts, block.num_experts
    outs = []
    for b in range(x.shape[0]):
        acc = torch.zeros(1, bank.c2, *x.shape[2:])
        slots = list(zip(routing.indices[b].tolist(), routing.weights[b].tolist()))
        slots += [(e, 1.0) for e in range(e_routed, bank.num_experts)]  # shared experts, always on
        for e, w in slots:
            if w == 0:
                continue
            k = bank.kernel_sizes[e]
            dw = bank.dw_weight[:, bank.offsets[e] : bank.offsets[e + 1]].reshape(bank.c1, 1, k, k)
            h = F.conv2d(x[b : b + 1], dw, padding=k // 2, groups=bank.c1)
            mean, var = bank.bn_running_mean[e].view(1, -1, 1, 1), bank.bn_running_var[e].view(1, -1, 1, 1)
            h = (h - mean) / torch.sqrt(var + bank.bn_eps)
            h = F.silu(h * bank.bn_weight[e].view(1, -1, 1, 1) + bank.bn_bias[e].view(1, -1, 1, 1))
            acc = acc + w * F.conv2d(h, bank.pw_weight[e][:, :, None, None])
        outs.append(acc)
    y = block.norm(torch.cat(outs))
    return x + y if block.add else y


def build_detect(cfg: dict, verbose: bool = False):
    """A YOLO-Master detection model built from a model dict, as the trainer builds one."""
    from yolo_master.models import YOLOMasterDetectionModel

    return YOLOMasterDetectionModel(cfg, verbose=verbose)


def zoo_dict(name: str = "n.yaml", **moe) -> dict:
    """The zoo model dict for ``name``, with a ``moe:`` section when options are given."""
    from yolo_master.zoo import load_model_yaml

    d = load_model_yaml(name)
    if moe:
        d["moe"] = moe
    return d
