"""The bad-input corpus: whatever a user feeds the CLI, they get one readable line, never a traceback.

Table-driven. Error cases assert a non-zero exit, exactly one ``error:`` line naming the problem and
no traceback. Dataset cases with broken images or labels assert the run goes on, with a warning
naming the skipped file. Most cases call ``yolo_master.cli.main`` in-process (fast); a few run the
real console script in a subprocess (see also test_cli.py) to prove the process-level behaviour.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import run_cli

from yolo_master.cli import main

# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shapes_yaml) -> Path:
    """Bad files of every kind, written once."""
    root = tmp_path_factory.mktemp("corpus")
    good = Path(shapes_yaml).parent
    (root / "run").mkdir()
    # checkpoints
    from yolo_master import YOLOMaster

    model = YOLOMaster("n.yaml")
    torch.save({"model": model.model, "train_args": {}}, root / "good.pt")
    data = (root / "good.pt").read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 3])
    (root / "empty.pt").write_bytes(b"")
    (root / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "text.pt").write_text("this is not a checkpoint\n")
    torch.save({"weights": [1, 2, 3]}, root / "nomodel.pt")
    torch.save(model.model.state_dict(), root / "statedict.pt")
    finished = {"model": model.model, "train_args": {"data": "shapes"}, "epoch": -1, "optimizer": None}
    torch.save(finished, root / "finished.pt")  # what a run that finished leaves: stripped
    from ultralytics.nn.tasks import DetectionModel

    torch.save({"model": DetectionModel("yolo11n.yaml", verbose=False), "train_args": {}}, root / "stock.pt")
    # datasets: each a copy of the good one with one kind of damage
    for name in (
        "corrupt_jpg",
        "truncated_jpg",
        "corrupt_png",
        "label_range",
        "label_columns",
        "gray",
        "sixteen_bit",
        "tiny",
        "huge",
        "empty_images",
        "empty_jpg",
    ):
        shutil.copytree(good, root / name)
        text = (good / "data.yaml").read_text().replace(str(good.resolve()), str((root / name).resolve()))
        (root / name / "data.yaml").write_text(text)
    val = "images/val"
    img = sorted((good / val).glob("*.jpg"))[0]
    (root / "corrupt_jpg" / val / "zz_broken.jpg").write_bytes(np.random.default_rng(1).bytes(2048))
    raw = img.read_bytes()
    (root / "truncated_jpg" / val / "zz_cut.jpg").write_bytes(raw[: len(raw) // 2])
    (root / "corrupt_png" / val / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    (root / "empty_jpg" / val / "zz_empty.jpg").write_bytes(b"")
    (root / "label_range" / "labels" / "val" / "000000.txt").write_text("42 0.5 0.5 0.2 0.2\n")
    (root / "label_columns" / "labels" / "val" / "000000.txt").write_text("1 0.5 0.5\n")
    gray = cv2.cvtColor(cv2.imread(str(img)), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(root / "gray" / val / img.name), gray)
    cv2.imwrite(str(root / "sixteen_bit" / val / "000000.png"), (cv2.imread(str(img)).astype(np.uint16) * 257))
    (root / "sixteen_bit" / val / img.name).unlink()
    cv2.imwrite(str(root / "tiny" / val / "zz_tiny.jpg"), np.zeros((1, 1, 3), np.uint8))
    cv2.imwrite(str(root / "huge" / val / "zz_huge.jpg"), np.full((3000, 4000, 3), 90, np.uint8))
    for f in (root / "empty_images" / val).iterdir():
        f.unlink()
    (root / "empty_images" / "labels" / "val").mkdir(exist_ok=True)
    # model YAMLs
    for name, text in MODEL_YAMLS.items():
        (root / f"{name}.yaml").write_text(text)
    (root / "predict_bad").mkdir()
    (root / "predict_bad" / "broken.jpg").write_bytes(b"not an image")
    (root / "broken_data.yaml").write_text("train: [\n")
    (root / "only_broken").mkdir()  # left as it is by every test: nothing readable in it
    (root / "only_broken" / "broken.jpg").write_bytes(b"not an image")
    return root


def _yaml(backbone: str, head: str = "  - [[-1], 1, Detect, [nc]]", top: str = "nc: 2") -> str:
    return f"{top}\nbackbone:\n{backbone}\nhead:\n{head}\n"


CONV = "  - [-1, 1, Conv, [16, 3, 2]]"
MODEL_YAMLS = {
    "unknown_module": _yaml(CONV + "\n  - [-1, 1, FancyBlock, [16]]"),
    "typo_module": _yaml(CONV + "\n  - [-1, 1, C3K2, [16]]"),
    "k_gt_e": _yaml(CONV + "\n  - [-1, 1, ESMoE, [16, 2, 3]]"),
    "k_zero": _yaml(CONV + "\n  - [-1, 1, ESMoE, [16, 4, 0]]"),
    "k_negative": _yaml(CONV + "\n  - [-1, 1, ESMoE, [16, 4, -1]]"),
    "e_zero": _yaml(CONV + "\n  - [-1, 1, ESMoE, [16, 0, 1]]"),
    "e_negative": _yaml(CONV + "\n  - [-1, 1, ESMoE, [16, -2, 1]]"),
    "e_float": _yaml(CONV + "\n  - [-1, 1, ESMoE, [16, 2.5, 1]]"),
    "e_text": _yaml(CONV + "\n  - [-1, 1, ESMoE, [16, four, 2]]"),
    "kernel_even": _yaml(CONV + "\n  - [-1, 1, ESMoE, [16, 4, 2, [3, 4, 5, 7]]]"),
    "kernel_negative": _yaml(CONV + "\n  - [-1, 1, ESMoE, [16, 2, 1, [-3, 5]]]"),
    "kernel_count": _yaml(CONV + "\n  - [-1, 1, ESMoE, [16, 4, 2, [3, 5]]]"),
    "kernel_text": _yaml(CONV + "\n  - [-1, 1, ESMoE, [16, 2, 1, [a, b]]]"),
    "c2_text": _yaml(CONV + "\n  - [-1, 1, ESMoE, [wide, 4, 2]]"),
    "c2_zero": _yaml(CONV + "\n  - [-1, 1, ESMoE, [0, 4, 2]]"),
    "esmoe_no_args": _yaml(CONV + "\n  - [-1, 1, ESMoE, []]"),
    "args_not_list": _yaml(CONV + "\n  - [-1, 1, Conv, 16]"),
    "row_three_fields": _yaml(CONV + "\n  - [-1, Conv, [16, 3, 2]]"),
    "row_not_list": _yaml(CONV + "\n  - Conv"),
    "from_forward": _yaml(CONV + "\n  - [5, 1, Conv, [16, 3, 2]]"),
    "from_too_far_back": _yaml(CONV + "\n  - [-7, 1, Conv, [16, 3, 2]]"),
    "repeats_zero": _yaml(CONV + "\n  - [-1, 0, Conv, [16, 3, 2]]"),
    "repeats_text": _yaml(CONV + "\n  - [-1, many, Conv, [16, 3, 2]]"),
    "no_backbone": "nc: 2\nhead:\n  - [-1, 1, Detect, [nc]]\n",
    "no_head": "nc: 2\nbackbone:\n" + CONV + "\n",
    "empty_backbone": "nc: 2\nbackbone: []\nhead:\n  - [-1, 1, Detect, [nc]]\n",
    "nc_zero": _yaml(CONV, top="nc: 0"),
    "nc_negative": _yaml(CONV, top="nc: -3"),
    "nc_text": _yaml(CONV, top="nc: ten"),
    "syntax_error": "nc: 2\nbackbone: [[-1, 1, Conv, [16, 3, 2]\n",
    "a_list": "- 1\n- 2\n",
    "empty_file": "",
    "custom-x": _yaml(CONV, top="nc: 2\nscales:\n  n: [0.5, 0.25, 1024]"),
}

# ------------------------------------------------------------------------------------------ tables

C = "{corpus}"  # replaced by the corpus folder
ERRORS = [
    # --- command line
    (["trian"], "unknown mode 'trian'"),
    (["bogus", "epochs=3"], "unknown mode 'bogus'"),
    (["train", "data=shapes", "epoch=3"], "unknown key 'epoch'"),
    (["train", "data=shapes", "lrr0=0.1"], "unknown key 'lrr0'"),
    (["train", "data=shapes", "--epoch", "3"], "unknown key 'epoch'"),
    (["train", "data=shapes", "epochs"], "unexpected argument 'epochs'"),
    (["train", "data=shapes", "=3"], "malformed argument"),
    (["train", "data=shapes", "epochs="], "malformed argument"),
    (["train", "data=shapes", "bad key=1"], "malformed argument"),
    (["train", "data=shapes", "--"], "malformed argument"),
    (["train", "data=shapes", "epochs=abc"], "epochs"),
    (["train", "data=shapes", "epochs=1.5"], "epochs"),
    (["train", "data=shapes", "batch=lots"], "batch"),
    (["train", "data=shapes", "lr0=fast"], "lr0"),
    (["train", "data=shapes", "moe=strong"], "'moe=strong' must be a number"),
    (["train", "data=shapes", "moe=-1"], "'moe=-1' must be >= 0"),
    (["predict", "source=.", "conf=2.0"], "conf"),
    (["val", "iou=-0.5"], "iou"),
    (["train", "epochs=3"], "train needs data="),
    (["predict", "model=n.yaml"], "predict needs source="),
    (["export", "model=n.yaml"], "export needs format="),
    (["routes", "model=n.yaml"], "routes needs source="),
    (["export", "model=n.yaml", "--format", "onnx", "format=engine"], "'format' given twice"),
    (["train", "data=shapes", "--epochs", "3", "epochs=4"], "'epochs' given twice"),
    (["val", "moe=1.0"], "unknown key 'moe' for val"),
    (["export", "model=n.yaml", "format=onnx", "moe=1"], "unknown key 'moe' for export"),
    (["predict", "model=n.yaml", "source=does/not/exist"], "source 'does/not/exist' does not exist"),
    (["routes", "model=n.yaml", "source=nowhere"], "source 'nowhere' does not exist"),
    (["routes", "model=n.yaml", f"source={C}/predict_bad", "conf=0.5"], "routes takes"),
    (["benchmark", "model=n.yaml", "runs=abc"], "'runs=abc' must be an integer"),
    (["benchmark", "model=n.yaml", "runs=0"], "runs must be >= 1"),
    (["benchmark", "model=n.yaml", "device=cpu"], "benchmark takes"),
    (["benchmark", "model=n.yaml", "threads=two"], "'threads=two' must be an integer"),
    (["benchmark", "model=n.yaml", "warmup=-1"], "warmup >= 0"),
    (["benchmark", "model=n.yaml", "rounds=0"], "rounds must be >= 1"),
    (["benchmark", "model=n.yaml", "rounds=x"], "'rounds=x' must be an integer"),
    (["info", "model=nope.yaml"], "unknown model 'nope.yaml'"),
    (["info", "model=yolo-master-q.yaml"], "valid names: yolo-master-n.yaml"),
    (["info", "model=q"], "unknown model 'q'"),
    (["info", "model=seg-z.yaml"], "unknown model 'seg-z.yaml'"),
    # --- export
    (["export", "model=n.yaml", "format=hailo"], "format=hailo is not available for ES-MoE models"),
    (["export", "model=n.yaml", "format=nonsense"], "format 'nonsense' is not supported"),
    (["export", "model=n.yaml", "format=onnx", "dynamic=True"], "dynamic=True cannot trace"),
    (["export", "model=n.yaml", "format=onnx", "strategy=magic"], "unknown export strategy 'magic'"),
    (["export", "model=n.yaml", "format=onnx", "strategy=select"], "unknown export strategy 'select'"),
    # --- data
    (["train", "model=n.yaml", "data=no_such_data.yaml", "epochs=1"], "no_such_data.yaml"),
    (["val", "model=n.yaml", "data=missing/data.yaml"], "missing/data.yaml"),
    (["val", "model=n.yaml", f"data={C}/empty_images/data.yaml", "imgsz=64"], "images"),
    # --- checkpoints
    (["val", "model=missing.pt"], "checkpoint 'missing.pt' not found"),
    (["info", f"model={C}/truncated.pt"], "truncated.pt"),
    (["info", f"model={C}/empty.pt"], "empty.pt"),
    (["info", f"model={C}/random.pt"], "random.pt"),
    (["info", f"model={C}/text.pt"], "text.pt"),
    (["info", f"model={C}/nomodel.pt"], "nomodel.pt"),
    (["routes", f"model={C}/stock.pt", f"source={C}/predict_bad"], "no ES-MoE layers"),
    (["routes", f"model={C}/truncated.pt", f"source={C}/predict_bad"], "truncated.pt"),
    (["export", f"model={C}/random.pt", "format=onnx"], "random.pt"),
    (["val", "model=n.yaml", f"data={C}/run"], "run"),
    # --- model YAMLs
    *[
        ([("info"), f"model={C}/{name}.yaml"], match)
        for name, match in (
            ("unknown_module", "layer 1: unknown module 'FancyBlock'"),
            ("typo_module", "layer 1: unknown module 'C3K2'"),
            ("k_gt_e", "top_k=3 exceeds num_experts=2"),
            ("k_zero", "top_k (K) must be >= 1"),
            ("k_negative", "top_k (K) must be >= 1"),
            ("e_zero", "num_experts (E) must be >= 1"),
            ("e_negative", "num_experts (E) must be >= 1"),
            ("e_float", "num_experts and top_k must be integers"),
            ("e_text", "num_experts and top_k must be integers"),
            ("kernel_even", "odd positive integers"),
            ("kernel_negative", "odd positive integers"),
            ("kernel_count", "one kernel size per expert"),
            ("kernel_text", "odd positive integers"),
            ("c2_text", "output channels c2"),
            ("c2_zero", "output channels c2"),
            ("esmoe_no_args", "output channels c2"),
            ("args_not_list", "args must be a list"),
            ("row_three_fields", "expected [from, repeats, module, args]"),
            ("row_not_list", "expected [from, repeats, module, args]"),
            ("from_forward", "'from' must name earlier layers"),
            ("from_too_far_back", "'from' must name earlier layers"),
            ("repeats_zero", "repeats must be a positive integer"),
            ("repeats_text", "repeats must be a positive integer"),
            ("no_backbone", "'backbone' must be a non-empty list"),
            ("no_head", "'head' must be a non-empty list"),
            ("empty_backbone", "'backbone' must be a non-empty list"),
            ("nc_zero", "nc must be a positive integer"),
            ("nc_negative", "nc must be a positive integer"),
            ("nc_text", "nc must be a positive integer"),
            ("syntax_error", "cannot read model YAML"),
            ("a_list", "must be a mapping"),
            ("empty_file", "must be a mapping"),
            ("custom-x", "has no scale 'x'"),
        )
    ],
]

SKIPPED_WITH_WARNING = [  # (dataset, the file or label the warning must name)
    ("corrupt_jpg", "zz_broken.jpg"),
    ("corrupt_png", "zz_broken.png"),
    ("label_range", "000000"),
    ("label_columns", "000000"),
    ("tiny", "zz_tiny.jpg"),
    ("empty_jpg", "zz_empty.jpg"),  # 0 bytes: "cannot identify image file", not a missing pi_heif
]
ACCEPTED = ["truncated_jpg", "gray", "sixteen_bit", "huge"]  # read as they are (or restored), no error


def _call(argv: list[str], corpus: Path, capsys) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (status, stdout + Ultralytics' log, stderr)."""
    import io
    import logging

    from ultralytics.utils import LOGGER

    argv = [a.replace(C, str(corpus)) for a in argv]
    log = io.StringIO()
    handler = logging.StreamHandler(log)  # Ultralytics' handler holds the stream from import time
    LOGGER.addHandler(handler)
    cwd = os.getcwd()
    os.chdir(corpus / "run")  # runs/ and exports land in the corpus, not in the repository
    try:
        status = main(argv)
    finally:
        os.chdir(cwd)
        LOGGER.removeHandler(handler)
    out = capsys.readouterr()
    return status, out.out + log.getvalue(), out.err


