"""Segment, classify, pose and OBB: zoo, training with the MoE loss, routing statistics and pictures."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import real_batch, run_cli

from yolo_master import ESMoE, YOLOMaster
from yolo_master.data.shapes import generate
from yolo_master.engine.routing_stats import RoutingStats, collapse_warnings
from yolo_master.models import YOLOMasterPoseModel
from yolo_master.routes import routes

TASKS = {"segment": "seg", "pose": "pose", "obb": "obb", "classify": "cls"}


@pytest.mark.parametrize("scale", "nsmlx")
@pytest.mark.parametrize("task,prefix", TASKS.items())
def test_every_scale_builds_with_the_shared_moe_backbone(task, prefix, scale):
    model = YOLOMaster(f"{prefix}-{scale}.yaml")
    assert model.task == task  # inferred from the YAML's head, as Ultralytics does
    detect = YOLOMaster(f"{scale}.yaml").model
    backbone = len(detect.yaml["backbone"])
    assert model.model.yaml["backbone"] == detect.yaml["backbone"]
    for ours, theirs in zip(model.model.model[:backbone], detect.model[:backbone]):
        assert type(ours) is type(theirs) and sum(p.numel() for p in ours.parameters()) == sum(
            p.numel() for p in theirs.parameters()
        )
    assert sum(isinstance(m, ESMoE) for m in model.model.modules()) == 3


@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    return {task: generate(root / task, train=16, val=6, imgsz=96, seed=2, task=task) for task in TASKS}


@pytest.mark.parametrize("task", ["detect", *TASKS])
def test_moe_term_in_every_task_loss_reaches_the_gates(task, task_data, shapes_yaml):
    from ultralytics.cfg import get_cfg

    name = "n.yaml" if task == "detect" else f"{TASKS[task]}-n.yaml"
    data_path = shapes_yaml if task == "detect" else task_data[task]
    batch = real_batch(task, data_path)
    if task == "pose":  # the data's 3 keypoints replace the zoo's 17, as the pose trainer does
        model = YOLOMasterPoseModel(name, nc=5, data_kpt_shape=(3, 3), verbose=False).train()
    else:
        model = YOLOMaster(name).model.train()
    model.args = get_cfg(overrides={"task": task})
    model.args.moe = 1.0
    batch["img"] = batch["img"].float() / (255 if batch["img"].dtype == torch.uint8 else 1)
    loss, items = model.loss(batch)
    assert items["moe_loss"] > 0
    loss.sum().backward()
    gates = [m.router.logits.weight.grad for m in model.modules() if isinstance(m, ESMoE)]
    assert len(gates) == 3 and all(g is not None and g.abs().sum() > 0 for g in gates)


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_train_val_predict_reload_each_task(task, task_data, tmp_path):
    prefix = TASKS[task]
    imgsz = "64"
    proc = run_cli(
        "train",
        f"model={prefix}-n.yaml",
        f"data={task_data[task]}",
        "epochs=1",
        f"imgsz={imgsz}",
        "batch=8",
        "workers=0",
        "device=cpu",
        f"project={tmp_path}",
        "name=train",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = tmp_path / "train"
    row = {k.strip(): v for k, v in list(csv.DictReader((run / "results.csv").open()))[-1].items()}
    assert float(row["train/moe_loss"]) > 0, row
    assert (run / "routing.csv").is_file() and (run / "routing.png").is_file()
    best = run / "weights" / "best.pt"
    proc = run_cli(
        "val",
        f"model={best}",
        f"data={task_data[task]}",
        f"imgsz={imgsz}",
        f"project={tmp_path}",
        "name=val",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = (task_data[task] / "val" / "circle") if task == "classify" else (task_data[task].parent / "images" / "val")
    proc = run_cli(
        "predict",
        f"model={best}",
        f"source={images}",
        f"imgsz={imgsz}",
        f"project={tmp_path}",
        "name=pred",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "pred").glob("*.jpg"))) == len(list(images.glob("*.jpg")))
    attribute = {"segment": "masks", "pose": "keypoints", "obb": "obb", "classify": "probs"}[task]
    image = sorted(images.glob("*.jpg"))[0]
    code = (
        "from yolo_master import YOLOMaster\n"
        f"m = YOLOMaster(r'{best}')\n"
        f"assert m.task == '{task}', m.task\n"
        f"r = m.predict(r'{image}', imgsz={imgsz}, conf=0.0001, verbose=False)[0]\n"
        f"assert getattr(r, '{attribute}') is not None, 'no {attribute} in the result'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _bias_gates(model, experts: tuple[int, ...]) -> None:
    """Make every ES-MoE layer choose ``experts`` for any input (gate weights zeroed, bias set)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ESMoE):
                m.router.logits.weight.zero_()
                m.router.logits.bias.fill_(-5.0)
                for rank, e in enumerate(experts):
                    m.router.logits.bias[e] = 5.0 - rank


