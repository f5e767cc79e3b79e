"""``shapes``: offline synthetic datasets for every task, in Ultralytics' formats, deterministic by seed.

Five classes of filled shapes (circle, square, triangle, star, hexagon) in random rotations and
colours on noisy gradient backgrounds, placed without overlap so every label describes what is
visible. Two presets (:data:`PRESETS`): ``easy`` (one to three large shapes per image: a detector
learns them in CPU minutes; ``data=shapes``) and ``hard`` (many scales, a few pixels to half the
image, and densities, 1 to 12 per image; ``data=shapes-hard``). Validation images come from another
random stream than training images (``(seed, 1, i)`` vs ``(seed, 0, i)``), so no scene is shared.
One scene generator, one writer per task:

- ``detect``   (``data=shapes``, ``data=shapes-hard``) boxes;
- ``segment``  (``data=shapes-seg``)  polygon masks;
- ``pose``     (``data=shapes-pose``) boxes + 3 keypoints per shape (the points at 0, 120 and 240
  degrees from the shape's rotation on its circumcircle: a triangle's vertices);
- ``obb``      (``data=shapes-obb``)  rotated rectangles (each shape's minimum-area box);
- ``classify`` (``data=shapes-cls``)  one large shape per image, one folder per class.

    python -m yolo_master.data.shapes --task segment --out datasets/shapes-seg --train 500 --val 100
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle", "star", "hexagon")
TASKS = ("detect", "segment", "pose", "obb", "classify")
VERSION = 3  # bump when the drawing changes, so cached copies are regenerated
KEYPOINTS = 3
PRESETS = {  # name -> (objects per image [low, high), circumradius as a share of the image, log-uniform)
    "easy": ((1, 4), (0.12, 0.3)),  # the default: one to three large shapes, learnt in CPU minutes
    "hard": ((1, 13), (0.015, 0.25)),  # many scales (a few pixels to half the image) and densities: research
}
SPLITS = ("train", "val")
FLIP_IDX = (0, 2, 1)  # a left-right flip mirrors the angular order of the three keypoints


@dataclass
class Shape:
    cls: int
    polygon: np.ndarray  # (N, 2) pixel vertices
    keypoints: np.ndarray  # (3, 2) pixels


def _make_shape(cls: int, cx: float, cy: float, r: float, angle: float) -> Shape:
    """Vertices of a regular shape (or a star) of circumradius ``r``; circles get many vertices."""
    sides = {0: 48, 1: 4, 2: 3, 4: 6}.get(cls, 10)
    t = angle + np.arange(sides) * 2 * math.pi / sides
    radius = np.full(sides, r)
    if cls == 3:  # star: alternate outer and inner radius
        radius[1::2] *= 0.45
    polygon = np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], 1)
    tk = angle + np.arange(KEYPOINTS) * 2 * math.pi / KEYPOINTS
    return Shape(cls, polygon, np.stack([cx + r * np.cos(tk), cy + r * np.sin(tk)], 1))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, size)[:, None, None]
    img = np.repeat(a * (1 - ramp) + b * ramp, size, axis=1)
    img = img + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def draw_scene(
    rng: np.random.Generator, size: int, count=(1, 13), scale=(0.015, 0.25), cls: int | None = None
) -> tuple[np.ndarray, list[Shape]]:
    """One image and its shapes (all of class ``cls`` when given); inside the image, never overlapping."""
    img = _background(rng, size)
    shapes, placed = [], []
    fixed = cls
    for _ in range(int(rng.integers(*count))):
        cls = int(rng.integers(len(CLASSES))) if fixed is None else fixed
        r = size * float(np.exp(rng.uniform(math.log(scale[0]), math.log(scale[1]))))
        angle = float(rng.uniform(0, 2 * math.pi))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        for _attempt in range(20):
            cx, cy = rng.uniform(r, size - r, 2)
            if all(math.hypot(cx - x, cy - y) > r + q + 2 for x, y, q in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        shape = _make_shape(cls, cx, cy, r, angle)
        cv2.fillPoly(img, [np.round(shape.polygon).astype(np.int32)], colour, lineType=cv2.LINE_AA)
        shapes.append(shape)
    return img, shapes


def _box(shape: Shape, size: int) -> tuple[float, float, float, float]:
    (x0, y0), (x1, y1) = shape.polygon.min(0), shape.polygon.max(0)
    return (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size


def label_line(task: str, shape: Shape, size: int) -> str:
    """One label row in Ultralytics' format for ``task``, coordinates normalised to ``[0, 1]``."""

    def fmt(values) -> str:
        return " ".join(f"{min(max(float(v), 0.0), 1.0):.6f}" for v in values)

    if task == "segment":
        return f"{shape.cls} {fmt(shape.polygon.ravel() / size)}"
    if task == "obb":
        corners = cv2.boxPoints(cv2.minAreaRect(shape.polygon.astype(np.float32)))
        return f"{shape.cls} {fmt(corners.ravel() / size)}"
    line = f"{shape.cls} {fmt(_box(shape, size))}"
    if task == "pose":
        kpts = np.concatenate([shape.keypoints / size, np.full((KEYPOINTS, 1), 2.0)], 1)
        line += " " + " ".join(f"{v:.6f}" for v in kpts.ravel())
    return line


