"""Where an exported model's time goes, per model layer or per node of one layer, from the runtime's profiler.

    python scripts/profile_layers.py yolo-master-n.onnx                          # ms per layer, ONNX Runtime
    python scripts/profile_layers.py yolo-master-n_openvino_model/ --layer 3     # layer 3's nodes, OpenVINO
    python scripts/profile_layers.py model.onnx --layer 3 --top 30 --out reports/profile.md

ONNX Runtime's own profiler (``enable_profiling``) or OpenVINO's per-node counters (``PERF_COUNT``,
float32 as yolo-master runs full-precision IRs), batch 1 on random input at the model's static shape,
``--threads`` threads, averaged over ``--runs`` runs after ``--warmup``. A node belongs to layer N when
its name holds ``model.N`` (Ultralytics' module names survive export; a layout conversion between two
layers counts for the one it feeds); nodes whose name names no layer are listed as ``unattributed``:
ONNX Runtime's own layout reorders, and nodes OpenVINO renamed while fusing (a BatchNorm folded into a
convolution becomes ``Multiply_N``: list them with ``--layer -1``). One model per call, so each runtime
lives in a process of its own. The README's per-node figures for the ES-MoE blocks come from here.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path

from report import emit

from yolo_master.export import timing

LAYER = re.compile(r"model\.(\d+)\b")
UNATTRIBUTED = "unattributed"


def onnxruntime_nodes(path: Path, threads: int, warmup: int, runs: int) -> dict[str, tuple[str, float]]:
    """Node name -> (operator, mean ms per run) from ONNX Runtime's profiler."""
    with tempfile.TemporaryDirectory() as tmp:
        session = timing.onnx_session(path, threads, profile_prefix=str(Path(tmp) / "profile"))
        name, x = timing.onnx_input(session)
        for _ in range(warmup + runs):
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    kernels = kernels[len(kernels) * warmup // (warmup + runs) :]  # every run executes the same nodes
    nodes: dict[str, tuple[str, float]] = {}
    for e in kernels:
        name = e["name"][: -len("_kernel_time")]
        op, ms = nodes.get(name, (e["args"].get("op_name", "?"), 0.0))
        nodes[name] = (op, ms + e["dur"] / 1e3 / runs)
    return nodes


def openvino_nodes(path: Path, threads: int, warmup: int, runs: int) -> dict[str, tuple[str, float]]:
    """Node name -> (kernel, mean ms per run) from OpenVINO's per-node performance counters."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(timing.openvino_xml(path)))
    compiled = core.compile_model(model, "CPU", {**timing.openvino_config(threads), "PERF_COUNT": True})
    request = compiled.create_infer_request()
    x = timing.openvino_input(model)
    for _ in range(warmup):
        request.infer({0: x})
    totals: dict[str, float] = defaultdict(float)
    kinds: dict[str, str] = {}
    for _ in range(runs):
        request.infer({0: x})
        for info in request.profiling_info:
            totals[info.node_name] += info.real_time.total_seconds() * 1e3 / runs
            kinds[info.node_name] = f"{info.node_type} ({info.exec_type})"
    return {name: (kinds[name], ms) for name, ms in totals.items()}


def layer_of(name: str) -> str:
    """``'3'`` for a node of ``model.3``; ``'unattributed'`` for one without a model layer in its name.

    A layout conversion OpenVINO inserts is named after both ends (``/model.2/...Conv_acdb_abcd_/model.3/
    Gather``): it counts for the last layer named, the one that needed it."""
    found = LAYER.findall(name)
    return found[-1] if found else UNATTRIBUTED


def per_layer_table(nodes: dict[str, tuple[str, float]]) -> str:
    totals: dict[str, float] = defaultdict(float)
    for name, (_, ms) in nodes.items():
        totals[layer_of(name)] += ms
    whole = sum(totals.values())
    order = sorted(totals, key=lambda k: (k == UNATTRIBUTED, int(k) if k.isdigit() else 0))
    rows = [f"| {k} | {totals[k]:.2f} | {100 * totals[k] / whole:.1f}% |" for k in order]
    return "\n".join(["| layer | ms | share |", "|---|---|---|", *rows, f"| all | {whole:.2f} | 100% |"])


def layer_nodes_table(nodes: dict[str, tuple[str, float]], layer: int, top: int) -> str:
    key = UNATTRIBUTED if layer < 0 else str(layer)
    mine = {name: v for name, v in nodes.items() if layer_of(name) == key}
    if not mine:
        raise SystemExit(f"no node of layer {layer} (model.{layer}) in this model's profile")
    ranked = sorted(mine.items(), key=lambda kv: -kv[1][1])
    rows = [f"| {name} | {op} | {ms:.3f} |" for name, (op, ms) in ranked[:top]]
    whole = sum(ms for _, ms in mine.values())
    footer = f"| all {len(mine)} nodes of {'no layer' if layer < 0 else f'layer {layer}'} | | {whole:.3f} |"
    return "\n".join(["| node | operator | ms |", "|---|---|---|", *rows, footer])


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="an .onnx file, or an OpenVINO model folder / .xml")
    ap.add_argument("--layer", type=int, help="list this layer's nodes (-1: the unattributed ones), not per layer")
    ap.add_argument("--top", type=int, default=20, help="nodes listed with --layer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--out", type=Path, help="also write the table here")
    a = ap.parse_args(argv)
    if min(a.runs, a.threads, a.top) < 1 or a.warmup < 0:
        ap.error("--runs, --threads and --top must be >= 1 and --warmup >= 0")
    kind = timing.runtime_of(a.model)
    if kind not in {"onnx", "openvino"}:
        ap.error(f"'{a.model}' is not an existing .onnx file or OpenVINO model folder / .xml")
    profile = onnxruntime_nodes if kind == "onnx" else openvino_nodes
    nodes = profile(a.model, a.threads, a.warmup, a.runs)
    runtime = "ONNX Runtime" if kind == "onnx" else "OpenVINO (float32)"
    head = f"{a.model.name}, {runtime} CPU, {a.threads} threads, mean of {a.runs} runs after {a.warmup}\n\n"
    table = per_layer_table(nodes) if a.layer is None else layer_nodes_table(nodes, a.layer, a.top)
    return emit(head + table, a.out)


if __name__ == "__main__":
    main()
