"""Checkpoints under Ultralytics' opt-in safe loading: ours load, a booby-trapped pickle is refused."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from conftest import real_batch, run_cli

from yolo_master import YOLOMaster

SAFE = {"ULTRALYTICS_SAFE_LOAD": "1"}


class _Trap:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_our_checkpoint_with_criterion_loads_and_predicts_in_safe_mode(tmp_path, shapes_yaml):
    from ultralytics.cfg import get_cfg

    model = YOLOMaster("n.yaml").model.train()
    model.args = get_cfg()
    batch = real_batch("detect", shapes_yaml)
    batch["img"] = batch["img"].float() / 255
    model.loss(batch)  # builds the criterion, which a trained checkpoint may carry too
    path = tmp_path / "ours.pt"
    torch.save({"model": model.eval(), "train_args": {}}, path)
    images = Path(shapes_yaml).parent / "images" / "val"
    proc = run_cli("predict", f"model={path}", f"source={images}", "imgsz=64", "save=False", cwd=tmp_path, env=SAFE)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_booby_trapped_checkpoint_is_refused_in_safe_mode(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "trap.pt"
    torch.save({"model": _Trap(str(marker)), "train_args": {}}, path)
    proc = run_cli("info", f"model={path}", cwd=tmp_path, env=SAFE)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(errors) == 1 and "trap.pt" in errors[0]
    assert not marker.exists()  # the payload never ran