def test_collapsed_router_warns_and_balanced_router_does_not():
    model = YOLOMaster("n.yaml").model.train()
    stats = RoutingStats()
    _bias_gates(model, (0, 1))
    model(torch.rand(4, 3, 64, 64))
    stats.add(model)
    loads = {layer: load for layer, (_, load) in stats.summary().items()}
    warnings = collapse_warnings(loads)
    assert len(warnings) == 3 and all("starved" in w for w in warnings)
    balanced = {"3": [0.26, 0.24, 0.25, 0.25], "6": [0.33, 0.34, 0.33]}
    assert collapse_warnings(balanced) == []
    assert "collapsed: expert 2 takes 95%" in collapse_warnings({"9": [0.03, 0.02, 0.95]})[0]


def test_routing_csv_and_plot_are_written_each_epoch(tmp_path, caplog):
    model = YOLOMaster("n.yaml").model.train()
    _bias_gates(model, (2, 1))
    stats = RoutingStats()
    trainer = SimpleNamespace(save_dir=tmp_path, epoch=0, args=SimpleNamespace(plots=True), model=model)
    for epoch in range(2):
        trainer.epoch = epoch
        stats.reset()
        model(torch.rand(2, 3, 64, 64))
        stats.update(trainer)
        with caplog.at_level(logging.WARNING, logger="ultralytics"):
            stats.write(trainer)
    rows = list(csv.DictReader((tmp_path / "routing.csv").open()))
    assert len(rows) == 2 * (4 + 3 + 3)
    first = [r for r in rows if r["epoch"] == "1" and r["layer"] == "3"]
    assert [float(r["selected"]) for r in first] == [0.0, 1.0, 1.0, 0.0]
    assert float(first[2]["load"]) > float(first[1]["load"])  # expert 2 ranks first
    assert (tmp_path / "routing.png").stat().st_size > 0
    assert "starved" in caplog.text


def test_routes_picture_depends_on_the_routing(tmp_path):
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.jpg"), np.random.default_rng(i).integers(0, 255, (80, 80, 3), np.uint8))
    model = YOLOMaster("n.yaml")
    pictures = []
    for name, experts in (("a", (0, 1)), ("b", (2, 1)), ("c", (0, 1))):
        _bias_gates(model.model, experts)
        png = routes(model, images, imgsz=64, project=str(tmp_path), name=name)
        rows = list(csv.reader(png.with_suffix(".csv").open()))
        assert len(rows) == 4 and rows[0][1] == "layer3_expert0"
        pictures.append(png.read_bytes())
    assert pictures[0] != pictures[1] and pictures[0] == pictures[2]


def test_routes_cli(tmp_path, shapes_yaml):
    proc = run_cli(
        "routes",
        "model=n.yaml",
        f"source={shapes_yaml.parent / 'images' / 'val'}",
        "imgsz=64",
        f"project={tmp_path}",
        "name=r",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "r" / "routes.png").is_file()
    proc = run_cli("routes", "model=n.yaml", f"source={tmp_path / 'nothing'}", cwd=tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
