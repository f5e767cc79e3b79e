"""ONNX export under ``torch.export`` (``torch.onnx.export(dynamo=True)``), the exporter torch moves to.

Ultralytics 8.4 pins the TorchScript-based exporter (``dynamo=False``), so that is what
``yolo-master export`` uses today; these tests keep the graph strategies working when it switches:
``slice``, ``gather`` and ``dense`` export and match PyTorch on inputs that take different routes;
``branch`` (a scripted ``If``) says in one line that it needs the TorchScript tracer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolo_master import ESMoE, YOLOMaster
from yolo_master.export.parity import force_route, run_onnx

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # the dynamo exporter's dependency (the `export` extra installs it)
pytestmark = pytest.mark.slow


def _routes_and_inputs(block: ESMoE, n: int = 12) -> list[torch.Tensor]:
    """Inputs whose pooled statistics differ enough for the (random) gate to choose different experts."""
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(1, block.c1, 12, 12, generator=g) * 3 + torch.randn(1, block.c1, 1, 1, generator=g) * 4
        for _ in range(n)
    ]


@pytest.mark.parametrize("strategy", ["slice", "gather", "dense"])
def test_block_exports_under_torch_export_and_follows_the_routing(tmp_path, strategy):
    torch.manual_seed(0)
    block = ESMoE(16, 16, 4, 2, strategy=strategy).eval()
    inputs = _routes_and_inputs(block)
    path = tmp_path / f"{strategy}.onnx"
    torch.onnx.export(block, (inputs[0],), str(path), dynamo=True)
    routes = set()
    for x in inputs:
        with torch.no_grad():
            ref = block(x).numpy()
        routes.add(tuple(sorted(block.last_routing.indices[0].tolist())))
        assert np.abs(run_onnx(path, x)[0] - ref).max() <= 1e-4 * np.abs(ref).max()
    assert len(routes) >= 2  # the graph followed the gate, not a route baked in at export


def test_branch_strategy_says_it_needs_the_torchscript_tracer(tmp_path):
    block = ESMoE(16, 16, 4, 2, strategy="branch").eval()
    with pytest.raises(Exception, match="'branch' ES-MoE strategy needs the TorchScript tracer"):
        torch.onnx.export(block, (torch.randn(1, 16, 12, 12),), str(tmp_path / "b.onnx"), dynamo=True)


def test_yolomaster_onnx_export_works_when_the_exporter_switches_to_dynamo(tmp_path, monkeypatch):
    """``YOLOMaster.export(format="onnx")`` with Ultralytics' ``torch.onnx.export`` call forced to
    ``dynamo=True``: the default strategy exports and matches PyTorch."""
    real_export = torch.onnx.export

    def dynamo_export(*args, **kwargs):
        kwargs.update(dynamo=True, dynamic_axes=None)
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_export)
    model = YOLOMaster("n.yaml")
    for block in (m for m in model.model.modules() if isinstance(m, ESMoE)):
        force_route(block, (2, 0), input_weight=0.01)
    path = model.export(format="onnx", imgsz=64)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model.model.float().eval()(x)[0].numpy()
    assert np.abs(run_onnx(path, x)[0] - ref).max() <= 1e-4 * np.abs(ref).max()
