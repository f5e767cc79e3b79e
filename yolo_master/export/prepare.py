"""Export preparation for ES-MoE models: supported formats, the strategy each one traces, early checks.

The block's own eval forward is what gets traced; this module only sets ``ESMoE.strategy`` on every
block for the duration of an export and refuses combinations that cannot work, with one line each.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from ultralytics.utils import LOGGER

from ..integration.runtime import patched_attribute
from ..nn import EXPORT_STRATEGIES, moe_layers
from ..nn.fusion import folded_once
from .formats import DENSE_ROUTED, FORMATS, check_format, form_of

FORMAT_STRATEGY = {fmt: spec.strategy for fmt, spec in FORMATS.items()}  # each format's default graph
SUPPORTED_FORMATS = tuple(FORMATS)


def export_strategy(fmt: str, strategy: str | None, dynamic: bool, has_moe: bool) -> str | None:
    """Validate an export request; return the ES-MoE strategy to trace (None for models without ES-MoE).

    Raises:
        ValueError: unsupported format, unknown strategy, or a dynamic batch with a sparse strategy.
        RuntimeError: the format's packages (or, for engine, the GPU) are missing.
    """
    if fmt == "engine" and has_moe and not torch.cuda.is_available():
        raise RuntimeError(
            "format=engine builds a TensorRT engine and needs an NVIDIA GPU: this machine has no CUDA device "
            "(format=onnx works here; run scripts/gpu_check.sh where a GPU is)"
        )
    if not has_moe:
        if fmt in FORMATS and fmt != "engine":  # stock models: Ultralytics decides; a missing package is one line
            check_format(fmt)
        return None
    spec = check_format(fmt)
    if strategy is None and dynamic and spec.dynamic_strategy:
        strategy = spec.dynamic_strategy  # the sparse default unrolls a static batch
    strategy = strategy or spec.strategy
    if strategy not in EXPORT_STRATEGIES:
        raise ValueError(f"unknown export strategy '{strategy}': choose one of {', '.join(EXPORT_STRATEGIES)}")
    if dynamic and form_of(strategy) != DENSE_ROUTED:
        raise ValueError(
            f"dynamic=True cannot trace the sparse '{strategy}' ES-MoE graph (it unrolls a static batch): "
            "export with a fixed batch=N, or pass strategy=dense for a dynamic graph that computes every expert"
        )
    return strategy


def export_form(fmt: str, strategy: str, dynamic: bool = False) -> str:
    """The line export logs: which routing form ``fmt`` gets and why."""
    spec, form = FORMATS.get(fmt), form_of(strategy)
    what = "only the chosen experts run"
    if form == DENSE_ROUTED:
        what = "every expert computed, the unchosen weighted by 0"
    why = spec.why if spec and strategy == spec.strategy else f"strategy={strategy} was asked for"
    if spec and strategy == spec.dynamic_strategy and dynamic:
        why = f"dynamic=True: the default {spec.strategy} graph unrolls a static batch, {strategy} does not"
    line = f"ES-MoE routing kept in the graph, {form} form ({strategy}: {what}): {why}"
    if spec and spec.depthwise_tile:
        t = spec.depthwise_tile
        line += f"; experts' depthwise kernels above {t}x{t} written as {t}x{t} blocks (its runtime is slow on larger)"
    return line


def check_converted(fmt: str, exported: str | None) -> None:
    """Converters that report success for a graph their runtime cannot load: say so in one line.

    pnnx writes layers it could not map to ncnn as ``torch.*`` / ``aten::*`` entries of the ``.param``
    file (ncnn then fails to load them); Ultralytics reports the export as a success.
    """
    if fmt != "ncnn" or not exported:
        return
    params = sorted(Path(exported).glob("*.param"))
    left = sorted(
        {
            line.split()[0]
            for p in params
            for line in p.read_text().splitlines()[2:]
            if line.split() and line.split()[0].startswith(("torch.", "aten::", "pnnx.", "F."))
        }
    )
    if left:
        raise RuntimeError(
            f"pnnx left {', '.join(left)} unconverted in {exported}: ncnn cannot run it "
            "(export with the default strategy=masked)"
        )


def report_placement(fmt: str, exported: str | None) -> None:
    """Say what runs where when a converter splits the model between an accelerator and the host CPU
    without saying so (DEEPX: the NPU stops at the first operation it lacks, the rest runs on the CPU)."""
    if fmt != "deepx" or not exported:
        return
    from .dxnn import describe, read_partitions

    LOGGER.warning(f"yolo-master export: format=deepx: {describe(read_partitions(exported))}")


@contextmanager
def deepx_compiler_in_a_child(fmt: str):
    """Run DEEPX's compiler (``dx_com.compile``, which Ultralytics calls in-process) in a child process.

    After a compile in-process, later OpenVINO work in that process crashed it (a segfault, reproduced
    with the DEEPX test followed by tests/test_openvino.py; importing dx-com alone did not): dx-com leaves
    something behind. Its arguments are paths and numbers, so the child gets them as JSON."""
    if fmt != "deepx":
        yield
        return
    import dx_com

    check_deepx_disk()

    def compile_in_a_child(**kwargs):
        code = "import json, sys, dx_com; dx_com.compile(**json.loads(sys.argv[1]))"
        args = [sys.executable, "-c", code, json.dumps(kwargs)]
        errors, last = [], ""
        with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as child:
            for line in child.stdout:  # shown as it comes (progress bars); what it says last is kept for the error
                sys.stdout.write(line)
                last = line.strip() or last
                if "[ERROR] - " in line and not line.rstrip().endswith("="):
                    errors.append(line.split("[ERROR] - ", 1)[1].strip())
        if child.returncode != 0:  # its own error line, else the last line (a Python exception's message)
            why = errors[-1] if errors else last
            raise RuntimeError(f"DEEPX's compiler (dx-com) failed with exit status {child.returncode}: {why}")

    with patched_attribute(dx_com, "compile", compile_in_a_child):
        yield


DEEPX_FREE_DISK_GB = 8  # dx-com 2.5 stops before compiling below this ("Requires available disk size higher than 8")


def check_deepx_disk(folder: str | Path = ".") -> None:
    """DEEPX's compiler needs ``DEEPX_FREE_DISK_GB`` free (in the working directory and the temporary one):
    say so before exporting, not as an exit status from deep inside it."""
    import tempfile

    places = {Path(folder).resolve(), Path(tempfile.gettempdir()).resolve()}
    free, where = min((shutil.disk_usage(p).free / 2**30, p) for p in places)
    if free < DEEPX_FREE_DISK_GB:
        raise RuntimeError(
            f"format=deepx: DEEPX's compiler (dx-com) needs {DEEPX_FREE_DISK_GB} GB of free disk; {where} has "
            f"{free:.1f} GB: free some space and export again"
        )


WEIGHT_OPS = ("TopK", "ScatterElements", "GatherElements", "Gather", "Reshape")  # the top-K weights, per expert


def routing_nodes(onnx_file: str | Path) -> list[str]:
    """The ONNX nodes that compute the routing of every ES-MoE layer: the gate (``/model.N/router/...``)
    and, in the layers that hold a TopK, the top-K weights scattered, gathered and reshaped per expert."""
    import onnx

    nodes = onnx.load(str(onnx_file), load_external_data=False).graph.node

    def layer(name: str) -> str:
        return name.split("/")[1] if name.count("/") > 1 else ""

    routed = {layer(n.name) for n in nodes if n.op_type == "TopK"} - {""}
    return [n.name for n in nodes if layer(n.name) in routed and ("/router/" in n.name or n.op_type in WEIGHT_OPS)]


@contextmanager
def xilinx_routing_in_float(fmt: str):
    """Keep the routing out of AMD Quark's VINT8 quantization (Ultralytics' ``format=xilinx`` excludes only the
    head): an int8 gate's close scores would pick experts by rounding. The NPU runs float nodes in bf16."""
    if fmt != "xilinx":
        yield
        return
    from quark.onnx import ModelQuantizer

    quantize = ModelQuantizer.quantize_model

    def quantize_model(self, model_input, *args, **kwargs):
        routing = routing_nodes(model_input)
        LOGGER.info(f"yolo-master export: format=xilinx: {len(routing)} routing nodes kept in float")
        self.config.nodes_to_exclude = [*self.config.nodes_to_exclude, *routing]
        return quantize(self, model_input, *args, **kwargs)

    with patched_attribute(ModelQuantizer, "quantize_model", quantize_model):
        yield