def _data_yaml(task: str, root: Path) -> str:
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASSES))
    text = f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n"
    if task == "pose":
        text += f"kpt_shape: [{KEYPOINTS}, 3]\nflip_idx: {list(FLIP_IDX)}\n"
    return text


def _write_split(
    task: str, tmp: Path, split: str, count: int, offset: int, imgsz: int, seed: int, preset: str = "easy"
) -> None:
    from ultralytics.utils import TQDM

    for i in TQDM(range(count), desc=f"Generating shapes-{task}/{split}"):
        rng = np.random.default_rng([seed, SPLITS.index(split), i])  # each split its own stream
        if task == "classify":  # one large shape, classes in turn so every split holds every class
            cls = (offset + i) % len(CLASSES)
            img, _ = draw_scene(rng, imgsz, count=(1, 2), scale=(0.2, 0.4), cls=cls)
            folder = tmp / split / CLASSES[cls]
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{i:06d}.jpg"), img)
            continue
        objects, scale = PRESETS[preset]
        img, shapes = draw_scene(rng, imgsz, count=objects, scale=scale)
        cv2.imwrite(str(tmp / "images" / split / f"{i:06d}.jpg"), img)
        rows = [label_line(task, s, imgsz) for s in shapes]
        (tmp / "labels" / split / f"{i:06d}.txt").write_text("".join(f"{r}\n" for r in rows))


def generate(
    out: Path,
    train: int = 128,
    val: int = 32,
    imgsz: int = 320,
    seed: int = 0,
    task: str = "detect",
    preset: str = "easy",
) -> Path:
    """Write the dataset under ``out`` (atomically; an identical earlier copy is reused).

    ``preset`` (detect, segment, pose, obb): ``easy`` (default) or ``hard`` (:data:`PRESETS`).

    Returns:
        the data YAML for detect / segment / pose / obb, the dataset folder for classify.
    """
    if task not in TASKS:
        raise ValueError(f"unknown shapes task '{task}'; choose one of {', '.join(TASKS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown shapes preset '{preset}'; choose one of {', '.join(PRESETS)}")
    if train < 1 or val < 1 or imgsz < 32:
        raise ValueError(f"shapes needs train >= 1, val >= 1 and imgsz >= 32, got {train}, {val}, {imgsz}")
    out = Path(out)
    params = {"version": VERSION, "task": task, "train": train, "val": val, "imgsz": imgsz, "seed": seed}
    if task != "classify":
        params["preset"] = preset
    result = out if task == "classify" else out / "data.yaml"
    stamp = out / "generator.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        return result
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for split, count, offset in zip(SPLITS, (train, val), (0, train)):
            if task != "classify":
                (tmp / "images" / split).mkdir(parents=True)
                (tmp / "labels" / split).mkdir(parents=True)
            _write_split(task, tmp, split, count, offset, imgsz, seed, preset)
        if task != "classify":
            (tmp / "data.yaml").write_text(_data_yaml(task, out))
        (tmp / "generator.json").write_text(json.dumps(params))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Generate an offline 'shapes' dataset in Ultralytics' format.")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--task", choices=TASKS, default="detect")
    ap.add_argument("--train", type=int, default=128, help="training images")
    ap.add_argument("--val", type=int, default=32, help="validation images")
    ap.add_argument("--imgsz", type=int, default=320, help="image size in pixels (square)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", choices=tuple(PRESETS), default="easy", help="easy: few, large; hard: many scales")
    a = ap.parse_args(argv)
    print(generate(a.out, a.train, a.val, a.imgsz, a.seed, a.task, a.preset))


if __name__ == "__main__":
    main()
