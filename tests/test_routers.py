"""Routing options of issue 7 (shared expert, variable K, soft mixture, capacity, bias): each one against
a plain loop, batch independence in eval, copies, ONNX export, calibration and YAML validation."""

from __future__ import annotations

import copy
import csv
import math
import pickle

import numpy as np
import pytest
import torch
import yaml
from conftest import build_detect, images, loop_reference, run_cli, zoo_dict

from yolo_master import ESMoE, YOLOMaster
from yolo_master.engine.router_updates import step_routers
from yolo_master.export import inspect_onnx
from yolo_master.nn import MoEOptions
from yolo_master.nn.capacity import apply_capacity
from yolo_master.nn.routers import VariableKRouter
from yolo_master.nn.routers.variable_k import complexity_score, k_by_rank

P = (0.4, 0.3, 0.2, 0.1)
ROUTERS = {  # the model YAML's `moe:` section -> what it selects
    "topk": {},
    "bias": {"balance": "bias"},
    "shared": {"shared": True},
    "soft": {"router": "soft"},
    "variable": {"k_dist": list(P)},
    "shared+variable": {"shared": True, "k_dist": list(P)},
    "capacity": {"capacity": 1.0},
}
GRAPH = ("slice", "gather", "branch", "slots")


def make_block(options: dict, seed: int = 0, e: int = 4, k: int = 2) -> ESMoE:
    """An 8-channel ES-MoE block with ``options`` applied, non-trivial BN statistics, and for bias /
    variable K a router state that matters (a non-zero bias; thresholds calibrated on training batches)."""
    torch.manual_seed(seed)
    block = ESMoE(8, 8, e, k, options=MoEOptions.from_yaml(options))
    bank = block.experts
    with torch.no_grad():
        bank.bn_running_mean.normal_(0, 0.3)
        bank.bn_running_var.uniform_(0.5, 2.0)
        block.norm.running_mean.normal_(0, 0.3)
        block.norm.running_var.uniform_(0.5, 2.0)
        block.router.selection_bias.copy_(torch.linspace(0.3, -0.3, e)) if options.get("balance") else None
    if isinstance(block.router, VariableKRouter):
        block.train()
        for _ in range(30):
            block(images(16))
    return block.eval()


@pytest.mark.parametrize("name", ROUTERS)
@pytest.mark.parametrize("strategy", ["auto", "select", "grouped", "dense", *GRAPH])
def test_every_router_and_strategy_matches_the_loop(name, strategy):
    block = make_block(ROUTERS[name])
    block.strategy = strategy
    x = images(6)
    with torch.no_grad():
        assert (block(x) - loop_reference(block, x)).abs().max() <= 1e-5
        for i in range(3):  # batch of one: select / per-image graph paths
            assert (block(x[i : i + 1]) - loop_reference(block, x[i : i + 1])).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ROUTERS)
def test_every_router_is_batch_independent_in_eval(name):
    block = make_block(ROUTERS[name], seed=1)
    x = images(5)
    with torch.no_grad():
        together = block(x)
        alone = torch.cat([block(x[i : i + 1]) for i in range(len(x))])
    assert (together - alone).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ROUTERS)
def test_every_router_survives_deepcopy_and_pickle_after_training(name):
    block = make_block(ROUTERS[name]).train()
    block(images(4)).sum().backward()
    for clone in (copy.deepcopy(block), pickle.loads(pickle.dumps(block))):
        assert clone.last_routing is None
        clone.eval()
        x = images(2)
        with torch.no_grad():
            assert torch.equal(clone(x), block.eval()(x))
        block.train()


@pytest.mark.parametrize("name", ROUTERS)
@pytest.mark.parametrize("strategy", GRAPH)
def test_every_router_exports_to_onnx_with_routing_and_matches(tmp_path, name, strategy):
    ort = pytest.importorskip("onnxruntime")
    block = make_block(ROUTERS[name], seed=2)
    block.strategy = strategy
    x = images(1)
    path = tmp_path / "block.onnx"
    torch.onnx.export(block, x, str(path), dynamo=False, opset_version=17)
    ops = inspect_onnx(path).ops
    assert not ops.keys() & {"Loop", "NonZero", "Scan"}
    if strategy != "branch":
        assert "If" not in ops
    assert ("TopK" in ops) == (name != "soft")  # soft mixture: every expert, nothing to select
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed in range(6):  # different inputs take different routes (and different K)
        torch.manual_seed(seed)
        xi = images(1)
        with torch.no_grad():
            ref = block(xi).numpy()
        out = session.run(None, {session.get_inputs()[0].name: xi.numpy()})[0]
        assert np.abs(out - ref).max() <= 1e-4