ONNX2TF_SAMPLE = Path("calibration_image_sample_data_20x128x128x3_float32.npy")


@contextmanager
def offline_onnx2tf_sample(fmt: str):
    """Ultralytics downloads onnx2tf's sample images into the working directory before every TensorFlow
    export (onnx2tf runs a test inference on them). Offline, write a stand-in of the same shape there
    for the duration of the export: no image content is used from it (int8 calibration comes from
    ``data=``)."""
    import numpy as np

    write = fmt in {"saved_model", "pb"} and not ONNX2TF_SAMPLE.exists()
    if write:
        np.save(ONNX2TF_SAMPLE, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
    try:
        yield
    finally:
        if write:
            ONNX2TF_SAMPLE.unlink(missing_ok=True)


def remove_stale_qnn_context(model: nn.Module, fmt: str) -> None:
    """ONNX Runtime refuses to write a QNN context model over an existing one ("Failed to generate EP
    context model since the file ... exists already"), so a second ``format=qnn`` export failed deep in
    ONNX Runtime. Every other format overwrites its output; remove the old ``*_qnn.onnx`` first, as
    Ultralytics names it (beside the checkpoint, or in the working directory for a YAML)."""
    if fmt == "qnn":
        yaml_file = getattr(model, "yaml", {}).get("yaml_file", "")
        source = Path(getattr(model, "pt_path", None) or getattr(model, "yaml_file", None) or yaml_file)
        if source.suffix in {".yaml", ".yml"}:
            source = Path(source.name)
        stale = source.with_name(f"{source.stem}_qnn.onnx")
        if stale.is_file():
            LOGGER.info(f"yolo-master export: replacing {stale}")
            stale.unlink()


@contextmanager
def traced_strategy(
    model: nn.Module, strategy: str | None, comparisons: bool = False, depthwise_tile: int | None = None
):
    """Set ``strategy`` on every routed block of ``model`` that has strategies, and fix their folded
    weights as constants (``nn/fusion.py``), for the duration of the block; ``comparisons``: the
    ``masked`` top-K from comparisons (``ExportFormat.comparisons``); ``depthwise_tile``: the experts'
    larger depthwise kernels in blocks of at most this size (``ExportFormat.depthwise_tile``)."""
    blocks = [m for m in moe_layers(model) if strategy in m.strategies]
    saved = [b.strategy for b in blocks]
    try:
        if strategy:
            for b in blocks:
                b.strategy = strategy
                if comparisons:
                    b.router.mask_by_comparison = True
                if depthwise_tile:
                    b.experts.depthwise_tile = depthwise_tile
        with folded_once(blocks if strategy else []):
            yield blocks
    finally:
        for b, s in zip(blocks, saved):
            b.strategy = s
            b.router.__dict__.pop("mask_by_comparison", None)
            b.experts.__dict__.pop("depthwise_tile", None)
