"""Loss-free bias balancing (GigaMoE Algorithm 1): selection only, recovers a collapsed gate, EMA copy."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import build_detect, run_cli, zoo_dict

from yolo_master import ESMoE, YOLOMaster
from yolo_master.engine.router_updates import step_routers
from yolo_master.engine.routing_stats import max_violation
from yolo_master.export.parity import run_onnx
from yolo_master.nn import MoEOptions, TopKRouter
from yolo_master.nn.routers.topk import decayed_rate, hard_top_k, soft_top_k


def test_bias_changes_which_experts_not_how_much():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    bias = torch.tensor([0.0, 0.0, 5.0, 0.0])
    for select in (soft_top_k, hard_top_k):
        w, idx = select(logits, 2, bias)
        assert idx.tolist() == [[2, 0]]
        assert torch.allclose(w[0], torch.softmax(torch.tensor([1.0, 3.0]), 0), atol=1e-6)


def _collapsed_router(rate: float) -> tuple[TopKRouter, torch.Tensor]:
    torch.manual_seed(0)
    router = TopKRouter(8, 4, 2, bias_rate=rate).train()  # it counts its choices only when balancing is on
    with torch.no_grad():  # every image prefers experts 0 and 1 by a wide margin, plus a little noise
        router.logits.weight.mul_(0.05)
        router.logits.bias.copy_(torch.tensor([2.0, 1.5, 0.0, -0.5]))
    return router, torch.randn(16, 8, 4, 4)


def _maxvio(router, x, steps, rate):
    counts = torch.zeros(4)
    for step in range(steps):
        r = router(x + 0.3 * torch.randn_like(x))
        if step >= steps - 20:
            counts += torch.bincount(r.indices.flatten(), minlength=4)
        if rate:
            router.update_selection_bias(rate)
    return max_violation(counts.tolist())


def test_bias_balancing_recovers_a_collapsed_gate():
    router, x = _collapsed_router(0.0)
    assert _maxvio(router, x, 300, rate=0.0) > 0.9  # without it, the collapse stays
    router, x = _collapsed_router(0.02)
    assert _maxvio(router, x, 300, rate=0.02) < 0.2
    assert router.selection_bias[2] > router.selection_bias[0]  # the starved experts were lifted


def test_ema_gets_a_copy_of_the_bias_not_an_average():
    model = ESMoE(8, 8, 4, 2, options=MoEOptions(balance="bias", bias_rate=0.1))
    ema = copy.deepcopy(model)
    with torch.no_grad():
        ema.router.selection_bias.fill_(123.0)  # whatever EMA averaging made of it
    model.train()(torch.randn(4, 8, 5, 5))
    step_routers(model, ema, progress=0.0)
    assert model.router.selection_bias.abs().sum() > 0
    assert torch.equal(ema.router.selection_bias, model.router.selection_bias)
    assert model.router.step_counts.sum() == 0  # counted afresh for the next step


@pytest.mark.parametrize(
    "decay,progress,expected",
    [("constant", 0.7, 0.01), ("linear", 0.75, 0.0025), ("cosine", 0.5, 0.005), ("cosine", 1.0, 0.0)],
)
def test_rate_decays(decay, progress, expected):
    assert decayed_rate(0.01, decay, progress) == pytest.approx(expected, abs=1e-12)


def test_moe_section_of_the_model_yaml(tmp_path):
    model = build_detect(zoo_dict(balance="bias", bias_rate=0.005, bias_decay="cosine"))
    routers = [m.router for m in model.modules() if isinstance(m, ESMoE)]
    assert [(r.bias_rate, r.bias_decay) for r in routers] == [(0.005, "cosine")] * 3
    for bad, match in (
        ({"balance": "magic"}, "choose loss or bias"),
        ({"bias_rate": -1}, "positive finite number"),
        ({"bias_rate": float("inf")}, "positive finite number"),
        ({"bias_decay": "step"}, "constant, linear, cosine"),
        ({"lr": 1}, "unknown keys"),
    ):
        with pytest.raises(ValueError, match=match):
            build_detect(zoo_dict(**bad))


def test_exported_graph_keeps_the_bias(tmp_path):
    pytest.importorskip("onnxruntime")
    block = ESMoE(8, 8, 4, 2).eval()
    with torch.no_grad():
        block.router.selection_bias.copy_(torch.tensor([0.0, 0.0, 50.0, 40.0]))
    x = torch.randn(1, 8, 6, 6)
    path = tmp_path / "bias.onnx"
    torch.onnx.export(block, x, str(path), dynamo=False, opset_version=17)
    with torch.no_grad():
        ref = block(x).numpy()
    assert block.last_routing.indices[0].tolist() == [2, 3]
    assert np.abs(run_onnx(path, x)[0] - ref).max() <= 1e-4


@pytest.mark.slow
def test_training_with_bias_balancing_updates_and_saves_the_bias(tmp_path, shapes_yaml):
    text = YOLOMaster("n.yaml").model.yaml
    import yaml

    cfg = {k: v for k, v in text.items() if k not in {"yaml_file", "scale", "channels"}}
    cfg["moe"] = {"balance": "bias", "bias_rate": 0.01}
    cfg["scales"] = {"n": cfg["scales"]["n"]}
    path = tmp_path / "balanced-n.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_cli(
        "train",
        f"model={path}",
        f"data={shapes_yaml}",
        "epochs=1",
        "imgsz=64",
        "batch=4",
        "nbs=4",
        "workers=0",
        f"project={tmp_path}",
        "name=run",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=False)
    biases = [m.router.selection_bias for m in ckpt["model"].modules() if isinstance(m, ESMoE)]
    assert len(biases) == 3 and all(b.abs().sum() > 0 for b in biases)
    rows = (tmp_path / "run" / "routing.csv").read_text().splitlines()
    assert rows[0].endswith(",maxvio,dropped")


def test_default_router_does_no_counting_work():
    router = TopKRouter(8, 4, 2).train()  # balance: loss (the default)
    router(torch.randn(4, 8, 5, 5))
    assert router.step_counts.sum() == 0 and router.selection_bias.abs().sum() == 0
