"""Export keeps the hard routing in the graph: graph content per strategy, parity with PyTorch, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import each_route_in_turn, run_cli

from yolo_master import ESMoE, YOLOMaster
from yolo_master.export import inspect_onnx
from yolo_master.export.parity import force_route, run_onnx
from yolo_master.export.prepare import export_strategy
from yolo_master.nn.dispatch import GRAPH_STRATEGIES

ort = pytest.importorskip("onnxruntime")
SPARSE = GRAPH_STRATEGIES


def _force(block: ESMoE, experts: tuple[int, ...]) -> None:
    """Make ``block`` choose ``experts`` (in that order) for any input, keeping some input dependence."""
    force_route(block, experts, input_weight=0.01)


def _export_block(block: ESMoE, x: torch.Tensor, path) -> None:
    torch.onnx.export(block.eval(), x, str(path), dynamo=False, opset_version=17)


def _run(path, x: np.ndarray) -> np.ndarray:
    return run_onnx(path, x)[0]


@pytest.mark.parametrize("strategy", SPARSE)
def test_block_export_is_exact_for_every_combination(tmp_path, strategy):
    import onnx

    torch.manual_seed(0)
    block = ESMoE(16, 16, 4, 2, strategy=strategy).eval()
    with torch.no_grad():
        block.experts.bn_running_var.uniform_(0.5, 2.0)
        block.norm.running_mean.normal_(0, 0.3)
    x = torch.randn(1, 16, 12, 12)
    for combo in itertools.permutations(range(4), 2):
        _force(block, combo)
        path = tmp_path / f"{strategy}-{combo[0]}{combo[1]}.onnx"
        _export_block(block, x, path)
        onnx.checker.check_model(str(path))
        for seed in range(3):
            xi = torch.randn(1, 16, 12, 12, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                ref = block(xi).numpy()
            assert block.last_routing.indices[0].tolist() == list(combo)
            assert np.abs(_run(path, xi.numpy()) - ref).max() <= 1e-4


@pytest.mark.parametrize("strategy", SPARSE)
def test_graph_content_per_strategy(tmp_path, strategy):
    block = ESMoE(16, 16, 4, 2, strategy=strategy).eval()
    path = tmp_path / "b.onnx"
    _export_block(block, torch.randn(1, 16, 8, 8), path)
    report = inspect_onnx(path)
    assert report.has("TopK") and not report.has("Loop") and not report.has("NonZero")
    if strategy == "gather":
        assert report.dynamic_weight_convs == 2 and not report.has("If")  # depthwise + pointwise, per block
    if strategy == "branch":
        assert report.ops["If"] == 4
        for then_ops, else_ops in report.if_branch_ops:
            assert "Conv" in then_ops and else_ops == ["Identity"]  # an untaken branch does no expert work
    if strategy == "slice":
        assert report.dynamic_weight_convs == 0 and not report.has("If") and report.has("Range")
    if strategy == "slots":  # a depthwise and a pointwise convolution per slot, no data-dependent shape
        assert report.dynamic_weight_convs == 2 * 2 and not report.has("If") and not report.has("Range")
        assert len(report.constant_conv_shapes) == 2  # the gate's two; every expert weight is gathered


@pytest.mark.parametrize("strategy", ["slice", "dense", "masked"])
def test_tiled_depthwise_export_is_exact_and_has_no_kernel_above_the_tile(tmp_path, strategy):
    """``ExportFormat.depthwise_tile`` (LiteRT, ExecuTorch): the 7x7 and 9x9 experts exported as sums of
    convolutions by blocks of at most 5x5; the same function, every block a constant weight."""
    from yolo_master.export.prepare import traced_strategy

    torch.manual_seed(0)
    block = ESMoE(16, 16, 4, 2).eval()  # kernels 3, 5, 7, 9
    with torch.no_grad():
        block.experts.bn_running_var.uniform_(0.5, 2.0)
        block.norm.running_mean.normal_(0, 0.3)
    x = torch.randn(1, 16, 12, 12)
    for combo in [(2, 3), (3, 0), (1, 2)]:  # every large kernel, alone and with a small one
        _force(block, combo)
        with torch.no_grad():
            ref = block(x).numpy()
        path = tmp_path / f"{strategy}-{combo[0]}{combo[1]}.onnx"
        with traced_strategy(block, strategy, depthwise_tile=5):
            _export_block(block, x, path)
        assert np.abs(_run(path, x.numpy()) - ref).max() <= 1e-4, combo
        report = inspect_onnx(path)
        depthwise = [s for s in report.constant_conv_shapes if s[1] == 1 and s[2] > 1]
        assert depthwise and max(max(s[2:]) for s in depthwise) == 5, strategy
        assert report.dynamic_weight_convs == 0  # every block a constant
    assert block.strategy == "auto" and block.experts.depthwise_tile is None
    assert not [n for n in block.experts._buffers if "tile" in n]  # nothing left behind after the export


def test_k_equal_e_exports_the_static_graph(tmp_path):
    block = ESMoE(16, 16, 4, 4, strategy="slice").eval()
    path = tmp_path / "dense.onnx"
    x = torch.randn(1, 16, 8, 8)
    _export_block(block, x, path)
    report = inspect_onnx(path)
    assert not report.has("TopK") and report.dynamic_weight_convs == 0
    assert report.ops["Conv"] == 2 * 4 + 2  # every expert (static weights) + the two gate convs
    with torch.no_grad():
        assert np.abs(_run(path, x.numpy()) - block(x).numpy()).max() <= 1e-4


@pytest.mark.parametrize("strategy", ["slice", "gather", "branch", "slots"])
def test_static_batch_is_unrolled_exactly(tmp_path, strategy):
    torch.manual_seed(1)
    block = ESMoE(8, 8, 3, 2, strategy=strategy).eval()
    x = torch.randn(3, 8, 8, 8) * torch.tensor([0.1, 1.0, 10.0]).view(-1, 1, 1, 1)
    path = tmp_path / "b3.onnx"
    _export_block(block, x, path)
    with torch.no_grad():
        assert np.abs(_run(path, x.numpy()) - block(x).numpy()).max() <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("strategy", SPARSE)
def test_model_export_matches_pytorch_over_every_combination_of_every_layer(tmp_path, strategy):
    model = YOLOMaster("n.yaml")
    rng = np.random.default_rng(0)
    for blocks, chosen in each_route_in_turn(model):
        path = model.export(format="onnx", imgsz=64, strategy=strategy)
        net = model.model.float().eval()
        for _ in range(2):
            x = rng.random((1, 3, 64, 64), dtype=np.float32)
            with torch.no_grad():
                ref = net(torch.from_numpy(x))[0].numpy()
            assert [b.last_routing.indices[0].tolist() for b in blocks] == chosen
            assert np.abs(_run(path, x) - ref).max() <= 1e-4


@pytest.mark.slow
def test_exported_onnx_predicts_through_yolomaster(tmp_path, shapes_yaml):
    path = YOLOMaster("n.yaml").export(format="onnx", imgsz=64)
    image = sorted((shapes_yaml.parent / "images" / "val").glob("*.jpg"))[0]
    results = YOLOMaster(path).predict(str(image), imgsz=64, verbose=False)
    assert len(results) == 1 and results[0].boxes is not None


@pytest.mark.parametrize(
    "fmt,strategy,dynamic,match",
    [
        ("magic", None, False, "export to onnx, torchscript, engine, openvino, mnn, ncnn"),
        ("hailo", None, False, "format=hailo is not available for ES-MoE models: the Hailo SDK"),
        ("onnx", "select", False, "unknown export strategy"),
        ("onnx", "grouped", False, "unknown export strategy"),
        ("onnx", None, True, "dynamic=True cannot trace the sparse 'slice'"),
        ("engine", None, False, "needs an NVIDIA GPU"),
    ],
)
def test_export_requests_that_cannot_work_fail_early(fmt, strategy, dynamic, match):
    if fmt == "engine" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises((ValueError, RuntimeError), match=match):
        export_strategy(fmt, strategy, dynamic, has_moe=True)


def test_defaults_per_format_and_dense_dynamic():
    assert export_strategy("onnx", None, False, True) == "slice"
    assert export_strategy("torchscript", None, False, True) == "slice"
    assert export_strategy("onnx", "dense", True, True) == "dense"
    assert export_strategy("openvino", None, False, has_moe=False) is None  # stock models: Ultralytics decides


@pytest.mark.parametrize("spelling", [["format=engine"], ["--format", "engine"]])
def test_cli_engine_without_gpu_says_so_in_one_line(tmp_path, spelling):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run_cli("export", "model=n.yaml", *spelling, "--half", "batch=1", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "needs an NVIDIA GPU" in errors[0]


@pytest.mark.parametrize("strategy,dynamic_convs", [("gather", 2 * 3), ("slice", 0)])
def test_cli_export_traces_the_strategy_asked_for(tmp_path, strategy, dynamic_convs):
    proc = run_cli("export", "model=n.yaml", "format=onnx", "imgsz=64", f"strategy={strategy}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = inspect_onnx(tmp_path / "yolo-master-n.onnx")
    # gather: a depthwise and a pointwise convolution with gathered (graph-valued) weights per ES-MoE block
    assert report.ops["TopK"] >= 3 and report.dynamic_weight_convs == dynamic_convs  # slice also orders by TopK


@pytest.mark.slow
def test_torchscript_export_keeps_routing_and_matches(tmp_path):
    model = YOLOMaster("n.yaml")
    for b in (m for m in model.model.modules() if isinstance(m, ESMoE)):
        _force(b, (1, 0))
    path = model.export(format="torchscript", imgsz=64)
    scripted = torch.jit.load(path)
    graph = str(scripted.inlined_graph)
    assert graph.count("aten::topk") >= 3 and "aten::index_select" in graph  # routing traced, not baked in
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model.model.float().eval()(x)[0]
        out = scripted(x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max() + 1e-5  # relative: the output holds pixel coordinates


@pytest.mark.slow
def test_benchmark_cli_writes_a_table_with_ratios(tmp_path):
    proc = run_cli(
        "benchmark",
        "model=n.yaml",
        "compare=yolo12n.yaml",
        "imgsz=64",
        "runs=2",
        "warmup=1",
        "rounds=2",
        f"project={tmp_path}",
        "name=bench",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "bench" / "benchmark.md").read_text()
    assert "fastest of 2 interleaved rounds" in table
    log = proc.stdout + proc.stderr
    for what in ("ORT CPU", "OpenVINO CPU", "torch eager CPU", "training step"):  # every cell timed in both rounds
        assert sum(f"yolo12n.yaml {what}" in line and "(round 2 of 2)" in line for line in log.splitlines()) == 1
    rows = [line for line in table.splitlines() if line.startswith("| n.yaml") or line.startswith("| yolo12n")]
    # ratios of torch, ONNX Runtime, OpenVINO and the training step
    assert len(rows) == 2 and rows[0].count("| 1.00x |") == 4 and "n/a (no GPU/TensorRT)" in rows[0]
    assert (tmp_path / "bench" / "n_openvino_model" / "metadata.yaml").is_file()
    assert (tmp_path / "bench" / "n.onnx").is_file() and (tmp_path / "bench" / "benchmark.csv").is_file()


@pytest.mark.slow
def test_gpu_check_dry_run_exercises_every_path(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "gpu.md"
    proc = subprocess.run(
        [sys.executable, str(repo / "scripts" / "gpu_check.py"), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| yolo")]
    assert [r.split("|")[1].strip() for r in rows] == ["yolo-master-n", "yolo-master-esmoe-n", "yolo11n", "yolo12n"]


# ONNX ops TensorRT's parser supports (TensorRT 8.6 / 10 operator list) that an exported model may use.
TENSORRT_OPS = {
    "Add",
    "Cast",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Div",
    "Equal",
    "Expand",
    "Flatten",
    "Gather",
    "GatherElements",
    "GlobalAveragePool",
    "Greater",
    "Identity",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pad",
    "Range",
    "ReduceSum",
    "Reshape",
    "Resize",
    "ScatterElements",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Sub",
    "TopK",
    "Transpose",
    "Unsqueeze",
    "Where",
}


@pytest.mark.slow
def test_engine_default_graph_is_what_tensorrt_parses(tmp_path):
    """Everything up to the TensorRT builder: opset, supported ops, constant K, no data-dependent shapes."""
    import onnx

    strategy = export_strategy("onnx", "gather", False, True)  # what format=engine traces
    path = YOLOMaster("n.yaml").export(format="onnx", imgsz=64, strategy=strategy, opset=17)
    report = inspect_onnx(path)
    assert report.opset >= 13 and set(report.ops) <= TENSORRT_OPS, set(report.ops) - TENSORRT_OPS
    assert not report.has("If") and not report.has("Loop") and not report.has("NonZero") and not report.has("Range")
    graph = onnx.load(path).graph
    constants = {i.name for i in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    assert all(n.input[1] in constants for n in graph.node if n.op_type == "TopK")  # K is a constant
    assert report.dynamic_weight_convs == 6  # depthwise + pointwise per ES-MoE, weights gathered in the graph


@pytest.mark.parametrize("strategy", SPARSE)
def test_exported_graph_breaks_ties_like_pytorch(tmp_path, strategy):
    block = ESMoE(8, 8, 4, 2, strategy=strategy).eval()
    with torch.no_grad():
        block.router.logits.weight.zero_()
        block.router.logits.bias.copy_(torch.tensor([0.0, 1.0, 1.0, 1.0]))  # three-way tie for the top
    x = torch.randn(1, 8, 6, 6)
    path = tmp_path / "tie.onnx"
    _export_block(block, x, path)
    with torch.no_grad():
        ref = block(x).numpy()
    assert block.last_routing.indices[0].tolist() == [1, 2]
    assert np.abs(_run(path, x.numpy()) - ref).max() <= 1e-4
