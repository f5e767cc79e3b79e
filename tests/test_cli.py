"""The ``yolo-master`` command: argument styles, help, and one readable line for bad input."""

from __future__ import annotations

import pytest
from conftest import run_cli

from yolo_master.cli import UsageError, check_keys, parse_args


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["epochs=3", "imgsz=320"], {"epochs": 3, "imgsz": 320}),
        (["--epochs", "3", "--imgsz=320"], {"epochs": 3, "imgsz": 320}),
        (["--half", "--format", "engine"], {"half": True, "format": "engine"}),
        (
            ["lr0=0.01", "cache=False", "name=run1", "device=None"],
            {"lr0": 0.01, "cache": False, "name": "run1", "device": None},
        ),
        (["--format", "onnx", "format=onnx"], {"format": "onnx"}),
        (["--exist-ok"], {"exist_ok": True}),
        (["--half", "imgsz=64"], {"half": True, "imgsz": 64}),
    ],
)
def test_parse_both_argument_styles(argv, expected):
    assert parse_args(argv) == expected


@pytest.mark.parametrize(
    "argv,match",
    [
        (["epochs"], "unexpected argument 'epochs'"),
        (["=3"], "malformed argument"),
        (["epochs="], "malformed argument"),
        (["--format", "onnx", "format=engine"], "'format' given twice"),
        (["bad key=1"], "malformed argument"),
    ],
)
def test_parse_rejects_malformed_input(argv, match):
    with pytest.raises(UsageError, match=match):
        parse_args(argv)


@pytest.mark.parametrize(
    "mode,args,error,match",
    [
        ("train", {"data": "x", "epoch": 3}, UsageError, "did you mean 'epochs'"),
        ("train", {"epochs": 3}, UsageError, "train needs data="),
        ("predict", {"model": "n.yaml"}, UsageError, "predict needs source="),
        ("export", {}, UsageError, "export needs format="),
        ("val", {"moe": 1.0}, UsageError, "unknown key 'moe' for val"),
        ("train", {"data": "x", "epochs": "three"}, TypeError, "epochs"),
        ("train", {"data": "x", "moe": "lots"}, TypeError, "must be a number"),
        ("train", {"data": "x", "moe": -1}, ValueError, "must be >= 0"),
    ],
)
def test_check_keys(mode, args, error, match):
    with pytest.raises(error, match=match):
        check_keys(mode, args)


def test_moe_is_a_train_key_only():
    args = {"data": "shapes", "moe": 1.5, "epochs": 3}
    check_keys("train", args)
    assert args == {"data": "shapes", "moe": 1.5, "epochs": 3}  # accepted and left for the trainer
    with pytest.raises(UsageError, match="unknown key 'moe' for val"):
        check_keys("val", {"moe": 1.5})
    with pytest.raises(ValueError, match="must be >= 0"):
        check_keys("train", {"data": "shapes", "moe": -1})


@pytest.mark.parametrize(
    "argv,match",
    [
        (["trian"], "unknown mode 'trian': did you mean 'train'?"),
        (["train", "data=shapes", "epoch=3"], "unknown key 'epoch' for train (did you mean 'epochs'?)"),
        (["train", "epochs=3"], "train needs data=..."),
        (["train", "data=shapes", "epochs"], "unexpected argument 'epochs'"),
        (["info", "model=nope.yaml"], "unknown model 'nope.yaml'"),
        (["val", "model=missing.pt"], "checkpoint 'missing.pt' not found"),
        (["export", "model=n.yaml", "--format", "onnx", "format=engine"], "'format' given twice"),
        (["predict", "model=n.yaml", "source=does/not/exist"], "source 'does/not/exist' does not exist"),
        (["train", "model=n.yaml", "data=no_such_data.yaml", "epochs=1"], "no_such_data.yaml"),
        (["export", "model=n.yaml", "format=nonsense"], "nonsense"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, argv, match):
    proc = run_cli(*argv, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and match in errors[0], proc.stderr[-2000:]


@pytest.mark.parametrize("mode", [None, "train", "val", "predict", "export", "routes", "info"])
def test_help(tmp_path, mode):
    proc = run_cli(*([mode] if mode else []), "--help", cwd=tmp_path)
    assert proc.returncode == 0
    assert "usage: yolo-master" in proc.stdout and "Traceback" not in proc.stderr


def test_info_prints_esmoe_rows_and_active_params(tmp_path):
    proc = run_cli("info", "model=s.yaml", "--imgsz", "320", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("yolo_master.nn.moe.ESMoE") == 3
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith("yolo-master-s.yaml:") and "active per image" in summary and "GFLOPs at 320" in summary
    rho = float(summary.split("rho ")[1].split()[0])
    assert 0.05 < rho < 0.5  # the routed experts are a real, but minor, share of the compute
