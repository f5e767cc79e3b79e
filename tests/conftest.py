"""Shared fixtures: a tiny generated dataset, and a way to run the CLI exactly as a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import yolo_master  # noqa: F401  (offline defaults + registration before anything else imports ultralytics)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shapes_yaml(tmp_path_factory) -> Path:
    """16 training and 8 validation images at 160 px."""
    from yolo_master.data.shapes import generate

    return generate(tmp_path_factory.mktemp("data") / "shapes", train=16, val=8, imgsz=160, seed=0)


def cli_command() -> list[str]:
    """The installed ``yolo-master`` script next to this interpreter, else ``python -m yolo_master.cli``."""
    script = Path(sys.executable).with_name("yolo-master")
    return [str(script)] if script.exists() else [sys.executable, "-m", "yolo_master.cli"]


def run_cli(*args: str, cwd: Path, timeout: int = 600, wrapper: list[str] | None = None):
    """Run the CLI in a fresh process; returns the CompletedProcess (text mode)."""
    env = {**os.environ, "YOLO_VERBOSE": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("YOLO_MASTER_DEBUG", None)
    cmd = (wrapper or cli_command()) + list(args)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
