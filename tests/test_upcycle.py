"""MoE-tuning (issue 8): an upcycled checkpoint predicts what the dense one did, trains, resumes, exports.

The FFN-MoE block is held to the dense FFN it came from and to a plain loop over experts; every
equivalence test has a twin that breaks one piece of the allocation and sees the difference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from torch import nn

from yolo_master.cli import main
from yolo_master.nn import ESMoE
from yolo_master.nn.cost import active_params
from yolo_master.nn.moe_ffn import FFNMoE
from yolo_master.upcycle import UpcycleError, upcycle
from yolo_master.upcycle.insert import graft_yaml, identity_init

TOL = 1e-4  # the bound on max |upcycled - dense| at step 0
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these models are tiny, and on a shared 2-core machine two busy-waiting OpenMP
    pools (ours and a neighbour's) made this file 20x slower (8 s vs 160 s measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trained_statistics(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms, as training would, and every FFN
    unit-gain weights (Ultralytics initialises them at std 0.02, small enough to hide a broken FFN)."""
    from yolo_master.nn.ffn_expansion import is_ffn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for ffn in [m for m in module.modules() if is_ffn(m)]:
            for conv in (ffn[0].conv, ffn[1].conv):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / conv.weight[0].numel() ** 0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return module


def _dense_ffn(c: int = 16, hidden: int = 32) -> nn.Sequential:
    from ultralytics.nn.modules import Conv

    torch.manual_seed(0)
    return _trained_statistics(nn.Sequential(Conv(c, hidden, 1), Conv(hidden, c, 1, act=False))).eval()


def _tensors(out) -> list[torch.Tensor]:
    if torch.is_tensor(out):
        return [out]
    out = list(out.values()) if isinstance(out, dict) else out
    return [t for o in out for t in _tensors(o)]


@torch.no_grad()
def _outputs(model: nn.Module, imgsz: int = 64, dtype=torch.float32) -> list[torch.Tensor]:
    """Every output tensor (decoded boxes, raw head maps, probabilities) for two fixed random images."""
    x = torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return _tensors(model.to(dtype).eval()(x.to(dtype)))


def _deviation(ref: list[torch.Tensor], out: list[torch.Tensor]) -> float:
    """Max ``|out - ref| / max(1, |ref|)``: absolute for scores, relative for pixel coordinates."""
    return max(((r - o).abs() / r.abs().clamp_min(1.0)).max().item() for r, o in zip(ref, out))


def _max_diff(a: nn.Module, b: nn.Module, imgsz: int = 64, dtype=torch.float32) -> float:
    return _deviation(_outputs(a, imgsz, dtype), _outputs(b, imgsz, dtype))


# ---------------------------------------------------------------- the block


@pytest.mark.parametrize("experts,split", [(4, 2), (2, 4), (3, 1), (1, 2), (1, 1)])
def test_ffn_moe_equals_the_dense_ffn_at_step0(experts, split):
    ffn = _dense_ffn()
    block = FFNMoE.from_dense(ffn, experts, split).eval()
    x = torch.randn(3, 16, 7, 9) * torch.tensor([0.1, 1.0, 10.0]).view(-1, 1, 1, 1)
    with torch.no_grad():
        assert (block(x) - ffn(x)).abs().max() <= 1e-5 * max(1.0, ffn(x).abs().max().item())
    routing = block.last_routing
    groups = routing.indices // split  # the copy each chosen expert came from
    assert (groups == groups[:, :1]).all(), "the k chosen experts must be the k partitions of one copy"
    assert (routing.indices % split).sort(dim=1).values.tolist() == [list(range(split))] * 3
    assert torch.allclose(routing.weights, torch.full_like(routing.weights, 1 / split))


