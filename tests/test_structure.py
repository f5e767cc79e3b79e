"""The package's floors, its one place for Ultralytics internals, and its extension points.

- imports go downward only: ``nn/`` is the bottom floor and imports nothing above it; no module
  imports one of a higher floor, even inside a function, so there are no import cycles to hide;
- every module imports on its own;
- a router is added with one class and one registry line, and then trains, saves, loads and exports;
- options are fixed when a block is built; ``info`` and ``routes`` leave the caller's model alone.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO, images, zoo_dict

import yolo_master
from yolo_master import ESMoE, YOLOMaster
from yolo_master.nn import ROUTERS, MoEOptions, Router, Routing, register_router
from yolo_master.nn.routers.base import load_balancing_loss, scatter_dense

PACKAGE = REPO / "yolo_master"
# Lower floors never import higher ones. Modules of one floor may import each other (acyclically).
FLOORS = {
    "nn": 0,
    "zoo": 1,
    "yaml_check": 1,
    "data": 1,
    "validate": 1,
    "models": 2,
    "integration": 3,
    "engine": 4,
    "export": 5,
    "upcycle": 5,
    "official": 5,
    "info": 6,
    "routes": 6,
    "benchmark": 6,
    "model": 6,
    "cli": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int | None:
    parts = module.split(".")
    return FLOORS.get(parts[1]) if len(parts) > 1 else None  # the package itself is the top


def is_module(name: str) -> bool:
    """True when ``name`` is a module or package of ours (``from . import x`` imports a module)."""
    path = REPO / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(path: Path) -> set[str]:
    """Every ``yolo_master`` module ``path`` imports, at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("yolo_master"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names if is_module(f"{target}.{a.name}")}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("yolo_master")}
    return found


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_imports_go_downward_only():
    wrong = []
    for name, path in all_modules().items():
        mine = floor(name)
        for target in imported_modules(path):
            theirs = floor(target)
            if mine is not None and theirs is not None and theirs > mine:
                wrong.append(f"{name} (floor {mine}) imports {target} (floor {theirs})")
    assert not wrong, "\n".join(wrong)


def test_nn_imports_nothing_of_the_package_above_it():
    for name, path in all_modules().items():
        if name.startswith("yolo_master.nn"):
            outside = {t for t in imported_modules(path) if not t.startswith("yolo_master.nn")}
            assert not outside, f"{name} imports {outside}"


def test_the_import_graph_has_no_cycle():
    graph = {name: {t for t in imported_modules(path) if t in all_modules()} for name, path in all_modules().items()}
    done, active = set(), []

    def visit(node):
        if node in active:
            raise AssertionError("import cycle: " + " -> ".join(active[active.index(node) :] + [node]))
        if node in done:
            return
        active.append(node)
        for nxt in graph[node]:
            if nxt != node and not node.startswith(nxt + "."):  # a submodule's own package is already loading
                visit(nxt)
        active.pop()
        done.add(node)

    for node in graph:
        visit(node)


