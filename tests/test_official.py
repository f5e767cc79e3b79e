"""Official YOLO-Master checkpoints (github Tencent/YOLO-Master) load into our blocks, exactly.

The fixtures in ``fixtures/official/`` were written by the official code itself, in a scratch
virtualenv, with random but non-trivial weights (BatchNorm statistics calibrated then perturbed, router
weights rescaled so that routing differs between images), saved the way a release is (stripped, fp16):
``fixtures/official/README.md`` and ``make_fixtures.py`` say exactly how. ``*_ref.pt`` hold the official
model's own eval outputs (float32) and routing weights for three inputs rebuilt from seeds here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from yolo_master import YOLOMaster
from yolo_master.nn import ESMoEv0, SpatialMoE, moe_layers

FIXTURES = Path(__file__).parent / "fixtures" / "official"
DETECT_V0 = ("esmoe_n_det_v0", "esmoe_n_det_v26", "esmoe_n_det_v0_legacyattrs")


def inputs() -> dict[str, torch.Tensor]:
    """The fixtures' inputs, rebuilt from their seeds (``make_fixtures.fixed_inputs``)."""
    torch.manual_seed(0)
    x160, x224 = torch.rand(2, 3, 160, 160), torch.rand(1, 3, 224, 224)
    torch.manual_seed(1)
    a = torch.rand(1, 3, 160, 160) * 0.15
    b = torch.linspace(0, 1, 160).view(1, 1, 1, 160).expand(1, 3, 160, 160).clone()
    b[:, 1] = b[:, 1].flip(-1)
    b = (b + 0.1 * torch.rand(1, 3, 160, 160)).clamp(0, 1)
    return {"x160": x160, "x224": x224, "xmix160": torch.cat([a, b], 0)}


def reference(name: str) -> dict:
    ref_name = "esmoe_n_det_v0" if name in DETECT_V0 else name  # one set of weights, three files
    ref = torch.load(FIXTURES / f"{ref_name}_ref.pt", weights_only=True)
    for key, x in inputs().items():  # the inputs really are the ones the references were computed on
        assert x.double().sum().item() == pytest.approx(ref["inputs"][key]["sum"], rel=1e-9)
    return ref


