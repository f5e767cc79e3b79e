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