def test_every_module_imports_on_its_own():
    """In one fresh interpreter, each module in turn with every ``yolo_master`` module unloaded first."""
    names = [n for n in all_modules() if not n.endswith("__main__")]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'yolo_master' or m.startswith('yolo_master.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
        "print('ok', len(sys.modules) > 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0 and "ok True" in proc.stdout, proc.stderr[-3000:]


# ---- adding a router -------------------------------------------------------------------------------------


class FirstKRouter(Router):
    """A toy router: always the first K experts, weighted by a softmax of their gate logits.

    It keeps one piece of state (optimizer steps seen), which the EMA must copy, not average.
    """

    state_buffers = ("steps",)

    def __init__(self, c1: int, num_experts: int, top_k: int, reduction: int = 8) -> None:
        super().__init__(c1, num_experts, top_k, reduction)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> Routing:
        logits = self.gate(x)
        indices = torch.arange(self.top_k, device=x.device).expand(x.shape[0], -1)
        weights = logits.gather(1, indices).softmax(-1)
        dense = scatter_dense(indices, weights, self.num_experts)
        return Routing(indices, weights, dense, load_balancing_loss(dense), logits)

    def after_step(self, progress: float) -> None:
        self.steps += 1


@pytest.fixture
def first_k_router():
    register_router("first_k", FirstKRouter)
    yield FirstKRouter
    ROUTERS.pop("first_k")


def test_a_registered_router_trains_saves_loads_and_exports(first_k_router, tmp_path, shapes_yaml):
    import yaml

    cfg = {k: v for k, v in zoo_dict("n.yaml", router="first_k").items() if k not in {"yaml_file", "channels"}}
    path = tmp_path / "first-k-n.yaml"
    path.write_text(yaml.safe_dump(cfg))
    model = YOLOMaster(str(path))
    assert all(isinstance(m.router, FirstKRouter) for m in model.model.modules() if isinstance(m, ESMoE))
    model.train(
        data=str(shapes_yaml), epochs=1, imgsz=64, batch=8, nbs=8, workers=0, plots=False, val=False,
        project=str(tmp_path), name="run", device="cpu",
    )  # fmt: skip
    last = tmp_path / "run" / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=False)
    saved = [m.router for m in (ckpt["ema"] or ckpt["model"]).modules() if isinstance(m, ESMoE)]
    # 16 images, batch 8, an optimizer step per batch: the state reached the EMA by copy (2 steps)
    assert len(saved) == 3 and all(isinstance(r, FirstKRouter) and int(r.steps) == 2 for r in saved)
    from yolo_master.integration.checkpoints import checkpoint_classes

    assert checkpoint_classes()[f"{FirstKRouter.__module__}.FirstKRouter"] is FirstKRouter  # safe loading knows it
    loaded = YOLOMaster(str(last))
    assert loaded.model.model[3].last_routing is None
    onnx = loaded.export(format="onnx", imgsz=64)
    from yolo_master.export.parity import run_onnx

    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = loaded.model.float().eval()(x)[0]
    assert np.abs(run_onnx(onnx, x)[0] - ref.numpy()).max() <= 1e-3 * ref.abs().max().item()


def test_an_unknown_router_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="router: magic': choose topk, soft, variable_k"):
        MoEOptions(router="magic")


# ---- options at construction ------------------------------------------------------------------------------


def test_options_are_fixed_at_construction():
    options = MoEOptions(shared=True)
    a, b = ESMoE(16, 16, 4, 3, options=options), ESMoE(16, 16, 4, 3, options=options)
    assert a.state_dict().keys() == b.state_dict().keys() and a.top_k == b.top_k == 2  # one slot for the shared
    assert not hasattr(a, "configure")
    with pytest.raises(AttributeError):
        options.shared = False  # frozen
    with pytest.raises(ValueError, match="positive factor"):
        MoEOptions(capacity=float("nan"))


def test_options_that_match_no_block_are_an_error():
    from yolo_master.models import YOLOMasterDetectionModel

    d = zoo_dict(str(REPO / "cfg" / "detect" / "yolo-master-himoe.yaml"), balance="bias")
    with pytest.raises(ValueError, match="apply to ESMoE blocks, and this model has none"):
        YOLOMasterDetectionModel(d, verbose=False)


# ---- commands leave the caller's model alone ----------------------------------------------------------------


def _modes(net: torch.nn.Module) -> list[bool]:
    return [m.training for m in net.modules()]


def test_info_leaves_the_model_as_it_found_it():
    from yolo_master.info import model_info

    model = YOLOMaster("n.yaml")
    model.model.train()
    model.model.model[3].eval()  # a mixed state, as a user might leave it
    before = _modes(model.model)
    model_info(model, imgsz=64)
    assert _modes(model.model) == before


def test_routes_leaves_the_model_as_it_found_it(tmp_path):
    from yolo_master.routes import routes

    model = YOLOMaster("n.yaml")
    model.model.half().train()
    cv2.imwrite(str(tmp_path / "a.png"), (images(1, c=3, size=64)[0].permute(1, 2, 0).clamp(0, 1) * 255).numpy())
    png = routes(model, tmp_path / "a.png", imgsz=64, project=str(tmp_path))
    assert png.is_file()
    assert all(_modes(model.model)) and next(model.model.parameters()).dtype == torch.float16


def test_every_routed_block_is_found_the_same_way():
    from yolo_master.nn import moe_layers

    model = YOLOMaster("n.yaml").model
    assert [m.i for m in moe_layers(model)] == [3, 6, 9]
    assert yolo_master.nn.RoutedBlock in type(moe_layers(model)[0]).__mro__


def test_every_part_of_the_package_has_a_floor():
    tops = {name.split(".")[1] for name in all_modules() if name.count(".") >= 1}
    assert tops <= set(FLOORS) | {"__init__"}, tops - set(FLOORS)
