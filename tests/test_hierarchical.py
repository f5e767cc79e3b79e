"""HiMoE (hierarchical scene / instance routing): a plain loop of Algorithm 1 as reference, compute, export, CLI."""

from __future__ import annotations

import copy
import csv
import math
import pickle

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli

import yolo_master.nn.hierarchical as hierarchical
from yolo_master.export.parity import ort_session
from yolo_master.nn.cost import active_params
from yolo_master.nn.experts import ExpertBank
from yolo_master.nn.hierarchical import HiMoE

HIMOE_YAML = REPO / "cfg" / "detect" / "yolo-master-himoe.yaml"


def make_block(c1: int = 8, c2: int = 8, seed: int = 0, **kwargs) -> HiMoE:
    """A block whose images choose different groups and whose BatchNorms are not the identity."""
    torch.manual_seed(seed)
    block = HiMoE(c1, c2, **kwargs)
    with torch.no_grad():
        block.router.logits.weight.mul_(30.0)  # make the group choice depend strongly on the image
        block.instance.weight.mul_(3.0)
        block.experts.bn_running_mean.normal_(0, 0.5)
        block.experts.bn_running_var.uniform_(0.5, 2.0)
        block.experts.bn_weight.normal_(1, 0.2)
        block.norm.running_mean.normal_(0, 0.5)
        block.norm.running_var.uniform_(0.5, 2.0)
    return block