@pytest.mark.parametrize("argv,match", ERRORS, ids=[" ".join(a)[:60] for a, _ in ERRORS])
def test_error_is_one_readable_line(corpus, capsys, argv, match):
    status, _, err = _call(argv, corpus, capsys)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert status != 0, err[-2000:]
    assert "Traceback" not in err
    assert len(errors) == 1 and match in errors[0], err[-2000:]


@pytest.mark.parametrize("dataset,named", SKIPPED_WITH_WARNING)
def test_broken_images_and_labels_are_skipped_with_a_warning(corpus, capsys, dataset, named):
    data = corpus / dataset / "data.yaml"
    for cache in (corpus / dataset / "labels").glob("*.cache"):
        cache.unlink()
    status, out, err = _call(["val", "model=n.yaml", f"data={data}", "imgsz=64", "plots=False"], corpus, capsys)
    assert status == 0, err[-2000:]
    warnings = [line for line in (out + err).splitlines() if "ignoring corrupt image/label" in line and named in line]
    assert len(warnings) == 1, (out + err)[-3000:]
    assert "No module named" not in warnings[0]  # the reason is the file's, not an optional import's


def test_unreadable_image_in_a_predict_folder_is_skipped_with_a_warning(corpus, capsys):
    shutil.copy(next((corpus / "gray" / "images" / "val").glob("*.jpg")), corpus / "predict_bad" / "good.jpg")
    argv = ["predict", "model=n.yaml", f"source={corpus}/predict_bad", "imgsz=64", "save=False"]
    status, out, err = _call(argv, corpus, capsys)
    assert status == 0, err[-2000:]
    assert any("WARNING" in line and "broken.jpg" in line for line in (out + err).splitlines())


