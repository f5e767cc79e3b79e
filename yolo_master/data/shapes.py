"""``shapes``: an offline synthetic detection dataset in YOLO format, deterministic by seed.

Five classes of filled shapes (circle, square, triangle, star, hexagon) drawn at many scales (from a
few pixels to half the image), densities (1 to 12 per image), rotations and colours, on noisy
gradient backgrounds. Used by ``data=shapes`` and the test suite, so training, validation,
prediction and export run with no download.

    python -m yolo_master.data.shapes --out datasets/shapes --train 500 --val 100 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle", "star", "hexagon")
VERSION = 1  # bump when the drawing changes, so cached copies are regenerated


def _polygon(cls: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Vertices of a regular shape (or a star) of radius ``r``; circles get many vertices."""
    sides = {0: 48, 1: 4, 2: 3, 4: 6}.get(cls, 10)
    t = angle + np.arange(sides) * 2 * math.pi / sides
    radius = np.full(sides, r)
    if cls == 3:  # star: alternate outer and inner radius
        radius[1::2] *= 0.45
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], 1)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, size)[:, None, None]
    img = a * (1 - ramp) + b * ramp
    img = np.repeat(img, size, axis=1) if img.shape[1] == 1 else img
    img = img + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def draw_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """One image and its labels ``(cls, x, y, w, h)`` normalised to the image size."""
    img = _background(rng, size)
    labels = []
    for _ in range(int(rng.integers(1, 13))):
        cls = int(rng.integers(len(CLASSES)))
        r = size * float(np.exp(rng.uniform(math.log(0.015), math.log(0.25))))
        cx, cy = rng.uniform(r * 0.5, size - r * 0.5, 2)
        pts = _polygon(cls, cx, cy, r, float(rng.uniform(0, 2 * math.pi)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], colour, lineType=cv2.LINE_AA)
        x0, y0 = np.clip(pts.min(0), 0, size - 1)
        x1, y1 = np.clip(pts.max(0), 0, size - 1)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            labels.append((cls, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size))
    return img, labels


def generate(out: Path, train: int = 128, val: int = 32, imgsz: int = 320, seed: int = 0) -> Path:
    """Write the dataset under ``out`` (atomically) and return its data YAML; reuse an identical one."""
    from ultralytics.utils import TQDM

    out = Path(out)
    params = {"version": VERSION, "train": train, "val": val, "imgsz": imgsz, "seed": seed}
    yaml_path = out / "shapes.yaml"
    stamp = out / "generator.json"
    if yaml_path.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == params:
        return yaml_path
    if train < 1 or val < 1 or imgsz < 32:
        raise ValueError(f"shapes needs train >= 1, val >= 1 and imgsz >= 32, got {train}, {val}, {imgsz}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for split, count, offset in (("train", train, 0), ("val", val, train)):
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for i in TQDM(range(count), desc=f"Generating shapes/{split}"):
                img, labels = draw_image(np.random.default_rng([seed, offset + i]), imgsz)
                cv2.imwrite(str(tmp / "images" / split / f"{i:06d}.jpg"), img)
                rows = (f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in labels)
                (tmp / "labels" / split / f"{i:06d}.txt").write_text("\n".join(rows) + "\n")
        names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASSES))
        spec = f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n"
        (tmp / "shapes.yaml").write_text(spec)
        (tmp / "generator.json").write_text(json.dumps(params))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return yaml_path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Generate the offline 'shapes' detection dataset (YOLO format).")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--train", type=int, default=128, help="training images")
    ap.add_argument("--val", type=int, default=32, help="validation images")
    ap.add_argument("--imgsz", type=int, default=320, help="image size in pixels (square)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(generate(a.out, a.train, a.val, a.imgsz, a.seed))


if __name__ == "__main__":
    main()
