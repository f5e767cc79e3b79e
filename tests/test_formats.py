"""Every export format of the table in ``export/formats.py``, checked the way a user would meet it.

One ES-MoE model is made route-sensitive first (``export/parity.py``): BatchNorm statistics from real
images, so features keep their scale, and gates steered so that two inputs take different experts in
every layer. Each format is exported once and run in its own runtime (through Ultralytics'
``AutoBackend``, as ``predict`` runs it) on both inputs: matching PyTorch on both means the graph follows
the gate; a graph with one route baked in would be off by ``wrong_route_error`` (asserted far above the
tolerance). Formats whose runtime does not run on Linux get a structural check of the file instead.
"""

from __future__ import annotations

from collections import Counter
from importlib.util import find_spec

import numpy as np
import pytest
import torch
from conftest import run_cli

from yolo_master import ESMoE, YOLOMaster
from yolo_master.export.formats import DENSE_ROUTED, FORMATS, UNAVAILABLE
from yolo_master.export.parity import calibrate_norms, steer_apart, wrong_route_error
from yolo_master.export.prepare import export_form, export_strategy

pytestmark = pytest.mark.slow
TOLERANCE = 1e-3  # relative to the largest output value (the bar for every format)
RUNS_HERE = [  # the TensorFlow family is marked: scripts/test.sh runs it in its own environment
    pytest.param(f, marks=pytest.mark.tensorflow) if spec.own_environment else f
    for f, spec in FORMATS.items()
    if spec.runtime == "runs here" and not spec.quantized
]
QUANTIZED = [f for f, spec in FORMATS.items() if spec.runtime == "runs here" and spec.quantized]
QUANTIZED_TOLERANCE = 0.15  # W8A16 QNN: 0.05-0.07 of the largest output measured, the box coordinates


def _needs(fmt: str) -> None:
    missing = [m for m in FORMATS[fmt].needs if find_spec(m) is None]
    if missing:
        pytest.skip(f"format={fmt} needs {', '.join(missing)} ({FORMATS[fmt].install})")


@pytest.fixture(scope="module")
def probe():
    """``(model, xa, xb)``: a YOLOMaster whose every ES-MoE layer routes ``xa`` and ``xb`` differently."""
    torch.manual_seed(0)
    model = YOLOMaster("n.yaml")
    net = model.model.float()
    g = torch.Generator().manual_seed(0)
    calibrate_norms(net, torch.rand(8, 3, 64, 64, generator=g))
    xa, xb = torch.rand(1, 3, 64, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    steer_apart(net, xa, xb)
    blocks = [b for b in net.modules() if isinstance(b, ESMoE)]
    routes = []
    for x in (xa, xb):
        with torch.no_grad():
            net(x)
        routes.append([sorted(b.last_routing.indices[0].tolist()) for b in blocks])
    assert all(a != b for a, b in zip(*routes))  # every layer takes different experts for the two inputs
    assert wrong_route_error(net, xa, xb) > 20 * TOLERANCE  # a baked-in route could not pass
    return model, xa, xb


def _raw(backend, x: torch.Tensor) -> torch.Tensor:
    y = backend(x)
    y = y[0] if isinstance(y, (list, tuple)) else y
    return y if torch.is_tensor(y) else torch.as_tensor(np.asarray(y))


@pytest.mark.parametrize("fmt", RUNS_HERE)
def test_format_runs_in_its_own_runtime_and_follows_the_routing(fmt, probe, tmp_path, monkeypatch, shapes_yaml):
    from ultralytics.nn.autobackend import AutoBackend

    _needs(fmt)
    model, xa, xb = probe
    monkeypatch.chdir(tmp_path)
    path = model.export(format=fmt, imgsz=64)
    backend = AutoBackend(path, device=torch.device("cpu"), verbose=False)
    net = model.model.float().eval()
    for x in (xa, xb):
        with torch.no_grad():
            ref = net(x)[0]
        got = _raw(backend, x)
        assert got.shape == ref.shape
        assert (got - ref).abs().max() <= TOLERANCE * ref.abs().max(), fmt
    image = sorted((shapes_yaml.parent / "images" / "val").glob("*.jpg"))[0]
    results = YOLOMaster(path).predict(str(image), imgsz=64, verbose=False)
    assert len(results) == 1 and results[0].boxes is not None
    if FORMATS[fmt].depthwise_tile and fmt in {"litert", "tflite", "tfjs"}:  # the 7x7 / 9x9 experts went in tiles
        large = Counter(
            m.kernel_size[0] for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 5
        )  # the others' large depthwise kernels (YOLOv12 attention's 7x7 position encoding) stay as they are
        assert large and set(large) == {7}
        kernels = _litert_depthwise_kernels(path)
        assert max(kernels) == 7 and kernels.count(7) == large[7] and 5 in kernels


def _litert_depthwise_kernels(path) -> list[int]:
    """The larger side of every depthwise convolution's kernel in a LiteRT model (filters are 1 x kh x kw x C)."""
    from pathlib import Path

    from ai_edge_litert.interpreter import Interpreter

    file = Path(path) if Path(path).is_file() else next(Path(path).glob("*.tflite"))
    interpreter = Interpreter(str(file))
    shapes = {t["index"]: t["shape"] for t in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] == "DEPTHWISE_CONV_2D"]
    return [int(max(shapes[op["inputs"][1]][1:3])) for op in ops]


