"""The offline ``shapes`` datasets: deterministic, valid labels for every task, reachable by name."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from ultralytics.data.utils import check_cls_dataset, check_det_dataset

from yolo_master.data import BUILTIN, resolve_data
from yolo_master.data.shapes import CLASSES, KEYPOINTS, TASKS, draw_scene, generate


def _digest(root):
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix in {".jpg", ".txt"}:
            h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, task):
    a, b, c = (
        generate(tmp_path / n, train=4, val=2, imgsz=64, seed=s, task=task) for n, s in (("a", 3), ("b", 3), ("c", 4))
    )
    a, b, c = (p if p.is_dir() else p.parent for p in (a, b, c))
    assert _digest(a) == _digest(b) != _digest(c)


def _rows(root):
    for label in (root / "labels").rglob("*.txt"):
        yield from (line.split() for line in label.read_text().splitlines() if line)


def test_detect_labels_are_valid_boxes_at_many_scales(tmp_path):
    root = generate(tmp_path / "s", train=20, val=5, imgsz=128, seed=0, preset="hard").parent
    widths = []
    for cls, *box in _rows(root):
        assert 0 <= int(cls) < len(CLASSES) and len(box) == 4 and all(0 <= float(v) <= 1 for v in box)
        widths.append(float(box[2]))
    assert min(widths) < 0.05 and max(widths) > 0.3
    assert check_det_dataset(str(root / "data.yaml"))["nc"] == len(CLASSES)


@pytest.mark.parametrize("task,columns", [("segment", None), ("pose", 4 + 3 * KEYPOINTS), ("obb", 8)])
def test_task_labels_have_the_right_shape(tmp_path, task, columns):
    yaml_path = generate(tmp_path / task, train=6, val=2, imgsz=96, seed=1, task=task)
    rows = list(_rows(yaml_path.parent))
    assert rows
    for cls, *values in rows:
        assert 0 <= int(cls) < len(CLASSES)
        if columns:
            assert len(values) == columns
        else:  # polygon: x y pairs, at least a triangle
            assert len(values) % 2 == 0 and len(values) >= 6
        assert all(0 <= float(v) <= 2 for v in values)  # coordinates in [0, 1], visibility flags 2
    data = check_det_dataset(str(yaml_path))
    if task == "pose":
        assert data["kpt_shape"] == [KEYPOINTS, 3]


def test_classify_has_every_class_in_every_split(tmp_path):
    root = generate(tmp_path / "cls", train=10, val=5, imgsz=64, task="classify")
    for split in ("train", "val"):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(CLASSES)
    assert check_cls_dataset(str(root))["nc"] == len(CLASSES)


def test_shapes_never_overlap_and_stay_inside():
    _, shapes = draw_scene(np.random.default_rng(5), 128, count=(12, 13))
    centres = [(s.polygon.mean(0), np.linalg.norm(s.polygon - s.polygon.mean(0), axis=1).max()) for s in shapes]
    for i, (ci, ri) in enumerate(centres):
        assert (ci - ri >= -1).all() and (ci + ri <= 129).all()
        for cj, rj in centres[i + 1 :]:
            assert np.linalg.norm(ci - cj) > ri + rj


def test_regeneration_is_skipped_when_parameters_match(tmp_path):
    yaml_path = generate(tmp_path / "s", train=2, val=1, imgsz=64)
    stamp = yaml_path.stat().st_mtime_ns
    assert generate(tmp_path / "s", train=2, val=1, imgsz=64).stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "name,task,preset",
    [
        ("shapes", "detect", "easy"),
        ("shapes.yaml", "detect", "easy"),
        ("shapes-hard", "detect", "hard"),
        ("shapes-seg", "segment", "hard"),
        ("shapes-pose", "pose", "hard"),
        ("shapes-obb", "obb", "hard"),
        ("shapes-cls", "classify", "hard"),
    ],
)
def test_builtin_names_resolve_to_generated_data(tmp_path, monkeypatch, name, task, preset):
    import ultralytics.utils

    import yolo_master.data as data

    calls = []
    monkeypatch.setattr(ultralytics.utils, "DATASETS_DIR", tmp_path)
    monkeypatch.setattr(
        data, "generate", lambda out, *sizes, task, preset: calls.append((out, task, preset)) or out / "data.yaml"
    )
    assert resolve_data(name) == str(tmp_path / name.removesuffix(".yaml") / "data.yaml")
    assert calls == [(tmp_path / name.removesuffix(".yaml"), task, preset)]
    assert {b.task for b in BUILTIN.values()} == set(TASKS)


def test_validation_images_are_no_training_images_of_a_larger_set(tmp_path):
    """The val split has its own random stream: growing the training set never draws a val scene."""
    small = generate(tmp_path / "small", train=2, val=3, imgsz=64).parent
    large = generate(tmp_path / "large", train=8, val=1, imgsz=64).parent
    train = {p.read_bytes() for p in (large / "images" / "train").iterdir()}
    assert not train & {p.read_bytes() for p in (small / "images" / "val").iterdir()}


def test_other_data_passes_through():
    assert resolve_data("coco8.yaml") == "coco8.yaml"


def test_easy_preset_draws_one_to_three_large_shapes(tmp_path):
    data = generate(tmp_path / "easy", train=24, val=4, imgsz=160)  # the default
    sizes, counts = [], []
    for label in (data.parent / "labels" / "train").glob("*.txt"):
        rows = [list(map(float, r.split()[1:])) for r in label.read_text().splitlines()]
        counts.append(len(rows))
        sizes += [max(w, h) for _, _, w, h in rows]
    assert 1 <= min(counts) and max(counts) <= 3
    assert min(sizes) >= 0.15  # the hard preset goes down to a few pixels (0.03 of the image)
    hard = generate(tmp_path / "hard", train=24, val=4, imgsz=160, preset="hard")
    labels = (hard.parent / "labels" / "train").glob("*.txt")
    assert min(float(r.split()[3]) for f in labels for r in f.read_text().splitlines()) < 0.1


def test_bad_generator_arguments(tmp_path):
    with pytest.raises(ValueError, match="imgsz >= 32"):
        generate(tmp_path / "x", train=1, val=1, imgsz=8)
    with pytest.raises(ValueError, match="unknown shapes task"):
        generate(tmp_path / "x", task="depth")
    with pytest.raises(ValueError, match="unknown shapes preset 'medium'"):
        generate(tmp_path / "x", preset="medium")
