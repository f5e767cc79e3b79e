"""A training run killed mid-epoch (Ctrl-C or SIGKILL) resumes from its last checkpoint and finishes."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from yolo_master.data.shapes import generate

pytestmark = pytest.mark.slow
KILLER = [sys.executable, str(Path(__file__).with_name("kill_at.py"))]


@pytest.mark.parametrize("signal_name,status", [("SIGINT", 130), ("SIGKILL", -9)])
def test_killed_run_resumes_from_last_checkpoint(tmp_path, signal_name, status):
    data = generate(tmp_path / "data", train=24, val=6, imgsz=64, seed=0)
    args = [
        "train",
        "model=n.yaml",
        f"data={data}",
        "epochs=3",
        "imgsz=64",
        "batch=8",
        "workers=0",
        "seed=0",
        "deterministic=True",
        "device=cpu",
        "plots=False",
        f"project={tmp_path}",
        "name=run",
    ]
    proc = run_cli(signal_name, "1", "2", *args, cwd=tmp_path, wrapper=KILLER)  # 2 batches into epoch 2
    assert proc.returncode == status, proc.stderr[-3000:]
    if signal_name == "SIGINT":
        assert "interrupted" in proc.stderr and "Traceback" not in proc.stderr
    last = tmp_path / "run" / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=False)  # complete and loadable: written atomically
    assert ckpt["epoch"] == 0  # the end of epoch 1
    assert not list(last.parent.glob(".*.tmp"))
    epochs_logged = {row["epoch"] for row in csv.DictReader((tmp_path / "run" / "routing.csv").open())}
    assert epochs_logged == {"1"}

    proc = run_cli("train", "resume=True", f"model={last}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resuming training" in proc.stdout + proc.stderr
    results = list(csv.DictReader((tmp_path / "run" / "results.csv").open()))
    assert [int(float(r["epoch"])) for r in results] == [1, 2, 3]
    routing = list(csv.DictReader((tmp_path / "run" / "routing.csv").open()))
    assert sorted({r["epoch"] for r in routing}) == ["1", "2", "3"]
    assert len(routing) == 3 * (4 + 3 + 3)  # each epoch once: the interrupted epoch was not logged twice