@pytest.mark.parametrize("fmt", QUANTIZED)
def test_quantized_format_runs_in_its_own_runtime_and_follows_the_routing(
    fmt, probe, tmp_path, monkeypatch, shapes_yaml
):
    """A quantized model cannot match PyTorch to 1e-3, and a baked-in route is only ~0.14 off: so each
    input's output must be within quantization error of PyTorch's *and* clearly closer, on average over
    its values, to the output of its own route than to that of the other input's route."""
    import onnx
    from ultralytics.nn.autobackend import AutoBackend

    from yolo_master.export.parity import right_and_wrong_route

    _needs(fmt)
    model, xa, xb = probe
    monkeypatch.chdir(tmp_path)
    path = model.export(format=fmt, imgsz=64, data=str(shapes_yaml))
    # again, as a user re-exporting does: ONNX Runtime refuses to write over a QNN context model
    assert model.export(format=fmt, imgsz=64, data=str(shapes_yaml)) == path
    nodes = [n.op_type for n in onnx.load(path, load_external_data=False).graph.node]
    assert nodes == ["EPContext"]  # the whole graph is in one compiled QNN context, nothing left to the CPU
    backend = AutoBackend(path, device=torch.device("cpu"), verbose=False)
    net = model.model.float().eval()
    for x, other in ((xa, xb), (xb, xa)):
        right, wrong = right_and_wrong_route(net, other, x)
        got = _raw(backend, x)
        assert got.shape == right.shape
        assert (got - right).abs().max() <= QUANTIZED_TOLERANCE * right.abs().max(), fmt
        assert (got - right).abs().mean() <= 0.5 * (got - wrong).abs().mean(), fmt  # measured 0.15-0.26
    image = sorted((shapes_yaml.parent / "images" / "val").glob("*.jpg"))[0]
    results = YOLOMaster(path).predict(str(image), imgsz=64, verbose=False)
    assert len(results) == 1 and results[0].boxes is not None


@pytest.mark.tensorflow  # amd-quark pins onnx <= 1.22: it lives in the TensorFlow environment
def test_xilinx_model_picks_the_experts_pytorch_picks_with_its_routing_in_float(
    probe, tmp_path, monkeypatch, shapes_yaml
):
    """VINT8 (8-bit activations, power-of-two scales) moves the output more than a wrong route does: the
    same backbone without ES-MoE (nomoe-n) was 0.2-0.35 of the range off at most, 0.0007-0.0018 on
    average, and the output-distance test of the QNN format cannot tell routes apart. So the route is
    read where it is decided: the quantized graph's TopK outputs must be PyTorch's experts, in every
    layer, for both inputs (which take different experts everywhere), with the gate in float."""
    import onnx
    import onnxruntime as ort
    from ultralytics.nn.autobackend import AutoBackend

    _needs("xilinx")
    model, xa, xb = probe
    monkeypatch.chdir(tmp_path)
    path = model.export(format="xilinx", imgsz=64, data=str(shapes_yaml))
    quantized = onnx.load(str(next(tmp_path.glob("*_xilinx_model/*.onnx"))))
    graph = quantized.graph
    producer = {out: n for n in graph.node for out in n.output}
    topk = [n for n in graph.node if n.op_type == "TopK"]
    assert len(topk) == 3 and sum(n.op_type == "QuantizeLinear" for n in graph.node) > 100  # quantized, 3 gates
    gate = [n for n in graph.node if "/router/" in n.name and n.op_type != "GlobalAveragePool"]
    assert len(gate) >= 3 * 4  # per layer at least its layers, activation, logits and TopK
    for n in gate:  # the gate computes in float from its pooled input on: no dequantized input, weights included
        assert all(producer[i].op_type != "DequantizeLinear" for i in n.input if i in producer), n.name
    for n in topk:
        graph.output.append(onnx.helper.make_tensor_value_info(n.output[1], onnx.TensorProto.INT64, None))
    session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
    backend = AutoBackend(path, device=torch.device("cpu"), verbose=False)
    net = model.model.float().eval()
    blocks = [b for b in net.modules() if isinstance(b, ESMoE)]
    for x in (xa, xb):
        with torch.no_grad():
            ref = net(x)[0]
        wanted = [sorted(b.last_routing.indices[0].tolist()) for b in blocks]
        chosen = session.run([n.output[1] for n in topk], {session.get_inputs()[0].name: x.numpy()})
        assert [sorted(c.reshape(-1).tolist()) for c in chosen] == wanted
        got = _raw(backend, x)
        assert got.shape == ref.shape
        assert (got - ref).abs().mean() <= 0.01 * ref.abs().max()  # measured 0.0014-0.0035
    image = sorted((shapes_yaml.parent / "images" / "val").glob("*.jpg"))[0]
    results = YOLOMaster(path).predict(str(image), imgsz=64, verbose=False)
    assert len(results) == 1 and results[0].boxes is not None


