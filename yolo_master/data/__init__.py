"""Offline datasets: ``data=shapes`` (and ``shapes-hard``, ``-seg``, ``-pose``, ``-obb``, ``-cls``) resolve to a
generated copy, never a download."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .shapes import generate


class Builtin(NamedTuple):
    """One built-in dataset: what :func:`~yolo_master.data.shapes.generate` writes for it."""

    task: str
    preset: str = "hard"
    train: int = 128
    val: int = 32
    imgsz: int = 320


BUILTIN = {
    # the main job's data: five classes, one to three large shapes, sized so that the README's
    # two-minute recipe ends with a working detector on a 2-core CPU (README "Two commands")
    "shapes": Builtin("detect", "easy", train=512, val=128, imgsz=160),
    "shapes-hard": Builtin("detect"),  # many scales and densities: for research, not learnt in minutes
    "shapes-seg": Builtin("segment"),
    "shapes-pose": Builtin("pose"),
    "shapes-obb": Builtin("obb"),
    "shapes-cls": Builtin("classify"),
}


def resolve_data(data):
    """Return the data YAML (or folder) for a built-in name, generated once and cached; else ``data`` unchanged."""
    name = str(data)
    key = name[:-5] if name.endswith(".yaml") else name
    if key in BUILTIN and not Path(name).exists():
        from ultralytics.utils import DATASETS_DIR

        spec = BUILTIN[key]
        out = Path(DATASETS_DIR) / key
        return str(generate(out, spec.train, spec.val, spec.imgsz, task=spec.task, preset=spec.preset))
    return data
