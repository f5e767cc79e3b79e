"""Registration with stock Ultralytics: the zoo builds at every scale, stock models are untouched."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from ultralytics.nn.tasks import DetectionModel

from yolo_master import ESMoE, YOLOMaster
from yolo_master.zoo import find_model_yaml, load_model_yaml

# Published figures of the reference configs (params in millions, GFLOPs at 640, nc=80).
TARGETS = {"n": (2.69, 8.8), "s": (9.71, 29.4), "m": (23.9, 98.0), "l": (30.2, 119.7), "x": (67.4, 266.1)}

STOCK_PROBE = r"""
import json, sys, torch
{imports}
from ultralytics.nn.tasks import DetectionModel
out = {{}}
for name in ("yolo11n.yaml", "yolo12n.yaml"):
    torch.manual_seed(0)
    m = DetectionModel(name, verbose=False).eval()
    with torch.no_grad():
        y = m(torch.ones(1, 3, 64, 64))[0]
    out[name] = [sum(p.numel() for p in m.parameters()), [type(l).__name__ for l in m.model], float(y.sum())]
print(json.dumps(out))
"""


def _stock_fingerprint(with_yolo_master: bool) -> dict:
    code = STOCK_PROBE.format(imports="import yolo_master" if with_yolo_master else "")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_stock_models_build_and_run_exactly_as_before():
    plain, ours = _stock_fingerprint(False), _stock_fingerprint(True)
    assert plain == ours
    assert "ESMoE" not in str(ours)


@pytest.mark.parametrize("scale", list(TARGETS))
def test_each_zoo_scale_builds_within_5_percent_of_target_params(scale):
    model = YOLOMaster(f"yolo-master-{scale}.yaml").model
    params = sum(p.numel() for p in model.parameters()) / 1e6
    target = TARGETS[scale][0]
    assert abs(params / target - 1) <= 0.05, f"{scale}: {params:.2f}M vs {target}M"
    moes = [m for m in model.modules() if isinstance(m, ESMoE)]
    assert len(moes) == 3 and all(m.top_k == 2 for m in moes)


def test_width_scaling_infers_c1_and_scales_c2_like_stock_blocks():
    for scale, width in (("n", 0.25), ("s", 0.5), ("m", 1.0)):
        model = YOLOMaster(f"{scale}.yaml").model
        layers = list(model.model)
        for i, layer in enumerate(layers):
            if isinstance(layer, ESMoE):
                prev_out = layers[i - 1].cv2.conv.out_channels  # the stage block feeding it
                assert layer.c1 == prev_out
                assert layer.c2 == min(int(model.yaml["backbone"][i][3][0]), 1024 if scale != "m" else 512) * width


def test_model_summary_names_esmoe_rows(capsys):
    from ultralytics.utils import LOGGER

    handler_stream = []

    class Grab:
        def write(self, text):
            handler_stream.append(text)

        def flush(self):
            pass

    import logging

    handler = logging.StreamHandler(Grab())
    LOGGER.addHandler(handler)
    try:
        YOLOMaster("n.yaml", verbose=True)
    finally:
        LOGGER.removeHandler(handler)
    table = "".join(handler_stream)
    assert table.count("yolo_master.nn.moe.ESMoE") == 3
    assert "[64, 64, 4, 2]" in table  # c1, c2 (scaled), E, K


def test_stock_detection_model_parses_an_esmoe_yaml(tmp_path):
    d = load_model_yaml("n.yaml")
    model = DetectionModel(d, verbose=False)  # stock class, our block: registration alone suffices
    assert sum(isinstance(m, ESMoE) for m in model.modules()) == 3
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64))[0].shape[0] == 1


@pytest.mark.parametrize(
    "name,scale,display",
    [
        ("n.yaml", "n", "yolo-master-n.yaml"),
        ("s", "s", "yolo-master-s.yaml"),
        ("yolo-master-x.yaml", "x", "yolo-master-x.yaml"),
        ("m.yml", "m", "yolo-master-m.yaml"),
        ("esmoe-n", "n", "yolo-master-esmoe-n.yaml"),  # the official releases' architectures
        ("yolo-master-esmoe-seg-s.yaml", "s", "yolo-master-esmoe-seg-s.yaml"),
        ("v0.1-n", "n", "yolo-master-v0.1-n.yaml"),
        ("v0.1-seg-n.yaml", "n", "yolo-master-v0.1-seg-n.yaml"),
    ],
)
def test_short_and_long_names_resolve(name, scale, display):
    path, got, shown = find_model_yaml(name)
    assert path.is_file() and got == scale and shown == display


def test_unknown_model_name_lists_valid_ones():
    with pytest.raises(FileNotFoundError, match="valid names: yolo-master-n.yaml"):
        YOLOMaster("yolo-master-q.yaml")


@pytest.mark.parametrize(
    "row,match",
    [
        ("[-1, 1, ESMoE, [64, 2, 3]]", "exceeds num_experts"),
        ("[-1, 1, ESMoE, [64, 0, 1]]", "must be >= 1"),
        ("[-1, 1, ESMoE, [64, 4, 0]]", "must be >= 1"),
        ("[-1, 1, ESMoE, [64, 4, 2, [3, 4, 5, 7]]]", "odd positive"),
        ("[-1, 1, ESMoE, []]", "the first arg is the output channels c2"),
    ],
)
def test_bad_esmoe_rows_fail_with_the_layer_named(tmp_path, row, match):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "nc: 2\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - " + row + "\nhead:\n  - [[1], 1, Detect, [nc]]\n"
    )
    with pytest.raises(ValueError, match=match) as info:
        YOLOMaster(str(cfg))
    assert "layer 1" in str(info.value)


def test_esmoe_can_change_width_and_repeat(tmp_path):
    cfg = tmp_path / "custom.yaml"
    cfg.write_text(
        "nc: 2\nscales:\n  n: [1.0, 0.5, 1024]\nbackbone:\n  - [-1, 1, Conv, [32, 3, 2]]\n"
        "  - [-1, 2, ESMoE, [64, 4, 2]]\n  - [-1, 1, Conv, [64, 3, 2]]\n"
        "head:\n  - [[2], 1, Detect, [nc]]\n"
    )
    model = YOLOMaster(str(cfg)).model
    first, second = model.model[1]
    assert (first.c1, first.c2, second.c1, second.c2) == (16, 32, 32, 32)
    assert not first.add and second.add  # the shortcut only where channels are preserved
    assert model.model[2].conv.in_channels == 32


@pytest.mark.parametrize("scale", ["n", "x"])
def test_gflops_are_counted_for_every_scale(scale):
    """Ultralytics profiles with uninitialised input (torch.empty): the count must not depend on it."""
    from ultralytics.utils.torch_utils import get_flops

    net = YOLOMaster(f"{scale}.yaml").model
    for _ in range(3):
        assert get_flops(net, 640) == pytest.approx({"n": 9.2, "x": 256.6}[scale], abs=0.1)
