"""Offline datasets: ``data=shapes`` resolves to a generated copy, never a download."""

from __future__ import annotations

from pathlib import Path

from .shapes import generate

BUILTIN = {"shapes": generate}


def resolve_data(data):
    """Return a data YAML path for a built-in name (generated once, cached), else ``data`` unchanged."""
    name = str(data)
    key = name[:-5] if name.endswith(".yaml") else name
    if key in BUILTIN and not Path(name).exists():
        from ultralytics.utils import DATASETS_DIR

        return str(BUILTIN[key](Path(DATASETS_DIR) / key))
    return data
