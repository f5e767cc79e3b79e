"""What an exported ONNX graph contains: op counts, conditionals, convolutions with graph-valued weights."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class GraphReport:
    """Facts about one ONNX model (main graph plus every subgraph)."""

    opset: int
    ops: Counter = field(default_factory=Counter)  # op type -> count, subgraphs included
    dynamic_weight_convs: int = 0  # Conv nodes whose weight is computed in the graph, not a constant
    constant_conv_shapes: list[tuple[int, ...]] = field(default_factory=list)  # the others' weight shapes
    if_branch_ops: list[tuple[list[str], list[str]]] = field(default_factory=list)  # (then ops, else ops) per If

    def has(self, op: str) -> bool:
        return self.ops[op] > 0


def _walk(graph, constants: dict[str, tuple[int, ...]], report: GraphReport, graph_attr: int) -> None:
    """``constants``: name -> shape of every constant visible here (outer graphs' included)."""
    constants = {**constants, **{i.name: tuple(i.dims) for i in graph.initializer}}
    for n in graph.node:
        if n.op_type == "Constant":
            value = next((a.t for a in n.attribute if a.name == "value"), None)
            constants[n.output[0]] = tuple(value.dims) if value is not None else ()
    for node in graph.node:
        report.ops[node.op_type] += 1
        if node.op_type == "Conv" and node.input[1] not in constants:
            report.dynamic_weight_convs += 1
        elif node.op_type == "Conv":
            report.constant_conv_shapes.append(constants[node.input[1]])
        branches = {a.name: a.g for a in node.attribute if a.type == graph_attr}
        if node.op_type == "If":
            then_ops = [n.op_type for n in branches["then_branch"].node]
            report.if_branch_ops.append((then_ops, [n.op_type for n in branches["else_branch"].node]))
        for sub in branches.values():
            _walk(sub, constants, report, graph_attr)


def inspect_onnx(path: str | Path) -> GraphReport:
    """Load ``path`` and report its ops (requires the ``onnx`` package)."""
    import onnx

    model = onnx.load(str(path))
    opset = max((o.version for o in model.opset_import if o.domain in {"", "ai.onnx"}), default=0)
    report = GraphReport(opset=opset)
    _walk(model.graph, {}, report, onnx.AttributeProto.GRAPH)
    return report