@pytest.mark.parametrize("dataset", ACCEPTED)
def test_unusual_but_valid_images_are_accepted(corpus, capsys, dataset):
    data = corpus / dataset / "data.yaml"
    status, out, err = _call(["val", "model=n.yaml", f"data={data}", "imgsz=64", "plots=False"], corpus, capsys)
    assert status == 0, err[-2000:]


@pytest.mark.parametrize(
    "argv,match",
    [
        (["info", "model={corpus}/truncated.pt"], "truncated.pt"),
        (["info", "model={corpus}/k_gt_e.yaml"], "top_k=3 exceeds num_experts=2"),
        (["export", "model=n.yaml", "format=onnx", "dynamic=True"], "dynamic=True cannot trace"),
    ],
)
def test_process_level_sample(corpus, argv, match):
    proc = run_cli(*[a.format(corpus=corpus) for a in argv], cwd=corpus / "run")
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(errors) == 1 and match in errors[0]


def test_missing_onnx_package_is_one_line(corpus, tmp_path):
    shadow = tmp_path / "shadow" / "onnx"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named onnx (hidden by the test)')\n")
    env_path = f"{shadow.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    proc = run_cli(
        "export", "model=n.yaml", "format=onnx", "imgsz=64", cwd=corpus / "run", env={"PYTHONPATH": env_path}
    )
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1 and "onnx" in errors[0].lower()