def images(batch: int, c: int = 8, size: int = 5, seed: int = 0) -> torch.Tensor:
    """Random maps with a different mean per image and channel, so that GAP (the scene) differs."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, c, size, size, generator=gen) + torch.randn(batch, c, 1, 1, generator=gen)


def reference_routing(block: HiMoE, x: torch.Tensor):
    """Algorithm 1 written out: per image its K_s best groups, per location the top-K experts of that
    pool with ``w_k = e_k / sum_{j in top-K} e_j`` from the full instance softmax ``e``.

    Returns the pools (expert lists per image) and ``{(image, row, col): [(expert, weight), ...]}``.
    """
    b, _, h, w = x.shape
    per = block.num_experts // block.groups
    scene = block.router.gate(x)
    g = torch.softmax(scene / block.tau_s, -1)
    inst = block.instance(torch.cat([x, g[:, :, None, None].expand(-1, -1, h, w)], 1)) / block.tau_i
    pools, routes = [], {}
    for i in range(b):
        groups = sorted(range(block.groups), key=lambda j: -scene[i, j].item())[: block.group_k]
        pool = [j * per + q for j in groups for q in range(per)]
        pools.append(pool)
        for r in range(h):
            for c in range(w):
                e = torch.softmax(inst[i, :, r, c], 0)
                top = sorted(pool, key=lambda k: -e[k].item())[: block.top_k]
                total = sum(e[k] for k in top)
                routes[i, r, c] = [(k, e[k] / total) for k in top]
    return pools, routes


def expert_outputs(block: HiMoE, x: torch.Tensor, pools) -> dict:
    """``{(image, expert): output}``; each expert runs on the images whose pool holds it (in training its
    BatchNorm uses the statistics of exactly those images)."""
    outputs = {}
    for e in range(block.num_experts):
        rows = [i for i, pool in enumerate(pools) if e in pool]
        if rows:
            outputs.update({(i, e): y for i, y in zip(rows, block.experts.expert(e, x[rows]))})
    return outputs


def loop_reference(block: HiMoE, x: torch.Tensor) -> torch.Tensor:
    """Per image, per location: the sum over its top-K experts of ``w * expert(x)``, then norm and shortcut."""
    pools, routes = reference_routing(block, x)
    outputs = expert_outputs(block, x, pools)
    out = torch.zeros(x.shape[0], block.c2, x.shape[2], x.shape[3])
    for (i, r, c), chosen in routes.items():
        for e, w in chosen:
            out[i, :, r, c] += w * outputs[i, e][:, r, c]
    y = block.norm(out)
    return x + y if block.add else y


@pytest.fixture(params=["eager", "graph"])
def path(request, monkeypatch):
    """Run the eval forward eagerly, or as it is traced for export (the graph form, run eagerly)."""
    if request.param == "graph":
        monkeypatch.setattr(hierarchical, "is_tracing", lambda: True)
    return request.param


def test_eval_output_of_an_image_does_not_depend_on_its_batch(path):
    block = make_block().eval()
    x = images(3)
    with torch.no_grad():
        batch = block(x)
        groups = {tuple(r) for r in block.last_routing.indices.tolist()}
        for i in range(3):
            assert (block(x[i : i + 1]) - batch[i : i + 1]).abs().max() <= 1e-5
    assert len(groups) > 1  # the batch really mixes scene routes


@pytest.mark.parametrize("c2", [8, 12])
def test_block_matches_the_loop_reference_in_eval(path, c2):
    block = make_block(c2=c2).eval()
    x = images(3)
    with torch.no_grad():
        out, ref = block(x), loop_reference(block, x)
    pools, _ = reference_routing(block, x)
    assert block.last_routing.indices.tolist() == pools
    assert len({tuple(p) for p in pools}) > 1
    assert (out - ref).abs().max() <= 1e-5


def test_block_matches_the_loop_reference_in_training():
    block = make_block(num_experts=6, top_k=3, groups=3, group_k=2, tau_s=0.7, tau_i=2.0).train()
    x = images(4)
    with torch.no_grad():  # train-mode BatchNorms: statistics of the images each expert runs on
        out, ref = block(x), loop_reference(block, x)
    assert len({tuple(r) for r in block.last_routing.indices.tolist()}) > 1
    assert (out - ref).abs().max() <= 1e-5


def test_last_routing_summarises_the_per_location_weights():
    block = make_block().eval()
    x = images(3)
    with torch.no_grad():
        block(x)
        pools, routes = reference_routing(block, x)
    routing = block.last_routing
    dense = torch.zeros(3, block.num_experts)
    for (i, _, _), chosen in routes.items():
        for e, w in chosen:
            dense[i, e] += w / 25
    assert torch.allclose(routing.dense, dense, atol=1e-6)
    assert torch.allclose(routing.weights, dense.gather(1, torch.tensor(pools)), atol=1e-6)
    assert routing.logits.shape == (3, block.groups) and torch.allclose(routing.dense.sum(1), torch.ones(3))


def test_deepcopy_and_pickle_after_a_training_forward():
    block = make_block().train()
    block(images(2)).sum()  # leaves a pending loss with autograd history
    clone = copy.deepcopy(block)
    assert clone.last_routing is None and clone.take_aux_loss() is None
    restored = pickle.loads(pickle.dumps(block))
    assert restored.last_routing is None
    x = images(2, seed=1)
    block.eval(), restored.eval(), clone.eval()
    with torch.no_grad():
        assert torch.equal(block(x), restored(x)) and torch.equal(block(x), clone(x))


def _counting(monkeypatch) -> dict[int, int]:
    """Count, per expert, the images its convolutions run on."""
    counts: dict[int, int] = {}
    original = ExpertBank.expert

    def expert(self, e, x):
        counts[e] = counts.get(e, 0) + x.shape[0]
        return original(self, e, x)

    monkeypatch.setattr(ExpertBank, "expert", expert)
    return counts


@pytest.mark.parametrize("mode", ["train", "eval", "graph"])
def test_only_the_chosen_groups_experts_are_computed(monkeypatch, mode):
    if mode == "graph":
        monkeypatch.setattr(hierarchical, "is_tracing", lambda: True)
    block = make_block().train(mode == "train")
    x = images(3)
    with torch.no_grad():
        pools, _ = reference_routing(block, x)
    counts = _counting(monkeypatch)
    with torch.no_grad():
        block(x)
    per_image = block.group_k * block.num_experts // block.groups
    assert sum(counts.values()) == 3 * per_image == 12  # K_s * N_e / N_s experts per image, of N_e = 8
    assert {e: counts.get(e, 0) for e in range(8)} == {e: sum(e in p for p in pools) for e in range(8)}


def test_flops_count_only_the_chosen_groups():
    import thop

    x = torch.randn(1, 8, 16, 16)
    macs = {}
    for group_k in (1, 2):
        torch.manual_seed(0)
        macs[group_k] = thop.profile(HiMoE(8, 8, group_k=group_k), inputs=[x], verbose=False)[0]
    one_group = 8 * 16 * 16 * ((3 * 3 + 2 + 8) + (5 * 5 + 2 + 8))  # kernels 3 and 5: depthwise + BN + pointwise
    assert macs[2] - macs[1] == pytest.approx(one_group)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_experts": 6}, r"num_experts=6 cannot be split into groups=4"),
        ({"group_k": 5}, r"group_k=5 exceeds groups=4"),
        ({"top_k": 5}, r"top_k=5 exceeds the 4 experts of the 2 chosen groups"),
        ({"top_k": 0}, r"top_k \(K\) must be >= 1"),
        ({"groups": 0}, r"groups \(N_s\) must be >= 1"),
        ({"num_experts": 8.0}, r"num_experts \(N_e\) must be an integer"),
        ({"tau_s": 0}, r"tau_s must be a finite number > 0"),
        ({"tau_i": float("nan")}, r"tau_i must be a finite number > 0"),
        ({"balance_weight": -0.1}, r"balance_weight must be a finite number >= 0"),
        ({"diversity_weight": "0.1"}, r"diversity_weight must be a finite number >= 0"),
        ({"kernel_sizes": (3, 4, 3, 5, 3, 5, 3, 5)}, "odd positive"),
        ({"kernel_sizes": (3, 5, 7)}, "one kernel size per expert"),
        ({"reduction": 0}, r"reduction must be >= 1"),
    ],
)
def test_bad_arguments_raise_one_readable_error(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        HiMoE(8, 8, **kwargs)
    message = str(info.value)
    assert message.startswith("HiMoE ") and "ESMoE" not in message and "\n" not in message


def test_a_bad_yaml_row_names_the_layer(tmp_path):
    from yolo_master import YOLOMaster

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "nc: 2\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, HiMoE, [16, 6, 2, 4, 2]]\n"
        "head:\n  - [[1], 1, Detect, [nc]]\n"
    )
    with pytest.raises(ValueError, match="layer 1 HiMoE .*cannot be split"):
        YOLOMaster(str(cfg))


def _js(p: torch.Tensor) -> torch.Tensor:
    mix = p.mean(0)
    entropy = lambda q: -(q * q.log()).sum(-1)  # noqa: E731
    return entropy(mix) - entropy(p).mean()


def test_aux_loss_is_the_weighted_balance_and_diversity_terms():
    block = make_block(balance_weight=0.01, diversity_weight=0.001).train()
    x = images(3)
    with torch.no_grad():
        block(x)
        aux = block.take_aux_loss()
        pools, routes = reference_routing(block, x)
        counts = torch.zeros(block.num_experts)
        for chosen in routes.values():
            for e, _ in chosen:
                counts[e] += 1
        f = counts / counts.sum()
        balance = ((f - 1 / block.num_experts) ** 2).sum()  # sec. 3.5, f_k: share of routed assignments
        outputs = expert_outputs(block, x, pools)
        js = [_js(torch.stack([outputs[i, e].mean((1, 2)) for e in pool]).softmax(-1)) for i, pool in enumerate(pools)]
        diversity = -torch.stack(js).mean()
    assert aux.item() == pytest.approx(0.01 * balance.item() + 0.001 * diversity.item(), rel=1e-4, abs=1e-7)
    assert 0 < -diversity <= math.log(4)


def test_aux_loss_is_differentiable_and_reaches_both_routers():
    block = make_block().train()
    block(images(3))
    aux = block.take_aux_loss()
    assert aux is not None and torch.isfinite(aux) and block.take_aux_loss() is None  # handed over once
    aux.backward()
    for name, p in [
        ("scene", block.router.reduce.weight),
        ("scene", block.router.logits.weight),
        ("instance", block.instance.weight),
    ]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert block.experts.pw_weight.grad.abs().sum() > 0  # the diversity term trains the experts


def test_zero_lambdas_turn_the_aux_loss_off():
    block = make_block(balance_weight=0, diversity_weight=0).train()
    block(images(2))
    assert block.take_aux_loss().item() == 0.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_router_logits_fail_with_the_layer_named(bad):
    block = make_block().train()
    block.i = 3
    with torch.no_grad():
        block.instance.bias[1] = bad
    with pytest.raises(FloatingPointError, match="HiMoE layer 3 got non-finite router logits"):
        block(images(1))


def test_repr_and_active_params():
    block = HiMoE(16, 16)
    text = repr(block)
    assert "num_experts=8" in text and "groups=4" in text and "group_k=2" in text and "kernels=3,5,3,5" in text
    experts = sum(block.experts.expert_params(e) for e in range(8))
    assert active_params(block) == sum(p.numel() for p in block.parameters()) - experts // 2


# ---- export -------------------------------------------------------------------------------------------


def _check_onnx(path) -> None:
    onnx = pytest.importorskip("onnx")

    from yolo_master.export import inspect_onnx

    onnx.checker.check_model(str(path))
    report = inspect_onnx(path)
    assert not report.has("If") and not report.has("Loop") and not report.has("NonZero")
    assert report.has("TopK") and report.has("Range")  # routing kept in the graph, groups sliced


def _session(path):
    pytest.importorskip("onnxruntime")
    return ort_session(path)


def test_block_onnx_export_matches_pytorch_for_different_groups(tmp_path):
    block = make_block(c1=8, c2=8).eval()
    path = tmp_path / "himoe.onnx"
    torch.onnx.export(block, images(3), str(path), dynamo=False, opset_version=17)
    _check_onnx(path)
    session = _session(path)
    seen = set()
    for seed in range(4):
        x = images(3, seed=seed)
        with torch.no_grad():
            ref = block(x).numpy()
        seen |= {tuple(r) for r in block.last_routing.indices.tolist()}
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert np.abs(out - ref).max() <= 1e-4
    assert len(seen) > 2  # several different group choices went through the same graph


def test_model_onnx_export_matches_pytorch_for_different_groups(tmp_path):
    from yolo_master import YOLOMaster

    net = YOLOMaster(str(HIMOE_YAML)).model.float().eval()
    blocks = [m for m in net.modules() if isinstance(m, HiMoE)]
    assert len(blocks) == 3
    with torch.no_grad():
        for b in blocks:  # the group choice follows the image
            b.router.reduce.weight.mul_(30.0)
            b.router.logits.weight.mul_(30.0)
    path = tmp_path / "model.onnx"
    torch.onnx.export(net, torch.zeros(1, 3, 64, 64), str(path), dynamo=False, opset_version=17)
    _check_onnx(path)
    session = _session(path)
    rng = np.random.default_rng(0)
    seen = set()
    for tint in range(4):  # red, green and blue images, and white stripes
        x = (rng.random((1, 3, 64, 64)) * 0.3).astype(np.float32)
        if tint < 3:
            x[:, tint] += 0.7
        else:
            x[:, :, ::4] = 1.0
        with torch.no_grad():
            ref = net(torch.from_numpy(x))[0].numpy()
        seen.add(tuple(tuple(b.last_routing.indices[0].tolist()) for b in blocks))
        out = session.run(None, {session.get_inputs()[0].name: x})[0]
        assert np.abs(out - ref).max() <= 1e-4
    assert len(seen) > 1


# ---- model and CLI --------------------------------------------------------------------------------------


def test_himoe_yaml_builds_at_n_and_feeds_routing_statistics():
    from yolo_master import YOLOMaster
    from yolo_master.engine.routing_stats import RoutingStats

    net = YOLOMaster(str(HIMOE_YAML)).model
    blocks = [m for m in net.modules() if isinstance(m, HiMoE)]
    assert [(b.c1, b.c2, b.num_experts, b.top_k, b.groups, b.group_k) for b in blocks] == [
        (64, 64, 8, 2, 4, 2),
        (128, 128, 8, 2, 4, 2),
        (128, 128, 8, 2, 4, 2),
    ]
    assert sum(p.numel() for p in net.parameters()) == 2_998_556
    net.train()(torch.rand(2, 3, 64, 64))
    stats = RoutingStats()
    stats.add(net)
    summary = stats.summary()
    assert set(summary) == {"3", "6", "9"}
    for selected, load in summary.values():
        assert len(load) == 8 and sum(load) == pytest.approx(1.0) and sum(selected) <= 4


@pytest.mark.slow
def test_cli_trains_the_himoe_yaml_and_writes_routing_csv(tmp_path):
    from yolo_master.data.shapes import generate

    data = generate(tmp_path / "data", train=16, val=8, imgsz=64, seed=0)
    proc = run_cli(
        "train",
        f"model={HIMOE_YAML}",
        f"data={data}",
        "epochs=1",
        "imgsz=64",
        "batch=8",
        "device=cpu",
        "workers=0",
        "plots=False",
        f"project={tmp_path}",
        "name=train",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = list(csv.DictReader((tmp_path / "train" / "routing.csv").open()))
    assert {r["layer"] for r in rows} == {"3", "6", "9"} and len(rows) == 3 * 8
    for layer in ("3", "6", "9"):
        assert sum(float(r["load"]) for r in rows if r["layer"] == layer) == pytest.approx(1.0, abs=1e-3)


def test_dynamic_batch_export_of_a_himoe_model_is_refused_in_one_line(tmp_path):
    from yolo_master import YOLOMaster
    from yolo_master.zoo import cfg_dir

    model = YOLOMaster(cfg_dir() / "detect" / "yolo-master-himoe.yaml")
    with pytest.raises(ValueError, match="cannot trace a HiMoE graph"):
        model.export(format="onnx", dynamic=True, imgsz=64)
