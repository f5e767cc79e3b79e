"""Offline datasets: ``data=shapes`` (and ``shapes-seg``, ``-pose``, ``-obb``, ``-cls``) resolve to a
generated copy, never a download."""

from __future__ import annotations

from pathlib import Path

from .shapes import generate

BUILTIN = {  # name -> task (and the easy preset for shapes-easy)
    "shapes": "detect",
    "shapes-easy": "detect",
    "shapes-seg": "segment",
    "shapes-pose": "pose",
    "shapes-obb": "obb",
    "shapes-cls": "classify",
}


def resolve_data(data):
    """Return the data YAML (or folder) for a built-in name, generated once and cached; else ``data`` unchanged."""
    name = str(data)
    key = name[:-5] if name.endswith(".yaml") else name
    if key in BUILTIN and not Path(name).exists():
        from ultralytics.utils import DATASETS_DIR

        preset = "easy" if key.endswith("-easy") else "hard"
        return str(generate(Path(DATASETS_DIR) / key, task=BUILTIN[key], preset=preset))
    return data