def test_checkpoint_with_a_different_expert_count_transfers_what_fits(tmp_path):
    """A .pt whose ES-MoE layer has another E is not an error as pretrained weights: every tensor whose
    shape matches is loaded (Ultralytics reports the count), the mismatched layer keeps its fresh weights."""
    import yaml

    from yolo_master import YOLOMaster
    from yolo_master.zoo import cfg_dir

    cfg = yaml.safe_load((cfg_dir() / "detect" / "yolo-master.yaml").read_text())
    cfg["backbone"][3][3] = [256, 2, 1]  # layer 3: E=2, K=1 instead of E=4, K=2
    cfg["scales"] = {"n": cfg["scales"]["n"]}
    (tmp_path / "two-experts.yaml").write_text(yaml.safe_dump(cfg))
    other = YOLOMaster(tmp_path / "two-experts.yaml")
    torch.save({"model": other.model, "train_args": {}}, tmp_path / "two-experts.pt")
    model = YOLOMaster("n.yaml")
    fresh_router = model.model.model[3].router.logits.weight.clone()
    model.load(tmp_path / "two-experts.pt")
    assert torch.equal(model.model.model[0].conv.weight, other.model.model[0].conv.weight)
    assert torch.equal(model.model.model[6].router.logits.weight, other.model.model[6].router.logits.weight)
    assert torch.equal(model.model.model[3].router.logits.weight, fresh_router)  # (4, h) vs (2, h): left alone
    assert model.model.model[3].num_experts == 4


