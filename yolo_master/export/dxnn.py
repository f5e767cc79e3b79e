"""What runs where in a DEEPX ``.dxnn`` model: its NPU subgraph and the ONNX subgraphs left to the host CPU.

DEEPX's compiler (dx-com) reports success whatever it could not place on the NPU; the ``.dxnn`` file says
it. Its layout (dx-com 2.5): ``DXNN``, a small binary prefix, a JSON header (``payload_offset`` and, per
entry, an ``offset`` and ``size`` into the payload), then the payload: ``graph_info`` (JSON: the subgraphs
in order, each with its device) and ``cpu_models`` (one ONNX model per CPU subgraph).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import NamedTuple


class Partition(NamedTuple):
    """One subgraph of a ``.dxnn`` model."""

    name: str
    device: str  # "NPU" or "CPU"
    onnx_ops: Counter  # the operation counts of a CPU subgraph's ONNX model (empty for the NPU)
    size: int  # bytes of that ONNX model (0 for the NPU)


def read_partitions(dxnn: str | Path) -> list[Partition]:
    """The subgraphs of ``dxnn`` (a ``.dxnn`` file or the ``*_deepx_model`` folder holding one), in order."""
    import onnx

    path = Path(dxnn)
    if path.is_dir():
        path = next(path.glob("*.dxnn"))
    blob = path.read_bytes()
    if not blob.startswith(b"DXNN"):
        raise ValueError(f"{path} is not a DEEPX .dxnn model")
    start = blob.index(b"{")
    header = json.JSONDecoder().raw_decode(blob[start:].decode("latin-1"))[0]
    base = header["payload_offset"]

    def payload(entry: dict) -> bytes:
        return blob[base + entry["offset"] : base + entry["offset"] + entry["size"]]

    graphs = json.loads(payload(header["data"]["graph_info"]))["graphs"]
    cpu_models = header["data"].get("cpu_models", {})
    partitions = []
    for graph in graphs:
        ops, size = Counter(), 0
        if graph["name"] in cpu_models:
            model = payload(cpu_models[graph["name"]])
            ops, size = Counter(n.op_type for n in onnx.load_from_string(model).graph.node), len(model)
        partitions.append(Partition(graph["name"], graph["device"], ops, size))
    return partitions


def describe(partitions: list[Partition]) -> str:
    """One line: which subgraphs run on the NPU and what the CPU ones hold."""
    parts = []
    for p in partitions:
        if p.device == "CPU":
            top = ", ".join(f"{op} x{n}" for op, n in p.onnx_ops.most_common(4))
            parts.append(
                f"{p.name} on the host CPU ({sum(p.onnx_ops.values())} ONNX nodes, {p.size / 1e6:.1f} MB: {top}, ...)"
            )
        else:
            parts.append(f"{p.name} on the {p.device}")
    return "; ".join(parts)
