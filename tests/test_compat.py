"""Checkpoints written before the routers/ + integration/ redesign still load and predict the same.

The fixtures were written by commit ed2221a's code (``tests/fixtures/compat/make_fixtures.py`` says how):
a detect N trained one epoch, two ``moe:``-options models (shared expert + variable K + capacity + bias
balancing; soft mixture), a HiMoE model and an upcycled YOLO12 (FFN-MoE + grafted ES-MoE). Each
``*_ref.pt`` holds an input and that code's eval outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from yolo_master import YOLOMaster
from yolo_master.upcycle.pipeline import output_tensors

FIXTURES = Path(__file__).parent / "fixtures" / "compat"
NAMES = ("detect_n", "options_shared_kdist_bias", "options_soft", "himoe", "upcycled")


def flat_outputs(model, x) -> list[torch.Tensor]:
    with torch.no_grad():
        return output_tensors(model.float().eval()(x))


def assert_same_outputs(model, ref: dict) -> None:
    ours = flat_outputs(model, ref["input"])
    assert len(ours) == len(ref["outputs"])
    for a, b in zip(ours, ref["outputs"]):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_old_checkpoint_loads_and_predicts_the_same(name):
    ref = torch.load(FIXTURES / f"{name}_ref.pt", weights_only=True)
    model = YOLOMaster(str(FIXTURES / f"{name}.pt"))
    assert_same_outputs(model.model, ref)


@pytest.mark.parametrize("name", NAMES)
def test_old_checkpoint_resaved_by_this_code_round_trips(name, tmp_path):
    ref = torch.load(FIXTURES / f"{name}_ref.pt", weights_only=True)
    model = YOLOMaster(str(FIXTURES / f"{name}.pt"))
    model.save(tmp_path / "again.pt")
    assert_same_outputs(YOLOMaster(str(tmp_path / "again.pt")).model, ref)


def test_old_checkpoints_load_under_safe_loading():
    """``ULTRALYTICS_SAFE_LOAD=1`` (read at Ultralytics' import, hence a fresh interpreter): the allow-list
    knows the class paths the old checkpoints name, and the loaded models predict as before."""
    import subprocess
    import sys

    code = (
        "import torch, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_compat import FIXTURES, NAMES, assert_same_outputs\n"
        "from yolo_master import YOLOMaster\n"
        "for name in NAMES:\n"
        "    ref = torch.load(FIXTURES / f'{name}_ref.pt', weights_only=True)\n"
        "    assert_same_outputs(YOLOMaster(str(FIXTURES / f'{name}.pt')).model, ref)\n"
        "print('all loaded')\n"
    )
    env = {**__import__("os").environ, "ULTRALYTICS_SAFE_LOAD": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0 and "all loaded" in proc.stdout, proc.stderr[-3000:]
