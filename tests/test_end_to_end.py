"""What a user does: train one epoch from the CLI, then val / predict / reload / export in new processes."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes_yaml):
    root = tmp_path_factory.mktemp("e2e")
    proc = run_cli(
        "train",
        "model=n.yaml",
        f"data={shapes_yaml}",
        "epochs=1",
        "imgsz=160",
        "batch=8",
        "device=cpu",
        "workers=0",
        "moe=1.5",
        f"project={root}",
        "name=train",
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (root / "train.log").write_text(proc.stdout + proc.stderr)
    return root, root / "train"


def test_training_ends_by_saying_what_was_learned_and_where(trained, shapes_yaml):
    root, run = trained
    log = (root / "train.log").read_text()
    best = run / "weights" / "best.pt"
    assert "Learned: mAP50 " in log and "mAP50-95 " in log, log[-2000:]
    assert f"Weights: {best}" in log and f"Plots, results.csv and validation images with boxes: {run}" in log
    assert f"yolo-master predict model={best} source={shapes_yaml.parent / 'images' / 'val'}" in log


def test_training_logs_a_nonzero_moe_column(trained):
    _, run = trained
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert rows, "results.csv is empty"
    row = {k.strip(): v for k, v in rows[-1].items()}
    for key in ("train/box_loss", "train/cls_loss", "train/dfl_loss", "train/moe_loss", "val/moe_loss"):
        assert key in row, sorted(row)
    assert float(row["train/moe_loss"]) > 0
    assert (run / "weights" / "best.pt").is_file() and (run / "weights" / "last.pt").is_file()


def test_val_and_predict_on_best_pt_in_new_processes(trained, shapes_yaml):
    root, run = trained
    best = run / "weights" / "best.pt"
    proc = run_cli("val", f"model={best}", f"data={shapes_yaml}", "imgsz=160", f"project={root}", "name=val", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mAP50" in proc.stdout + proc.stderr
    images = shapes_yaml.parent / "images" / "val"
    proc = run_cli(
        "predict",
        f"model={best}",
        f"source={images}",
        "imgsz=160",
        "conf=0.001",
        f"project={root}",
        "name=pred",
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = sorted((root / "pred").glob("*.jpg"))
    assert len(saved) == len(list(images.glob("*.jpg")))


def test_checkpoint_reloads_with_only_yolo_master_imported(trained, shapes_yaml):
    _, run = trained
    image = sorted((shapes_yaml.parent / "images" / "val").glob("*.jpg"))[0]
    code = (
        "from yolo_master import YOLOMaster\n"
        f"m = YOLOMaster(r'{run / 'weights' / 'best.pt'}')\n"
        "assert type(m.model).__name__ == 'YOLOMasterDetectionModel', type(m.model)\n"
        "assert sum(type(x).__name__ == 'ESMoE' for x in m.model.modules()) == 3\n"
        f"r = m.predict(r'{image}', imgsz=160, conf=0.001, verbose=False)\n"
        "print('boxes', len(r[0].boxes))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "boxes" in proc.stdout


def test_python_api_predict_on_an_untrained_zoo_model(tmp_path):
    import cv2

    from yolo_master import YOLOMaster

    image = tmp_path / "some.jpg"
    cv2.imwrite(str(image), np.full((96, 128, 3), 127, np.uint8))
    results = YOLOMaster("n.yaml").predict(str(image), imgsz=96, verbose=False)
    assert len(results) == 1 and results[0].boxes is not None
    assert results[0].orig_shape == (96, 128)


def test_onnx_export_matches_pytorch(trained):
    import onnxruntime as ort
    import torch

    from yolo_master import YOLOMaster

    _, run = trained
    best = run / "weights" / "best.pt"
    onnx_path = YOLOMaster(str(best)).export(format="onnx", imgsz=160)
    model = YOLOMaster(str(best)).model.float().eval()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for _ in range(4):
        x = rng.random((1, 3, 160, 160), dtype=np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x))[0].numpy()
        out = session.run(None, {session.get_inputs()[0].name: x})[0]
        assert np.abs(out - ref).max() <= 1e-3