def test_own_yaml_gets_its_scale_from_the_name_or_a_warning(tmp_path, monkeypatch):
    import yaml
    from ultralytics.utils import LOGGER

    from yolo_master import YOLOMaster
    from yolo_master.zoo import cfg_dir

    cfg = yaml.safe_load((cfg_dir() / "detect" / "yolo-master.yaml").read_text())
    text = yaml.safe_dump(cfg)  # sorted keys: the scales now start with 'l'
    (tmp_path / "data2-s.yaml").write_text(text)
    (tmp_path / "mine.yaml").write_text(text)
    warnings = []
    monkeypatch.setattr(LOGGER, "warning", lambda msg, *a, **k: warnings.append(str(msg)))
    assert YOLOMaster(tmp_path / "data2-s.yaml").model.yaml["scale"] == "s"
    assert not any("names no scale" in w for w in warnings)
    assert YOLOMaster(tmp_path / "mine.yaml").model.yaml["scale"] == "l"
    assert any("mine.yaml names no scale: building its first one, 'l'" in w for w in warnings)


# ------------------------------------------------------------------- values typed, ranges (issue 17)

VALUES = [  # (argv, the error line names, exit status)
    (["train", "data=shapes", "--epochs"], "'--epochs' needs a value", 2),
    (["train", "data=shapes", "--name", "--exist_ok"], "'--name' needs a value", 2),
    (["train", "--data"], "'--data' needs a value", 2),
    (["train", "data=shapes", "moe=nan"], "'moe=nan' must be a finite number", 2),
    (["train", "data=shapes", "moe=inf"], "'moe=inf' must be a finite number", 2),
    (["train", "data=shapes", "moe=1e308"], "must be a finite number up to 100", 2),
    (["info", "model=n.yaml", "imgsz=abc"], "imgsz", 2),
    (["info", "model=n.yaml", "imgsz=0"], "'imgsz=0' must be between 32 and 4096", 2),
    (["info", "model=n.yaml", "imgsz=-1"], "'imgsz=-1' must be between 32 and 4096", 2),
    (["info", "model=n.yaml", "imgsz=8192"], "'imgsz=8192' must be between 32 and 4096", 2),
    (["info", "model=n.yaml", "imgsz=100000"], "'imgsz=100000' must be between 32 and 4096", 2),
    (["benchmark", "model=n.yaml", "imgsz=0"], "'imgsz=0' must be between 32 and 4096", 2),
    (["benchmark", "model=n.yaml", "batch=0"], "'batch=0' must be an integer >= 1", 2),
    (["export", "model=n.yaml", "format=onnx", "batch=0"], "'batch=0' must be an integer >= 1", 2),
    (["export", "model=n.yaml", "format=onnx", "batch=-1"], "'batch=-1' must be an integer >= 1", 2),
    (["export", "model=n.yaml", "format=onnx", "batch=1000"], "unrolled image by image", 2),
    (["predict", "model=n.yaml", "source=.", "batch=0"], "'batch=0' must be an integer >= 1", 2),
    (["val", "model=n.yaml"], "val needs data=", 2),
    (["export", "model=n.yaml", "format=onnx", "int8=True"], "int8=True calibrates on images: give data=", 2),
    (["predict", "model=n.yaml", f"source={C}/only_broken", "imgsz=64"], "nothing was predicted", 2),
    (["predict", "model=n.yaml", "source=nothing/*.png"], "source 'nothing/*.png' does not exist", 2),
    (["info", f"model={C}/statedict.pt"], "holds only weights (a state_dict), not a model", 2),
    (["train", "resume=True", f"model={C}/finished.pt"], "is from a finished run: nothing to resume", 2),
    (["val", "model=n.yaml", f"data={C}/broken_data.yaml", "imgsz=64"], "YAML syntax error", 2),
    (["val", "model=n.yaml", f"data={C}/empty_images/data.yaml", "imgsz=64"], "images", 2),
    *[
        (["info", f"model={C}/{name}.yaml"], match, 2)
        for name, match in (
            ("reduction_zero", "ESMoE reduction must be >= 1, got 0"),
            ("reduction_negative", "ESMoE reduction must be >= 1, got -8"),
            ("scale_unknown", "'scale: q' is not one of its scales"),
            ("width_negative", "scale 'n' must be [depth, width, max_channels], each > 0"),
            ("depth_zero", "scale 'n' must be [depth, width, max_channels], each > 0"),
            ("esmoe_two_inputs", "ESMoE: takes one input"),
            ("kdist_nan", "k_dist entries must be finite non-negative numbers"),
            ("bias_rate_inf", "bias_rate: inf': a positive finite number"),
        )
    ],
]
MODEL_YAMLS.update(
    {
        "reduction_zero": _yaml(CONV + "\n  - [-1, 1, ESMoE, [16, 2, 1, null, 0]]"),
        "reduction_negative": _yaml(CONV + "\n  - [-1, 1, ESMoE, [16, 2, 1, null, -8]]"),
        "scale_unknown": _yaml(CONV, top="nc: 2\nscale: q\nscales:\n  n: [0.5, 0.25, 1024]"),
        "width_negative": _yaml(CONV, top="nc: 2\nscales:\n  n: [0.5, -0.25, 1024]"),
        "depth_zero": _yaml(CONV, top="nc: 2\nscales:\n  n: [0, 0.25, 1024]"),
        "esmoe_two_inputs": _yaml(CONV + "\n" + CONV + "\n  - [[-1, 0], 1, ESMoE, [16, 2, 1]]"),
        "kdist_nan": _yaml(CONV + "\n  - [-1, 1, ESMoE, [16, 4, 2]]", top="nc: 2\nmoe: {k_dist: [.nan, 0.5, 0.5]}"),
        "bias_rate_inf": _yaml(
            CONV + "\n  - [-1, 1, ESMoE, [16, 4, 2]]", top="nc: 2\nmoe: {balance: bias, bias_rate: .inf}"
        ),
    }
)


