"""Offline by default: nothing in train / val / predict / export may reach the network.

Ultralytics reads ``YOLO_OFFLINE`` (no online checks, update checks, analytics or hub) and
``YOLO_AUTOINSTALL`` (no pip installs) once, at import, so :func:`configure_environment` must run
before ``ultralytics`` is imported; ``import yolo_master`` does that. A user who sets either variable
keeps their own value.

One download stays outside those switches: plotting asks ``check_font`` for Arial and, when the
font is not on disk, probes the asset server. :func:`use_local_fonts` points those lookups at a font
that is on disk (the user's Ultralytics config dir, the system fonts, or matplotlib's bundled
DejaVu Sans), so labels and plots render with no network.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path


def configure_environment() -> None:
    """Default Ultralytics to offline, no auto-install (call before importing ultralytics)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")


def local_font(font: str = "Arial.ttf") -> Path:
    """A font file on disk for ``font``, never downloaded."""
    from matplotlib import font_manager
    from ultralytics.utils import USER_CONFIG_DIR

    name = Path(font).name
    if (USER_CONFIG_DIR / name).exists():
        return USER_CONFIG_DIR / name
    for entry in font_manager.fontManager.ttflist:
        if Path(entry.fname).name == name and os.path.exists(entry.fname):
            return Path(entry.fname)
    return Path(font_manager.findfont("DejaVu Sans"))


def use_local_fonts() -> None:
    """Route Ultralytics' font lookups to :func:`local_font` while running offline."""
    from ultralytics.utils import env_bool

    if not env_bool("YOLO_OFFLINE"):
        return
    for module in ("ultralytics.utils.checks", "ultralytics.utils.plotting", "ultralytics.data.utils"):
        importlib.import_module(module).check_font = local_font