@pytest.mark.parametrize("name", ["topk", "bias", "shared", "soft", "variable", "shared+variable"])
def test_training_routing_equals_inference_routing_where_the_papers_define_it(name):
    """Soft top-K (eq. 6-8) and hard top-K (eq. 9) choose the same experts with the same weights; eq. 7
    (variable K) is one rule for both, except that K comes from the batch rank in training and from the
    calibrated thresholds at inference: images given the same K must get the same experts and weights."""
    block = make_block(ROUTERS[name], seed=3)
    x = images(10)
    with torch.no_grad():
        r_eval = block.router(x)
        block.router.train()
        r_train = block.router(x)
    same_k = (r_eval.weights != 0).sum(1) == (r_train.weights != 0).sum(1)
    if not isinstance(block.router, VariableKRouter):
        assert same_k.all()
    assert same_k.sum() >= 3  # enough images to compare
    assert torch.equal(r_eval.indices[same_k], r_train.indices[same_k])
    assert torch.allclose(r_eval.weights[same_k], r_train.weights[same_k], atol=1e-6)


def test_shared_expert_runs_for_every_image_and_takes_one_of_the_k_slots():
    block = make_block({"shared": True}).train()
    assert block.shared and block.top_k == 1 and block.experts.num_experts == 5 and block.experts.kernel_sizes[-1] == 3
    block(images(6)).sum().backward()
    shared_pw = block.experts.pw_weight.grad[4]
    assert shared_pw.abs().sum() > 0  # the shared expert learns from every batch
    with pytest.raises(ValueError, match="K must be >= 2"):
        ESMoE(8, 8, 4, 1, options=MoEOptions(shared=True))


def test_soft_mixture_runs_every_expert_with_softmax_weights():
    block = make_block({"router": "soft"})
    with torch.no_grad():
        routing = block.router(images(3))
    assert block.top_k == block.num_experts == 4 and block.router.all_experts
    assert torch.allclose(routing.dense, routing.logits.softmax(-1))


def test_variable_k_follows_eq5_by_rank_in_training():
    score = torch.tensor([5.0, 1.0, 9.0, 3.0, 7.0, 0.0, 2.0, 8.0, 4.0, 6.0])
    k = k_by_rank(score, P)  # 10 images: top 1 gets 3, next 2 get 2, next 3 get 1, last 4 get 0
    assert k[score.argsort(descending=True)].tolist() == [3, 2, 2, 1, 1, 1, 0, 0, 0, 0]
    block = make_block({"k_dist": list(P)}).train()
    x = images(10)
    block(x)
    used = (block.last_routing.weights != 0).sum(1)
    assert used.tolist() == k_by_rank(complexity_score(x), P).tolist()


def test_variable_k_thresholds_calibrated_in_training_give_p_at_batch_1():
    block = make_block({"k_dist": list(P)}).train()
    for _ in range(300):
        block(images(16))
    block.eval()
    counts = np.zeros(len(P))
    torch.manual_seed(123)  # held-out inputs, one at a time
    with torch.no_grad():
        for _ in range(1000):
            block(images(1))
            counts[int((block.last_routing.weights != 0).sum())] += 1
    assert np.abs(counts / counts.sum() - np.array(P)).max() <= 0.05, counts / counts.sum()


def test_capacity_drops_over_capacity_assignments_in_training_only():
    indices = torch.tensor([[0, 1], [0, 2], [0, 3], [0, 1]])  # expert 0 is everyone's first choice
    weights = torch.full((4, 2), 0.5)
    kept, dropped = apply_capacity(indices, weights, num_experts=4, factor=1.0)  # capacity ceil(4*2/4) = 2
    assert kept[:, 0].tolist() == [0.5, 0.5, 0.0, 0.0]  # images 3 and 4 lose expert 0 (first come, first served)
    assert kept[:, 1].tolist() == [0.5, 0.5, 0.5, 0.5]  # second choices: expert 1 twice, 2 once, 3 once
    assert dropped.item() == pytest.approx(2 / 8)
    block = make_block({"capacity": 0.5}).train()
    block(images(8))
    assert block.last_routing.dropped > 0
    assert (block.last_routing.dense > 0).sum(0).max() <= math.ceil(0.5 * 8 * 2 / 4)
    block.eval()
    with torch.no_grad():
        block(images(8))
    assert block.last_routing.dropped is None and (block.last_routing.weights != 0).all()