@pytest.mark.parametrize("argv,match,status", VALUES, ids=[" ".join(a)[:60] for a, _, _ in VALUES])
def test_a_bad_value_is_refused_before_work_starts(corpus, capsys, argv, match, status):
    got, _, err = _call(argv, corpus, capsys)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert got == status and "Traceback" not in err, err[-2000:]
    assert len(errors) == 1 and match in errors[0], err[-2000:]


@pytest.mark.parametrize("source", ["0", "screen", "https://example.com/bus.jpg", "{corpus}/predict_bad/*.jpg"])
def test_sources_ultralytics_accepts_pass_the_check(corpus, source):
    from yolo_master.validate import check_source

    check_source(source.replace(C, str(corpus)))  # webcam, screen, URL, a glob with matches: Ultralytics' to open


def test_routes_skips_an_unreadable_image_as_predict_does(corpus, capsys, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(corpus / "only_broken", folder)
    cv2.imwrite(str(folder / "good.png"), np.full((64, 64, 3), 120, np.uint8))
    argv = ["routes", "model=n.yaml", f"source={folder}", "imgsz=64", f"project={tmp_path}"]
    status, out, err = _call(argv, corpus, capsys)
    assert status == 0, err[-2000:]
    assert "skipping" in out + err and "broken.jpg" in out + err
    rows = (tmp_path / "routes" / "routes.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("good.png")


@pytest.mark.parametrize(
    "array,match",
    [
        (np.zeros((3, 64, 64), np.uint8), "channel-first"),
        (np.random.default_rng(0).random((64, 64, 3)), r"values in \[0, 1\]"),
        (np.zeros((64, 64, 3), bool), "got bool"),
        (np.zeros((64, 64, 3), np.int16), "got int16"),
        (np.full((64, 64, 3), np.nan), "NaN"),
        (torch.rand(1, 64, 64, 3), "batch x 3 x height x width"),
        (torch.full((1, 3, 64, 64), 2.0), r"in \[0, 1\]"),
    ],
)
def test_python_api_image_arrays_are_checked(array, match):
    from yolo_master import YOLOMaster

    with pytest.raises(ValueError, match=match):
        YOLOMaster("n.yaml").predict(array, imgsz=64, verbose=False)


def test_python_api_train_without_data_says_so():
    from yolo_master import YOLOMaster

    with pytest.raises(ValueError, match="train needs data="):
        YOLOMaster("n.yaml").train(data=None, epochs=1)


def test_upcycle_never_replaces_an_existing_file_unless_told(corpus, capsys, tmp_path):
    from ultralytics import YOLO

    dense = tmp_path / "dense.pt"
    YOLO("yolo12n.yaml").save(dense)
    keep = tmp_path / "keep.pt"
    keep.write_bytes(b"an unrelated file")
    status, _, err = _call(["upcycle", f"model={dense}", f"out={keep}"], corpus, capsys)
    assert status == 2 and "exists" in err and keep.read_bytes() == b"an unrelated file"
    status, _, err = _call(["upcycle", f"model={dense}", f"out={keep}", "exist_ok=True"], corpus, capsys)
    assert status == 0, err[-2000:]
    assert keep.read_bytes() != b"an unrelated file"


def test_a_damaged_resume_state_falls_back_to_last_pt_with_a_warning(tmp_path):
    from types import SimpleNamespace

    from yolo_master.engine import resume_state

    (tmp_path / "last.pt").write_bytes(b"")
    (tmp_path / resume_state.FILENAME).write_bytes(b"\x00" * 10)
    trainer = SimpleNamespace(args=SimpleNamespace(resume=str(tmp_path / "last.pt")))
    assert resume_state.load(trainer, {"epoch": 1, "updates": 8}) is None  # and Ultralytics' resume goes on


def test_sizes_round_up_to_the_stride_with_a_note(capsys):
    from yolo_master.validate import image_size

    assert image_size(33) == 64 and image_size(640) == 640 and image_size([320, 480]) == 480
    assert "imgsz=33: using 64" in capsys.readouterr().out