def test_step0_routing_holds_in_training_mode_too():
    block = FFNMoE.from_dense(_dense_ffn(), 4, 2).train()
    block(torch.randn(4, 16, 5, 5))
    routing = block.last_routing
    assert (routing.indices // 2 == routing.indices[:, :1] // 2).all()
    assert torch.allclose(routing.weights, torch.full_like(routing.weights, 0.5))


def _untie(block: FFNMoE) -> None:
    with torch.no_grad():
        block.router.logits.weight.add_(torch.randn_like(block.router.logits.weight))
        block.router.logits.bias.add_(torch.randn_like(block.router.logits.bias))


def _swap_partitions(block: FFNMoE) -> None:
    with torch.no_grad():
        block.experts.w2.copy_(block.experts.w2.roll(1, dims=0))


def _no_compensation(block: FFNMoE) -> None:
    with torch.no_grad():
        block.experts.w2.div_(block.top_k)  # as if the 1/k routing weights were not compensated


def _unfolded_hidden_norm(block: FFNMoE) -> None:
    with torch.no_grad():
        block.experts.b1.zero_()


@pytest.mark.parametrize("corrupt", [_untie, _swap_partitions, _no_compensation, _unfolded_hidden_norm])
def test_a_broken_allocation_fails_the_equivalence(corrupt):
    ffn = _dense_ffn()
    block = FFNMoE.from_dense(ffn, 4, 2).eval()
    corrupt(block)
    x = torch.randn(8, 16, 7, 9)
    with torch.no_grad():
        assert (block(x) - ffn(x)).abs().max() > 1e-2


@pytest.mark.parametrize("batch", [1, 3])
def test_gathered_experts_equal_a_plain_loop(batch):
    block = FFNMoE.from_dense(_dense_ffn(), 3, 2).train()
    _untie(block)
    x = torch.randn(batch, 16, 6, 6)
    g = torch.Generator().manual_seed(batch)
    indices = torch.stack([torch.randperm(6, generator=g)[:2] for _ in range(batch)])
    weights = torch.rand(batch, 2, generator=g)
    bank = block.experts
    reference = torch.stack(
        [sum(weights[b, k] * bank.expert(int(indices[b, k]), x[b : b + 1])[0] for k in range(2)) for b in range(batch)]
    )
    assert torch.allclose(bank(x, indices, weights), reference, atol=1e-5)


def test_active_params_equal_the_dense_ffn_plus_the_gate():
    ffn = _dense_ffn(16, 32)
    block = FFNMoE.from_dense(ffn, 4, 2)
    dense = sum(p.numel() for p in ffn.parameters())
    gate = sum(p.numel() for p in block.router.parameters())
    # the hidden BatchNorm (weight + bias, 2 x 32) became one bias of 32
    assert active_params(block) == dense - 32 + gate
    assert sum(p.numel() for p in block.parameters()) == active_params(block) + 6 * block.experts.expert_params()


def test_block_exports_with_topk_and_no_control_flow(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from yolo_master.export import inspect_onnx

    block = FFNMoE.from_dense(_dense_ffn(), 4, 2).eval()
    _untie(block)
    x = torch.randn(3, 16, 8, 8) * torch.tensor([0.1, 1.0, 10.0]).view(-1, 1, 1, 1)
    path = tmp_path / "ffn.onnx"
    torch.onnx.export(block, x, str(path), dynamo=False, opset_version=17)
    report = inspect_onnx(path)
    assert report.has("TopK") and report.has("MatMul")
    assert not any(report.has(op) for op in ("Loop", "If", "NonZero"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = block(x).numpy()
    assert len(set(map(tuple, block.last_routing.indices.tolist()))) > 1  # the images took different experts
    assert np.abs(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0] - ref).max() <= 1e-4


# ---------------------------------------------------------------- ES-MoE insertion


def test_inserted_esmoe_is_the_identity_and_still_learns():
    block = ESMoE(16, 16, 4, 2)
    identity_init(block)
    x = torch.randn(4, 16, 8, 8, requires_grad=True)
    assert torch.equal(block.eval()(x), x)
    block.train()
    (block(x) * torch.randn_like(x)).sum().backward()
    assert block.norm.weight.grad.abs().sum() > 0 and block.norm.bias.grad.abs().sum() > 0
    with pytest.raises(UpcycleError, match="identity shortcut"):
        identity_init(ESMoE(16, 32, 4, 2))


def test_graft_inserts_the_zoo_blocks_and_shifts_every_index():
    from ultralytics.nn.tasks import yaml_model_load

    from yolo_master.zoo import load_model_yaml

    d, new_index, inserted = graft_yaml(yaml_model_load("yolo12n.yaml"), load_model_yaml("n.yaml"))
    rows = d["backbone"] + d["head"]
    assert inserted == [3, 6, 9] and [rows[i][2] for i in inserted] == ["ESMoE"] * 3
    assert new_index[2] == 2 and new_index[3] == 4 and new_index[21] == 24
    assert rows[13][0] == [-1, 9] and rows[16][0] == [-1, 6]  # the head reads the stages through their ES-MoE
    assert rows[24][0] == [17, 20, 23] and rows[24][2] == "Detect"


# ---------------------------------------------------------------- whole models


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """Dense checkpoints saved the way Ultralytics saves them (fp16), with trained-looking statistics."""
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("dense")
    paths = {}
    for cfg in ("yolo12n.yaml", "yolo12n-cls.yaml", "yolo11n.yaml"):
        torch.manual_seed(0)
        model = YOLO(cfg)
        _trained_statistics(model.model)
        paths[cfg] = root / cfg.replace(".yaml", ".pt")
        model.save(paths[cfg])
    return paths


def _load(path) -> nn.Module:
    from yolo_master import YOLOMaster

    return YOLOMaster(str(path)).model.float().eval()


@pytest.mark.parametrize(
    "cfg,to,layout,n_esmoe,n_ffn",
    [
        ("yolo12n.yaml", "n.yaml", "graft", 3, 8),
        ("yolo12n.yaml", None, "graft", 0, 8),
        ("yolo11n.yaml", "n.yaml", "graft", 3, 1),
        ("yolo12n-cls.yaml", "cls-n.yaml", "graft", 3, 8),
        ("yolo12n-cls.yaml", "cls-n.yaml", "target", 3, 8),
    ],
)
def test_upcycled_model_predicts_what_the_dense_one_did(tmp_path, dense, cfg, to, layout, n_esmoe, n_ffn):
    out, report = upcycle(dense[cfg], to=to, experts=4, split=2, layout=layout, out=tmp_path / "moe.pt")
    moe, base = _load(out), _load(dense[cfg])
    assert sum(isinstance(m, ESMoE) for m in moe.modules()) == n_esmoe
    assert sum(isinstance(m, FFNMoE) for m in moe.modules()) == n_ffn
    assert report.function_preserving and report.step0_max_diff <= TOL
    assert _max_diff(base, moe) <= TOL
    exact = _outputs(base, 32, torch.float64)  # float64 (small images: CPU float64 convolutions are slow)
    assert _deviation(exact, _outputs(moe, 32, torch.float64)) <= 1e-7  # the same function, not just close
    (da, _), (ma, mt) = report.dense_params, report.moe_params
    assert mt > ma and (ma - da) / da < 0.05  # Table 8: more total parameters, about the same active ones

    for corrupt in (_swap_partitions, _untie):  # and the comparison above would notice a broken allocation
        broken = _load(out)
        for block in [m for m in broken.modules() if isinstance(m, FFNMoE)][:2]:
            corrupt(block)
        assert _deviation(exact, _outputs(broken, 32, torch.float64)) > 1e-5


def test_a_model_rebuilt_from_the_checkpoint_yaml_takes_every_weight(tmp_path, dense):
    """What the trainer does with model=x-moe.pt: build from model.yaml, then load the weights."""
    from ultralytics.nn.tasks import torch_safe_load

    from yolo_master.models import TASK_MODELS

    out, _ = upcycle(dense["yolo12n.yaml"], to="n.yaml", out=tmp_path / "moe.pt")
    ckpt, _ = torch_safe_load(str(out), safe_only=True)  # every class on the safe-load allow-list
    assert ckpt["upcycle"]["experts"] == 4 and ckpt["model"].yaml["ffn_moe"]["split"] == 2
    moe = _load(out)
    rebuilt = TASK_MODELS["detect"](moe.yaml, nc=moe.yaml["nc"], verbose=False)
    rebuilt.load(moe)
    assert rebuilt.state_dict().keys() == moe.state_dict().keys()
    assert _max_diff(moe, rebuilt) == 0


def test_target_layout_reports_loaded_new_and_skipped_layers(tmp_path, dense):
    out, report = upcycle(dense["yolo12n.yaml"], to="n.yaml", layout="target", out=tmp_path / "t.pt")
    new = {i: module for i, module, _ in report.new}
    assert new == {3: "ESMoE", 6: "ESMoE", 9: "ESMoE", 14: "C3k2", 17: "C3k2", 20: "C3k2"}
    assert report.skipped == [(11, "A2C2f"), (14, "A2C2f"), (17, "A2C2f")]  # YOLO12's head vs the zoo's C3k2 head
    assert (24, 21, "Detect") in report.loaded and not report.function_preserving
    text = str(report)
    assert "skipped  dense layer 11 A2C2f" in text and "new      layer 14 C3k2" in text

    # the backbone is the dense one: its P5 output (dense layer 8 -> zoo layer 11) is unchanged
    base, moe = _load(dense["yolo12n.yaml"]), _load(out)
    seen = {}
    base.model[8].register_forward_hook(lambda m, i, o: seen.__setitem__("dense", o))
    moe.model[11].register_forward_hook(lambda m, i, o: seen.__setitem__("moe", o))
    _max_diff(base, moe)
    assert (seen["dense"] - seen["moe"]).abs().max() <= 1e-4


# ---------------------------------------------------------------- bad input


def _tiny_cls_yaml(tmp_path) -> Path:
    path = tmp_path / "tiny-cls.yaml"
    path.write_text(
        "nc: 3\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, Conv, [32, 3, 2]]\nhead:\n"
        "  - [-1, 1, Classify, [nc]]\n"
    )
    return path


@pytest.fixture(scope="module")
def odd_checkpoints(tmp_path_factory, dense):
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("odd")
    (root / "notes.pt").write_text("not a checkpoint")
    torch.save({"weights": torch.zeros(3)}, root / "tensors.pt")
    YOLO("yolo12s.yaml").save(root / "yolo12s.pt")
    YOLO(str(_tiny_cls_yaml(root))).save(root / "tiny.pt")
    return root


@pytest.mark.parametrize(
    "argv,match",
    [
        (["model=missing.pt"], "checkpoint 'missing.pt' not found"),
        (["model={odd}/notes.pt"], "is not a loadable Ultralytics checkpoint"),
        (["model={odd}/tensors.pt"], "holds no Ultralytics model"),
        (["model={dense}", "experts=0"], "experts must be >= 1"),
        (["model={dense}", "experts=2.5"], "experts must be an integer"),
        (["model={dense}", "split=0"], "split must be >= 1"),
        (["model={dense}", "split=3"], "split=3 must divide the hidden width"),
        (["model={dense}", "layout=sideways", "to=n.yaml"], "layout=sideways is not one of graft, target"),
        (["model={dense}", "to=cls-n.yaml"], "is a detect model but to=cls-n.yaml is a classify model"),
        (["model={dense}", "to=nope.yaml"], "unknown model 'nope.yaml'"),
        (["model={odd}/yolo12s.pt", "to=n.yaml", "layout=target"], "incompatible checkpoint: only 11% of its weights"),
        (["model={odd}/tiny.pt", "to=cls-n.yaml"], "incompatible checkpoint: the target puts an ES-MoE block after"),
        (["model={odd}/tiny.pt"], "nothing to upcycle"),
        (["model={dense}", "to=n.yaml", "epochs=3"], "upcycle takes"),
        (["model={dense}", "layout=target"], "layout=target needs a target"),
        (["model={dense}", "out={dense}"], "would overwrite the dense checkpoint"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, dense, odd_checkpoints, argv, match):
    argv = [a.format(odd=odd_checkpoints, dense=dense["yolo12n.yaml"]) for a in argv]
    assert main(["upcycle", *argv]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and match in errors[0], err[-2000:]
    assert "Traceback" not in err


def test_incompatible_checkpoint_in_a_real_process(tmp_path, odd_checkpoints):
    tiny = odd_checkpoints / "tiny.pt"
    proc = run_cli("upcycle", f"model={tiny}", "to=cls-n.yaml", cwd=tmp_path, timeout=300, env=ONE_THREAD)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "incompatible checkpoint" in errors[0], proc.stderr[-2000:]


# ---------------------------------------------------------------- the user's commands


@pytest.mark.slow
def test_upcycle_train_resume_and_export_from_the_cli(tmp_path, dense):
    ort = pytest.importorskip("onnxruntime")
    from yolo_master.data.shapes import generate

    src = tmp_path / "my_yolo12n.pt"
    src.write_bytes(dense["yolo12n.yaml"].read_bytes())
    proc = run_cli("upcycle", f"model={src}", "to=n.yaml", "experts=4", "split=2", cwd=tmp_path, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    moe = tmp_path / "my_yolo12n-moe.pt"
    assert moe.is_file() and "same predictions" in proc.stdout and "active / total" in proc.stdout

    data = generate(tmp_path / "data", train=16, val=8, imgsz=64, seed=0)
    args = ["train", f"model={moe}", f"data={data}", "epochs=2", "imgsz=64", "batch=8", "workers=0", "device=cpu"]
    args += ["plots=False", f"project={tmp_path}", "name=run"]
    killer = [sys.executable, str(Path(__file__).with_name("kill_at.py"))]
    proc = run_cli("SIGINT", "1", "1", *args, cwd=tmp_path, wrapper=killer, env=ONE_THREAD)  # Ctrl-C in epoch 2
    assert proc.returncode == 130, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "Transferred 741/747 items" in out  # everything but the 80-class head rows (the data has 5 classes)
    last = tmp_path / "run" / "weights" / "last.pt"
    routing = (tmp_path / "run" / "routing.csv").read_text()
    assert ",8.m.0.0.mlp," in routing and ",3," in routing  # FFN-MoE and ES-MoE layers both reported

    proc = run_cli("train", "resume=True", f"model={last}", cwd=tmp_path, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resuming training" in proc.stdout + proc.stderr

    proc = run_cli("export", f"model={last}", "format=onnx", "imgsz=64", cwd=tmp_path, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from yolo_master.export import inspect_onnx

    onnx_path = last.with_suffix(".onnx")
    graph = inspect_onnx(onnx_path)
    assert graph.ops["TopK"] >= 3 + 8 and not graph.has("Loop")  # routing of every MoE layer kept in the graph
    net = _load(last)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for seed in range(3):
        x = np.random.default_rng(seed).random((1, 3, 64, 64), dtype=np.float32)
        with torch.no_grad():
            ref = net(torch.from_numpy(x))[0].numpy()
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        # absolute on scores, relative on pixel boxes (float32 resolves ~3e-5 at a few hundred pixels)
        assert (np.abs(got - ref) / np.maximum(np.abs(ref), 1.0)).max() <= 1e-4