def test_a_quantized_format_without_calibration_images_is_one_line(tmp_path):
    fmt = next(f for f, spec in FORMATS.items() if spec.quantized)
    proc = run_cli("export", "model=n.yaml", f"format={fmt}", "imgsz=64", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"format={fmt} is always quantized and calibrates on images: give data=" in proc.stderr


def test_int8_without_calibration_images_is_a_clear_error_in_python_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Ultralytics would otherwise reach for coco8 (a download)
    with pytest.raises(ValueError, match="int8=True calibrates on images: give data="):
        YOLOMaster("n.yaml").export(format="onnx", int8=True, imgsz=64)
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_coreml_package_keeps_the_routing_and_the_metadata(probe, tmp_path, monkeypatch):
    """Core ML runs on macOS only: check what the produced ``.mlpackage`` holds."""
    _needs("coreml")
    import coremltools as ct

    model, _, _ = probe
    monkeypatch.chdir(tmp_path)
    spec = ct.utils.load_spec(str(model.export(format="coreml", imgsz=64)))
    ops = []

    def walk(block):
        for op in block.operations:
            ops.append(op.type)
            for sub in op.blocks:
                walk(sub)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            walk(block)
    layers = sum(isinstance(m, ESMoE) for m in model.model.modules())
    assert ops.count("topk") >= layers  # each gate's top-K is in the graph
    image = spec.description.input[0].type.imageType
    assert (image.height, image.width) == (64, 64)
    assert [list(o.type.multiArrayType.shape) for o in spec.description.output] == [[1, 4 + 80, 84]]
    assert "names" in dict(spec.description.metadata.userDefined)


def test_deepx_model_keeps_the_routing_and_says_what_runs_on_the_cpu(probe, tmp_path, monkeypatch, shapes_yaml):
    """DEEPX's runtime needs its NPU: read the ``.dxnn`` instead. Its NPU graph comes first; the routing
    (a TopK per ES-MoE layer) is in the host-CPU subgraph, and the export log says so."""
    _needs("deepx")
    from ultralytics.utils import LOGGER

    from yolo_master.export.dxnn import read_partitions

    model, _, _ = probe
    monkeypatch.chdir(tmp_path)
    warnings = []
    monkeypatch.setattr(LOGGER, "warning", lambda msg, *a, **k: warnings.append(str(msg)))
    path = model.export(format="deepx", imgsz=64, data=str(shapes_yaml))
    parts = read_partitions(path)
    assert parts[0].device == "NPU"
    cpu_ops = sum((p.onnx_ops for p in parts if p.device == "CPU"), Counter())
    layers = sum(isinstance(m, ESMoE) for m in model.model.modules())
    assert cpu_ops["TopK"] == layers and cpu_ops["ScatterElements"] == layers
    assert any("format=deepx: npu_0 on the NPU; cpu_0 on the host CPU" in w for w in warnings)
    assert (tmp_path / path / "metadata.yaml").is_file()


def test_coreai_asset_keeps_the_routing_and_the_metadata(probe, tmp_path, monkeypatch):
    """Core AI runs on macOS 26 only: check the ``.aimodel`` asset's program and metadata."""
    _needs("coreai")
    import json

    from coreai.authoring import AIModelAsset

    model, _, _ = probe
    monkeypatch.chdir(tmp_path)
    path = model.export(format="coreai", imgsz=64)
    summary = AIModelAsset.load(path).summary()
    ops = dict(summary.operation_distribution)  # {"conv2d": 131, ...}
    layers = sum(isinstance(m, ESMoE) for m in model.model.modules())
    assert ops.get("argsort", 0) + ops.get("topk", 0) >= layers  # each gate's top-K is in the program
    assert ops.get("scatter_along_axis", 0) >= layers  # and the chosen experts' weights scattered by it
    assert ops["conv2d"] > 100
    assert [shape for _, shape in summary.function_inputs("main")] == ["NDArray (Float32, 1 × 3 × 64 × 64)"]
    assert [shape for _, shape in summary.function_outputs("main")] == ["NDArray (Float32, 1 × 84 × 84)"]
    meta = json.loads((tmp_path / path / "metadata.json").read_text())["creatorDefinedMetadata"]
    assert meta["imgsz"] == "[64, 64]" and meta["task"] == "detect" and "0: " in meta["names"]


def test_export_logs_the_routing_form_and_why(tmp_path):
    fmt = next(f for f, spec in FORMATS.items() if spec.form == DENSE_ROUTED and spec.runtime == "runs here")
    _needs(fmt)
    proc = run_cli("export", "model=n.yaml", f"format={fmt}", "imgsz=64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert f"format={fmt}: ES-MoE routing kept in the graph, dense-routed form ({FORMATS[fmt].strategy}:" in out
    assert FORMATS[fmt].why in out


def test_export_log_says_where_large_depthwise_kernels_go_in_tiles():
    tiled = [f for f, spec in FORMATS.items() if spec.depthwise_tile]
    assert {"litert", "executorch"} <= set(tiled)
    for fmt in tiled:
        assert "depthwise kernels above 5x5 written as 5x5 blocks" in export_form(fmt, FORMATS[fmt].strategy)
    assert "blocks" not in export_form("onnx", "slice")


@pytest.mark.parametrize("fmt", [f for f, spec in FORMATS.items() if spec.needs and f != "engine"])
def test_a_missing_converter_names_what_to_install(fmt, monkeypatch):
    import yolo_master.export.formats as formats

    monkeypatch.setattr(formats, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=rf"format={fmt} needs .*, which is not installed: pip install"):
        export_strategy(fmt, None, False, has_moe=True)
    with pytest.raises(RuntimeError, match="which is not installed"):
        export_strategy(fmt, None, False, has_moe=False)  # stock models too


def test_help_lists_every_format_with_its_routing_form_and_the_unavailable_ones(capsys):
    from yolo_master.cli import main

    assert main(["export", "--help"]) == 0
    text = capsys.readouterr().out
    for fmt, spec in FORMATS.items():
        assert f"{fmt} ({spec.form}: {spec.strategy})" in text
    assert all(fmt in text for fmt in UNAVAILABLE)


@pytest.mark.parametrize("fmt", ["axelera", "edgetpu"])
def test_unavailable_format_says_why_in_one_line_with_usage_status(fmt, tmp_path):
    proc = run_cli("export", "model=n.yaml", f"format={fmt}", "imgsz=64", cwd=tmp_path)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(errors) == 1 and f"format={fmt} is not available for ES-MoE models: {UNAVAILABLE[fmt][:30]}" in errors[0]


def test_deepx_export_without_the_disk_its_compiler_needs_is_one_line(tmp_path, monkeypatch, shapes_yaml):
    """dx-com stops below 8 GB free (found when a CI run's disk filled: "failed with exit status 1")."""
    _needs("deepx")
    import shutil

    from yolo_master.export import prepare

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        prepare.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100 * 2**30, 99 * 2**30, 2**30)
    )
    with pytest.raises(
        RuntimeError, match=r"format=deepx: DEEPX's compiler \(dx-com\) needs 8 GB of free disk; .* 1.0 GB"
    ):
        YOLOMaster("n.yaml").export(format="deepx", imgsz=64, data=str(shapes_yaml))
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_deepx_compiler_failure_says_what_the_compiler_said():
    _needs("deepx")
    import dx_com

    from yolo_master.export.prepare import deepx_compiler_in_a_child

    with deepx_compiler_in_a_child("deepx"), pytest.raises(RuntimeError) as failed:
        dx_com.compile(model="/nonexistent/model.onnx", output_dir="/nonexistent/out")
    assert "failed with exit status 1: " in str(failed.value) and "/nonexistent/model.onnx" in str(failed.value)