def test_ema_gets_a_copy_of_the_router_state():
    model = torch.nn.Sequential(ESMoE(8, 8, 4, 2, options=MoEOptions(k_dist=P, balance="bias")))
    ema = copy.deepcopy(model)
    model.train()(images(8))
    step_routers(model, ema, 0.0)
    assert torch.equal(ema[0].router.k_thresholds, model[0].router.k_thresholds)
    assert model[0].router.k_thresholds.abs().sum() > 0
    assert torch.equal(ema[0].router.selection_bias, model[0].router.selection_bias)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"router": "switch"}, "choose topk, soft"),
        ({"shared": "yes"}, "true or false"),
        ({"k_dist": [0.5, 0.6]}, "must sum to 1"),
        ({"k_dist": [1.0]}, "at least 2"),
        ({"k_dist": [0.5, -0.5, 1.0]}, "non-negative"),
        ({"capacity": 0}, "positive factor"),
        ({"router": "soft", "capacity": 1.0}, "do not apply"),
        ({"k_dist": [0.2] * 5}, None),  # valid section, but k_max = 4 > E = 3 in the zoo's P3 layer
        ("shared", "must be a mapping"),
    ],
)
def test_bad_moe_sections_fail_with_one_readable_line(options, match):
    if match is None:
        MoEOptions.from_yaml(options)
        with pytest.raises(ValueError, match="layer 6 ESMoE .*k_dist allows up to 4 experts but the layer has E=3"):
            build_detect(zoo_dict(**options))
        return
    with pytest.raises(ValueError, match=match):
        MoEOptions.from_yaml(options)


def test_info_reports_active_params_and_rho_per_router():
    from types import SimpleNamespace

    from yolo_master.info import model_info

    rho = {}
    for name in ("topk", "shared", "soft", "variable"):
        model = SimpleNamespace(model=build_detect(zoo_dict(**ROUTERS[name])))
        rho[name] = float(model_info(model, 320).rsplit("rho ", 1)[1].split()[0])
    # soft runs all E experts; variable K runs E[k] = 1 of them on average, "shared" top-2 one routed expert
    # next to the shared one: the same routed FLOPs as variable K, over a larger total
    assert rho["soft"] > rho["topk"] > rho["variable"] > rho["shared"] > 0


@pytest.mark.slow
def test_training_with_every_option_logs_drops_and_saves_router_state(tmp_path, shapes_yaml):
    cfg = {k: v for k, v in YOLOMaster("n.yaml").model.yaml.items() if k not in {"yaml_file", "scale", "channels"}}
    cfg["scales"] = {"n": cfg["scales"]["n"]}
    cfg["moe"] = {"shared": True, "k_dist": list(P), "capacity": 1.0, "balance": "bias", "bias_decay": "linear"}
    path = tmp_path / "options-n.yaml"
    path.write_text(yaml.safe_dump(cfg))
    args = [f"data={shapes_yaml}", "epochs=1", "imgsz=64", "batch=8", "workers=0", f"project={tmp_path}", "name=run"]
    proc = run_cli("train", f"model={path}", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "run" / "routing.csv").open()))
    assert {r["layer"] for r in rows} == {"3", "6", "9"} and all("dropped" in r for r in rows)
    ckpt = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=False)
    blocks = [m for m in (ckpt["ema"] or ckpt["model"]).modules() if isinstance(m, ESMoE)]
    assert all(b.shared and b.router.k_dist == P and b.router.k_thresholds.abs().sum() > 0 for b in blocks)
    assert all(isinstance(b.router, VariableKRouter) and b.options.capacity == 1.0 for b in blocks)
    last = tmp_path / "run" / "weights" / "last.pt"
    proc = run_cli("export", f"model={last}", "format=onnx", "imgsz=64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_benchmark_balances_routes_as_a_trained_router_would():
    """The training-step benchmark spreads a batch over every expert (B*K/E images each, +-1): a fresh
    gate would send every image to the same K experts and time one route instead of the model."""
    from copy import deepcopy

    from yolo_master.benchmark import balance_routes
    from yolo_master.nn.block import moe_layers

    net = deepcopy(YOLOMaster("n.yaml").model).train()
    balance_routes(net)
    net(torch.rand(8, 3, 64, 64))
    for layer in moe_layers(net):
        counts = torch.bincount(layer.last_routing.indices.flatten(), minlength=layer.num_experts)
        assert counts.max() - counts.min() <= 1 and counts.sum() == 8 * layer.top_k