def assert_matches_release(net: torch.nn.Module, ref: dict, tolerance: float = 1e-4) -> None:
    """Outputs within ``tolerance`` of each output's range and routing weights within 1e-5, each plus what
    float32 rounding explains.

    On one thread, as the references were computed. Some inputs are ill-conditioned for these random
    weights (area attention amplifies rounding ~1000x): ``xmix160``'s boxes move by ~1 px between one and
    two threads, or between CPUs (an AVX512 CPU here vs the references' machine). So each output also
    gets 3x its own float32 rounding error, measured against the same model in float64 (ours and the
    reference each carry about that much): ~1e-3 of the range for those inputs, ~1e-7 for well-conditioned
    ones, where the check stays as tight as ``tolerance``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _compare(net.float().eval(), ref, tolerance)
    finally:
        torch.set_num_threads(threads)


def _compare(net: torch.nn.Module, ref: dict, tolerance: float) -> None:
    net64 = copy.deepcopy(net).double()
    for key, x in inputs().items():
        with torch.no_grad():
            out, out64 = net(x), net64(x.double())
        routing = {f"model.{m.i}": m.last_routing.dense for m in moe_layers(net)}
        routing64 = {f"model.{m.i}": m.last_routing.dense for m in moe_layers(net64)}
        for a, a64, b in zip(_outputs(out), _outputs(out64), ref["outputs"][key]):
            assert a.shape == b.shape
            span = (b.max() - b.min()).item()
            rounding = (a.double() - a64).abs().max().item()
            error = (a - b).abs().max().item()
            assert error <= tolerance * span + 3 * rounding, (key, error, span, rounding)
        for layer, dense in ref["routing"][key].items():
            rounding = (routing[layer].double() - routing64[layer]).abs().max().item()
            torch.testing.assert_close(routing[layer], dense, atol=1e-5 + 3 * rounding, rtol=0)


def _outputs(out) -> list[torch.Tensor]:
    """The compared outputs: detection's decoded boxes, or segmentation's boxes and mask prototypes."""
    return [out[0]] if torch.is_tensor(out[0]) else list(out[0])


# The segmentation fixture reaches 4e-4 of the range: every layer up to the first A2C2f is equal to the bit
# (both ES-MoE blocks included); Ultralytics 8.4's area attention scales q before q^T k where the release's
# 8.3 code scales the product, and these random weights make the two A2C2f stages amplify that rounding
# ~100x each. The routing weights still agree to 1e-5.
TOLERANCE = {"esmoe_n_seg_v0": 1e-3}


@pytest.mark.parametrize("name", [*DETECT_V0, "esmoe_n_seg_v0", "v01_n_det_v0"])
def test_official_checkpoint_loads_and_matches_the_release(name):
    model = YOLOMaster(str(FIXTURES / f"{name}.pt"))
    blocks = moe_layers(model.model)
    expected = SpatialMoE if name.startswith("v01") else ESMoEv0
    assert blocks and all(isinstance(b, expected) for b in blocks)
    assert_matches_release(model.model, reference(name), TOLERANCE.get(name, 1e-4))


@pytest.mark.parametrize(
    "name,count",
    [
        ("esmoe-n.yaml", 2_694_364),
        ("esmoe-s.yaml", 9_706_828),
        ("esmoe-m.yaml", 23_911_564),
        ("esmoe-seg-n.yaml", 2_910_268),
        ("esmoe-seg-s.yaml", 10_287_596),
        ("esmoe-cls-n.yaml", 2_193_692),
        ("esmoe-cls-s.yaml", 7_592_412),
        ("v0.1-n.yaml", 7_546_984),
        ("v0.1-s.yaml", 29_151_288),
        ("v0.1-seg-n.yaml", 7_762_888),
    ],
)
def test_release_architectures_have_the_official_parameter_counts(name, count):
    net = YOLOMaster(name).model
    assert sum(p.numel() for p in net.parameters()) == count


def test_converted_model_equals_the_zoo_architecture():
    loaded = YOLOMaster(str(FIXTURES / "esmoe_n_det_v0.pt")).model
    built = YOLOMaster("esmoe-n.yaml").model
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {k: v.shape for k, v in built.state_dict().items()}


@pytest.mark.slow
def test_cli_convert_writes_a_native_checkpoint_that_loads_alone(tmp_path):
    src = FIXTURES / "esmoe_n_det_v26.pt"
    out = tmp_path / "native.pt"
    proc = run_cli("convert", f"model={src}", f"out={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "official YOLO-Master v0 checkpoint (v26.02 code layout" in proc.stdout + proc.stderr
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(out))
    assert not any(n.startswith("ultralytics.nn.modules.moe") for n in names)  # nothing of the fork left
    assert_matches_release(YOLOMaster(str(out)).model, reference("esmoe_n_det_v26"))
    again = run_cli("convert", f"model={src}", f"out={out}", cwd=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr


def test_top_k_conversion_keeps_the_weights_and_routes_sparsely(tmp_path):
    from yolo_master.official.sparse import with_top_k

    dense = YOLOMaster(str(FIXTURES / "esmoe_n_det_v0.pt")).model
    sparse = with_top_k(dense, 2)
    assert all(b.top_k == 2 and b.num_experts == 3 for b in moe_layers(sparse))
    assert all(torch.equal(a, b) for a, b in zip(dense.state_dict().values(), sparse.state_dict().values()))
    with torch.no_grad():
        sparse(inputs()["xmix160"])
    assert all(int((b.last_routing.weights != 0).sum(1).max()) == 2 for b in moe_layers(sparse))
    with pytest.raises(ValueError, match="between 1 and"):
        with_top_k(dense, 4)


@pytest.mark.slow
def test_every_entry_point_takes_an_official_checkpoint(tmp_path, shapes_yaml):
    import shutil

    src = str(shutil.copy(FIXTURES / "esmoe_n_det_v0.pt", tmp_path))  # export writes beside the checkpoint
    images = Path(shapes_yaml).parent / "images" / "val"
    for args in (
        ("info", f"model={src}", "imgsz=64"),
        ("predict", f"model={src}", f"source={images}", "imgsz=64", "save=False"),
        ("val", f"model={src}", f"data={shapes_yaml}", "imgsz=64", "batch=4", "plots=False"),
        ("routes", f"model={src}", f"source={images}", "imgsz=64", f"project={tmp_path}"),
        ("export", f"model={src}", "format=onnx", "imgsz=64"),
        ("train", f"model={src}", f"data={shapes_yaml}", "epochs=1", "imgsz=64", "batch=8", "workers=0",
         f"project={tmp_path}", "name=tune", "plots=False"),
    ):  # fmt: skip
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 0, (args[0], proc.stderr[-3000:])
        assert "official YOLO-Master v0 checkpoint" in proc.stdout + proc.stderr, args[0]
    from yolo_master.export.parity import run_onnx

    model = YOLOMaster(src)
    x = inputs()["x160"][:1]
    with torch.no_grad():
        ref = model.model.float().eval()(torch.nn.functional.interpolate(x, size=64))[0]
    out = run_onnx(Path(src).with_suffix(".onnx"), torch.nn.functional.interpolate(x, size=64))[0]
    assert abs(out - ref.numpy()).max() <= 1e-4 * float(ref.max() - ref.min())


class _Trap:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _fake_official(path: Path, cls_name: str, payload=None) -> Path:
    """A checkpoint whose pickle names ``ultralytics.nn.modules.moe.<cls_name>`` (as another release would)."""
    import sys
    import types

    module = types.ModuleType("ultralytics.nn.modules.moe")
    cls = type(cls_name, (torch.nn.Module,), {"__module__": module.__name__})
    setattr(module, cls_name, cls)
    sys.modules[module.__name__] = module
    try:
        torch.save({"model": cls(), "train_args": {}, "payload": payload}, path)
    finally:
        del sys.modules[module.__name__]
    return path


@pytest.mark.parametrize(
    "case,match",
    [
        ("v0.10", "official MoE class VisualEnhancedAdaptiveGateMoE .* not support.*supported official releases"),
        ("trap", "posix.system, which is not allowed|os.system, which is not allowed"),
        ("truncated", "truncated or corrupted"),
    ],
)
def test_unsupported_or_unsafe_official_checkpoints_fail_in_one_line(tmp_path, case, match):
    import re

    marker = tmp_path / "pwned"
    path = tmp_path / f"{case}.pt"
    if case == "v0.10":
        _fake_official(path, "VisualEnhancedAdaptiveGateMoE")
    elif case == "trap":
        _fake_official(path, "ES_MOE", payload=_Trap(str(marker)))
    else:
        data = (FIXTURES / "esmoe_n_det_v0.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    proc = run_cli("info", f"model={path}", cwd=tmp_path)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1 and path.name in errors[0] and re.search(match, errors[0]), errors
    assert proc.returncode == (2 if case == "truncated" else 1)  # a damaged file is the user's; the rest unsupported
    assert not marker.exists()  # nothing in the file ran


def test_numpy_metrics_beside_the_model_are_plain_data(tmp_path):
    """Releases may keep their metrics as numpy scalars: allowed, as Ultralytics' safe loading allows them."""
    import numpy as np

    from yolo_master.official.convert import _unpickle, checkpoint_globals

    path = _fake_official(tmp_path / "metrics.pt", "ES_MOE", payload={"mAP50": np.float64(0.5)})
    assert float(_unpickle(path, checkpoint_globals(path))["payload"]["mAP50"]) == 0.5
