"""``format=openvino``: the routing kept in the IR, parity with PyTorch over every expert combination,
the exported folder predicting and validating through ``YOLOMaster``, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import each_route_in_turn, run_cli

from yolo_master import YOLOMaster
from yolo_master.export.prepare import FORMAT_STRATEGY, export_form, export_strategy

ov = pytest.importorskip("openvino")
pytestmark = pytest.mark.slow


def _compiled(folder, name: str):
    """Compile the IR in ``folder`` after moving it to ``name``: OpenVINO maps the weights file, and the
    next export to the same folder would rewrite it under the running model (a bus error)."""
    moved = folder.rename(folder.with_name(name))
    core = ov.Core()
    xml = next(p for p in sorted(moved.iterdir()) if p.suffix == ".xml")
    # float32: on CPUs with bfloat16 (AVX512_BF16, AMX) OpenVINO would otherwise pick it (~3 digits)
    return core.compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32"})


@pytest.mark.parametrize("strategy", ["slots", "dense", "slice"])
def test_openvino_matches_pytorch_over_every_combination_of_every_layer(tmp_path, strategy):
    """Relative error <= 1e-4 in float32, every expert pair of every layer taking its turn."""
    from pathlib import Path

    model = YOLOMaster("n.yaml")
    rng = np.random.default_rng(0)
    for round_, (blocks, chosen) in enumerate(each_route_in_turn(model)):
        compiled = _compiled(Path(model.export(format="openvino", imgsz=64, strategy=strategy)), f"round{round_}")
        net = model.model.float().eval()
        for _ in range(2):
            x = rng.random((1, 3, 64, 64), dtype=np.float32)
            with torch.no_grad():
                ref = net(torch.from_numpy(x))[0].numpy()
            assert [b.last_routing.indices[0].tolist() for b in blocks] == chosen
            got = compiled(x)[0]
            assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_exported_folder_predicts_and_validates_through_yolomaster(tmp_path, shapes_yaml):
    folder = YOLOMaster("n.yaml").export(format="openvino", imgsz=64)
    assert str(folder).endswith("_openvino_model/") or str(folder).endswith("_openvino_model")
    model = YOLOMaster(folder)
    image = sorted((shapes_yaml.parent / "images" / "val").glob("*.jpg"))[0]
    results = model.predict(str(image), imgsz=64, verbose=False)
    assert len(results) == 1 and results[0].boxes is not None
    metrics = model.val(data=str(shapes_yaml), imgsz=64, plots=False, verbose=False)
    assert 0.0 <= metrics.box.map50 <= 1.0


def test_half_precision_export_runs_close_to_float32(tmp_path):
    from pathlib import Path

    model = YOLOMaster("n.yaml")
    full = _compiled(Path(model.export(format="openvino", imgsz=64)), "full")
    half = _compiled(Path(model.export(format="openvino", imgsz=64, half=True)), "half")
    x = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    ref = full(x)[0]
    assert np.abs(half(x)[0] - ref).max() <= 1e-2 * np.abs(ref).max()


def test_default_form_is_sparse_slots_and_dynamic_batch_gets_the_dense_routed_form():
    assert FORMAT_STRATEGY["openvino"] == "slots"
    assert export_strategy("openvino", None, False, has_moe=True) == "slots"
    assert export_strategy("openvino", None, True, has_moe=True) == "dense"
    assert "dynamic=True: the default slots graph unrolls a static batch" in export_form("openvino", "dense", True)
    assert "strategy=dense was asked for" in export_form("openvino", "dense", False)
    for asked in ("slice", "slots"):  # a sparse strategy asked for by name is refused with a dynamic batch
        with pytest.raises(ValueError, match=f"dynamic=True cannot trace the sparse '{asked}'"):
            export_strategy("openvino", asked, True, has_moe=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("ov")
    proc = run_cli("export", "model=n.yaml", "format=openvino", "imgsz=64", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "yolo-master-n_openvino_model"


@pytest.mark.parametrize(
    "args,message",
    [
        (["predict", "imgsz=128"], "was exported for imgsz=64: run it with imgsz=64"),
        (["val", "batch=4"], "was exported for batch=1: use batch<=1"),
    ],
)
def test_cli_mismatched_requests_fail_in_one_line(exported, shapes_yaml, args, message):
    mode, *rest = args
    extra = [f"source={shapes_yaml.parent / 'images' / 'val'}"] if mode == "predict" else [f"data={shapes_yaml}"]
    proc = run_cli(mode, f"model={exported}", *extra, *rest, cwd=exported.parent)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1 and message in errors[0]


def test_cli_folder_without_metadata_fails_in_one_line(exported, shapes_yaml, tmp_path):
    import shutil

    broken = tmp_path / "broken_openvino_model"
    shutil.copytree(exported, broken)
    (broken / "metadata.yaml").unlink()
    proc = run_cli("predict", f"model={broken}", f"source={shapes_yaml.parent / 'images' / 'val'}", cwd=tmp_path)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2 and len(errors) == 1 and "has no metadata.yaml" in errors[0], proc.stderr[-2000:]


def test_export_help_lists_each_format_with_its_routing_form(capsys):
    from yolo_master.cli import main

    assert main(["export", "--help"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("format="))
    assert "onnx (sparse: slice)" in line and "engine (sparse: gather)" in line
    assert "openvino (sparse: slots)" in line and "ncnn (dense-routed: masked)" in line


def test_full_precision_exports_run_in_float32_where_the_cpu_would_pick_bfloat16(tmp_path, monkeypatch):
    """OpenVINO's CPU default is bfloat16 wherever the CPU has it; a half=False export must not get it
    unasked (an ES-MoE gate's close calls would go to other experts). half=True keeps OpenVINO's choice."""
    from ultralytics.nn.autobackend import AutoBackend

    monkeypatch.chdir(tmp_path)
    model = YOLOMaster("n.yaml")
    full = Path(model.export(format="openvino", imgsz=64)).rename(tmp_path / "full_openvino_model")
    half = Path(model.export(format="openvino", imgsz=64, half=True)).rename(tmp_path / "half_openvino_model")
    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    for folder, expected in ((full, ov.Type.f32), (half, default)):
        backend = AutoBackend(str(folder), device=torch.device("cpu"), verbose=False).backend
        assert backend.ov_compiled_model.get_property("INFERENCE_PRECISION_HINT") == expected, folder.name
