"""The package as users install it: zoo YAMLs ship inside it, version range enforced, export bench is torch-free."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from yolo_master.integration import TOUCHES, check_ultralytics, missing_symbols
from yolo_master.integration.version import check_ultralytics_version

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_non_editable_install_resolves_zoo_names_from_anywhere(tmp_path):
    target = tmp_path / "site"
    source = tmp_path / "source"  # a clean copy: a stale build/ folder in the checkout would hide missing packages
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns("build", "*.egg-info", ".*", "runs", "__pycache__"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (target / "yolo_master" / "cfg" / "detect" / "yolo-master.yaml").is_file()
    packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "yolo_master").rglob("__init__.py")}
    installed = {p.parent.relative_to(target).as_posix() for p in (target / "yolo_master").rglob("__init__.py")}
    assert packages <= installed, f"subpackages missing from pyproject's packages: {packages - installed}"
    code = (
        "import importlib, pkgutil, yolo_master, sys\n"
        "from yolo_master import YOLOMaster\n"
        f"assert yolo_master.__file__.startswith(r'{target}'), yolo_master.__file__\n"
        "for m in pkgutil.walk_packages(yolo_master.__path__, 'yolo_master.'):\n"
        "    importlib.import_module(m.name)  # every module imports from the installed copy\n"
        "m = YOLOMaster('s.yaml')\n"
        "print(m.model.yaml['yaml_file'], sum(p.numel() for p in m.model.parameters()))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1].startswith("yolo-master-s.yaml ")


@pytest.mark.parametrize("version", ["8.3.200", "8.5.0", "9.0.0"])
def test_untested_ultralytics_fails_with_the_range(version, monkeypatch):
    monkeypatch.delenv("YOLO_MASTER_SKIP_VERSION_CHECK", raising=False)
    with pytest.raises(ImportError, match=r"ultralytics>=8\.4\.180,<8\.5\.0"):
        check_ultralytics_version(version)


def test_installed_ultralytics_has_every_symbol_we_touch():
    assert check_ultralytics_version("8.4.190") is None
    assert len(TOUCHES) >= 10 and all(t.reason for t in TOUCHES)
    assert missing_symbols() == []


def test_a_missing_ultralytics_symbol_stops_the_import_with_one_line(monkeypatch):
    import yolo_master.integration as integration

    fake = integration.Touch("ultralytics.nn.tasks.no_such_function", "a reason we depend on it")
    monkeypatch.setattr(integration, "TOUCHES", (*integration.TOUCHES, fake))
    assert integration.missing_symbols() == ["ultralytics.nn.tasks.no_such_function"]
    with pytest.raises(ImportError) as info:
        check_ultralytics()
    message = str(info.value)
    assert "ultralytics.nn.tasks.no_such_function (a reason we depend on it)" in message
    assert "ultralytics>=8.4.180,<8.5.0" in message and "\n" not in message


def test_export_bench_times_onnx_without_importing_torch(tmp_path):
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, 32, 32), str(path), dynamo=False)
    code = (
        "import runpy, sys\n"
        "sys.modules['torch'] = None; sys.modules['ultralytics'] = None  # importing either now fails\n"
        f"sys.argv = ['bench.py', r'{path}', r'{path}', '--runs', '3', '--warmup', '1']\n"
        f"runpy.run_path(r'{REPO / 'export' / 'bench.py'}', run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("| tiny.onnx | ONNX Runtime CPU | 1x3x32x32 |") == 2 and "1.00x" in proc.stdout
    # each model is timed in a fresh process by yolo_master/export/timing.py: torch-free as well
    timing = REPO / "yolo_master" / "export" / "timing.py"
    code = code.replace(str(REPO / "export" / "bench.py"), str(timing)).replace(f", r'{path}', '--runs'", ", '--runs'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    median, p90, shape = json.loads(proc.stdout.splitlines()[-1])
    assert 0 < median <= p90 and shape == [1, 3, 32, 32]


def test_block_benchmark_script_prints_every_strategy_and_k(tmp_path):
    out = tmp_path / "block.md"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_block.py"), "--sizes", "8:8", "--runs", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("|")[2:5] for line in out.read_text().splitlines() if line.startswith("| 8x8x8")]
    runtimes = {"eager": ("select", "grouped", "dense"), "onnxruntime": ("slice", "gather", "branch", "slots")}
    if find_spec("openvino"):  # timed in a process of its own, like each runtime
        runtimes["openvino"] = ("slice", "gather", "branch", "slots", "dense")
    expected = [
        [f" {runtime} ", f" {'static (K=E)' if runtime != 'eager' and k == 4 else s} ", f" {k} "]
        for runtime, strategies in runtimes.items()
        for s in strategies
        for k in (4, 3, 2, 1)
    ]
    assert rows == expected


def test_training_step_benchmark_script_compares_backwards_and_peers(tmp_path):
    out = tmp_path / "train.md"
    cmd = [sys.executable, str(REPO / "scripts" / "bench_train.py"), "--imgsz", "64", "--batch", "4"]
    cmd += ["--steps", "1", "--compare", "yolo12n.yaml", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| ")][1:]
    assert [r[0].strip() for r in rows] == ["n.yaml", "n.yaml (plain backward)", "yolo12n.yaml"]
    assert rows[0][2].strip() == "1.00x" and rows[2][3].strip() == "1.00x"
    assert all(float(r[1]) > 0 for r in rows)


def test_moe_budget_script_splits_latency_and_derives_the_rate_a_target_needs(tmp_path):
    out = tmp_path / "budget.md"
    cmd = [sys.executable, str(REPO / "scripts" / "moe_budget.py"), "--imgsz", "64", "--runs", "2", "--warmup", "0"]
    cmd_out = [*cmd, "--rounds", "1", "--targets", "onnx=3", "--out", str(out)]
    proc = subprocess.run(cmd_out, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    moe_gflops = float(re.search(r"ES-MoE blocks ([\d.]+) GFLOPs", text).group(1))
    assert moe_gflops > 0
    rows = {r[0].strip(): [c.strip() for c in r[1:]] for r in (line.split("|")[1:-1] for line in text.splitlines()[4:])}
    assert list(rows) == (["ONNX Runtime", "OpenVINO"] if find_spec("openvino") else ["ONNX Runtime"])
    peer, without, _, model, _, blocks, target, allowed, needed = rows["ONNX Runtime"][:9]
    assert float(blocks) == pytest.approx(float(model) - float(without), abs=0.11)
    assert target == "3.00x" and float(allowed) == pytest.approx(3 * float(peer) - float(without), abs=0.25)
    if float(allowed) > 0:  # the blocks' FLOPs over the time the target leaves them
        assert float(needed) == pytest.approx(moe_gflops / (float(allowed) / 1e3), rel=0.05)
    if "OpenVINO" in rows:
        assert rows["OpenVINO"][6] == "-"  # no target given for it
    for bad_args, says in ((["--targets", "tflite=1.1"], "RUNTIME=RATIO"), (["--without", "nomoe-q.yaml"], "nomoe-q")):
        bad = subprocess.run([*cmd, *bad_args], capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr and says in bad.stderr, bad.stderr[-2000:]


def test_profile_layers_script_splits_an_exported_model_by_layer_and_node(tmp_path, monkeypatch):
    from yolo_master import YOLOMaster

    monkeypatch.chdir(tmp_path)  # a model built from a YAML exports into the working directory
    onnx_path = Path(YOLOMaster("n.yaml").export(format="onnx", imgsz=64)).resolve()
    models = [onnx_path]
    if find_spec("openvino"):
        import openvino as ov

        ov.save_model(ov.convert_model(str(onnx_path)), str(tmp_path / "ov" / "n.xml"), compress_to_fp16=False)
        models.append(tmp_path / "ov")
    script = [sys.executable, str(REPO / "scripts" / "profile_layers.py")]
    for model in models:
        per_layer = subprocess.run([*script, str(model), "--runs", "2"], capture_output=True, text=True, timeout=300)
        assert per_layer.returncode == 0, per_layer.stderr[-3000:]
        rows = [line.split("|")[1:-1] for line in per_layer.stdout.splitlines() if line.startswith("| ")][1:]
        layers = {r[0].strip(): float(r[1]) for r in rows}
        assert {"0", "3", "24", "all"} <= set(layers)  # the stem, the first ES-MoE block, the head
        assert layers["all"] == pytest.approx(sum(v for k, v in layers.items() if k != "all"), abs=0.05 * len(layers))
        nodes = subprocess.run(
            [*script, str(model), "--layer", "3", "--runs", "2", "--top", "50"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert nodes.returncode == 0, nodes.stderr[-3000:]
        names = [line.split("|")[1].strip() for line in nodes.stdout.splitlines() if line.startswith("| ")][1:-1]
        assert names and all("model.3" in name for name in names)
        assert any("TopK" in line for line in nodes.stdout.splitlines())  # the gate's choice is in the block
    missing = subprocess.run([*script, str(tmp_path / "none.onnx")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "none.onnx" in missing.stderr


@pytest.mark.tensorflow
def test_litert_depthwise_script_times_each_kernel_in_litert_and_torch():
    if find_spec("litert_torch") is None:
        pytest.skip("litert-torch lives in the TensorFlow environment (scripts/setup_tensorflow.sh)")
    cmd = [sys.executable, str(REPO / "scripts" / "litert_depthwise.py"), "--channels", "8", "--size", "16"]
    proc = subprocess.run([*cmd, "--kernels", "3,7", "--runs", "2"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    assert [r[0].strip() for r in rows] == ["3x3", "7x7"]
    assert all(float(v) > 0 for r in rows for v in [*r[1:4], r[5]])  # the last: the 7x7 in 5x5 blocks


def test_export_bench_on_an_engine_without_tensorrt_says_so(tmp_path):

    if find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00" * 64)
    proc = subprocess.run(
        [sys.executable, str(REPO / "export" / "bench.py"), str(engine), "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "needs TensorRT" in proc.stderr and "Traceback" not in proc.stderr
