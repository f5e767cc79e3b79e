"""Nothing in train / val / predict / export reaches the network (every connection attempt fails the test)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import run_cli

GUARD = [sys.executable, str(Path(__file__).with_name("no_network.py"))]


def test_guard_catches_a_real_attempt(tmp_path):
    proc = run_cli("--self-test", cwd=tmp_path, wrapper=GUARD)
    assert proc.returncode == 3 and "NETWORK ACCESS ATTEMPTED" in proc.stderr


@pytest.mark.slow
def test_every_mode_stays_off_the_network(tmp_path, shapes_yaml):
    common = ["imgsz=64", "device=cpu", "workers=0"]
    proc = run_cli(
        "train",
        "model=n.yaml",
        f"data={shapes_yaml}",
        "epochs=1",
        "batch=8",
        f"project={tmp_path}",
        "name=run",
        "plots=True",
        *common,
        cwd=tmp_path,
        wrapper=GUARD,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = tmp_path / "run" / "weights" / "best.pt"
    assert best.is_file()
    for args in (
        ["val", f"model={best}", f"data={shapes_yaml}", f"project={tmp_path}", "name=val", *common],
        [
            "predict",
            f"model={best}",
            f"source={shapes_yaml.parent / 'images' / 'val'}",
            f"project={tmp_path}",
            "name=pred",
            *common,
        ],
        ["export", f"model={best}", "format=onnx", "imgsz=64"],
        ["benchmark", f"model={best}", "compare=yolo12n.yaml", "imgsz=64", "runs=1", "warmup=0", f"project={tmp_path}"],
        [
            "routes",
            f"model={best}",
            f"source={shapes_yaml.parent / 'images' / 'val'}",
            "imgsz=64",
            f"project={tmp_path}",
        ],
        ["info", "model=n.yaml"],
    ):
        proc = run_cli(*args, cwd=tmp_path, wrapper=GUARD)
        assert proc.returncode == 0, (args[0], proc.stderr[-3000:])
    assert (tmp_path / "run" / "weights" / "best.onnx").is_file()
