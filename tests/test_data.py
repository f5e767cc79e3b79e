"""The offline ``shapes`` dataset: deterministic, valid YOLO labels, reachable as ``data=shapes``."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from yolo_master.data import resolve_data
from yolo_master.data.shapes import CLASSES, draw_image, generate


def _digest(root):
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix in {".jpg", ".txt"}:
            h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = generate(tmp_path / "a", train=4, val=2, imgsz=64, seed=3).parent
    b = generate(tmp_path / "b", train=4, val=2, imgsz=64, seed=3).parent
    c = generate(tmp_path / "c", train=4, val=2, imgsz=64, seed=4).parent
    assert _digest(a) == _digest(b) != _digest(c)


def test_labels_are_valid_yolo_rows(tmp_path):
    root = generate(tmp_path / "s", train=20, val=5, imgsz=128, seed=0).parent
    sizes = []
    for label in (root / "labels").rglob("*.txt"):
        for line in label.read_text().split("\n"):
            if not line:
                continue
            cls, *box = line.split()
            assert 0 <= int(cls) < len(CLASSES)
            assert len(box) == 4 and all(0.0 <= float(v) <= 1.0 for v in box)
            sizes.append(float(box[2]))
    assert min(sizes) < 0.05 and max(sizes) > 0.3  # many scales, tiny to large
    assert len(list((root / "images" / "train").glob("*.jpg"))) == 20


def test_draw_image_is_a_pure_function_of_the_rng():
    one = draw_image(np.random.default_rng([0, 7]), 64)
    two = draw_image(np.random.default_rng([0, 7]), 64)
    assert np.array_equal(one[0], two[0]) and one[1] == two[1]


def test_regeneration_is_skipped_when_parameters_match(tmp_path):
    yaml_path = generate(tmp_path / "s", train=2, val=1, imgsz=64)
    stamp = yaml_path.stat().st_mtime_ns
    assert generate(tmp_path / "s", train=2, val=1, imgsz=64).stat().st_mtime_ns == stamp


def test_data_shapes_resolves_to_a_generated_yaml(tmp_path, monkeypatch):
    import ultralytics.utils

    monkeypatch.setattr(ultralytics.utils, "DATASETS_DIR", tmp_path)
    path = resolve_data("shapes")
    assert path == str(tmp_path / "shapes" / "shapes.yaml")
    assert "names:" in (tmp_path / "shapes" / "shapes.yaml").read_text()
    assert resolve_data("coco8.yaml") == "coco8.yaml"  # anything else is passed through to Ultralytics


def test_bad_generator_arguments(tmp_path):
    with pytest.raises(ValueError, match="imgsz >= 32"):
        generate(tmp_path / "x", train=1, val=1, imgsz=8)
