"""The units a precision choice is made in: a model's blocks (or single layers) of backbone nodes.

The exporter names nodes after ONNX ops (`node_Conv_1061`), which tell a user nothing; the
module path PyTorch's exporter records in each node's metadata (`pkg.torch.onnx.name_scopes`)
does: `backbone.3` is MobileNetV2's fourth block, `attr_branch.1` the attribute branch's second.
- block: the nodes under the first numbered module of their path (`backbone.3`), or under their
  first module when it is not numbered (`attr_spaces`); an activation that is a module of its own
  joins the block that feeds it;
- layer: one compute node (Conv, MatMul, Gemm, Add, Concat, pooling) with the element-wise
  nodes that follow it (its ReLU6), named by the module that holds it (`backbone.3.conv.1`).
A graph without that metadata (another exporter's) falls back to one unit per compute node.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

GRANULARITIES = ("block", "layer")
COMPUTE = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Concat", "AveragePool", "MaxPool", "Mul"}
_NUMBERED = re.compile(r"\.\d+$")


@dataclass
class Unit:
    name: str
    nodes: list[str] = field(default_factory=list)
    ops: Counter = field(default_factory=Counter)

    @property
    def op_summary(self) -> str:
        return "+".join(f"{op}" + (f"x{n}" if n > 1 else "") for op, n in sorted(self.ops.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.name, "ops": self.op_summary, "nodes": list(self.nodes)}


def _scopes(node: Any) -> list[str]:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                value = ast.literal_eval(p.value)  # a list literal of strings; literal_eval runs nothing
            except (ValueError, SyntaxError):
                return []
            return [s for s in value if isinstance(s, str)] if isinstance(value, list) else []
    return []


def _short(scope: str) -> str:
    return scope.removeprefix("model.")


def block_of(node: Any) -> str | None:
    scopes = [s for s in _scopes(node)[1:] if s]
    modules = scopes[:-1] or scopes[:1]  # the last scope is the op itself, unless it is all there is
    for s in modules:
        if _NUMBERED.search(s):
            return _short(s)
    return _short(modules[0]) if modules else None


def layer_of(node: Any) -> str | None:
    modules = [s for s in _scopes(node)[1:-1] if s]  # the last scope is the op itself
    return _short(modules[-1]) if modules else None


def units(graph: Any, backbone: list[str], granularity: str = "block") -> list[Unit]:
    """The backbone nodes of `graph` grouped into units, in graph order."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r}: one of {GRANULARITIES}")
    inside = set(backbone)
    nodes = [n for n in graph.node if n.name in inside]
    has_metadata = any(_scopes(n) for n in nodes)
    producer: dict[str, str] = {}  # tensor -> unit name
    out: dict[str, Unit] = {}
    for n in nodes:
        fed = next((producer[i] for i in n.input if i in producer), None)
        if granularity == "block" and has_metadata:
            name = block_of(n) or n.name
            if name not in out and n.op_type not in COMPUTE and fed is not None:
                name = fed  # an activation in a module of its own (a Sequential's ReLU) joins its producer
        elif n.op_type in COMPUTE or not any(i in producer for i in n.input):
            name = (layer_of(n) if has_metadata else None) or n.name
            if name in out and n.op_type in COMPUTE:  # two compute nodes under one module: keep them apart
                name = f"{name}/{n.op_type}"
                while name in out:
                    name += "'"
        else:  # an element-wise node joins the unit of what feeds it
            assert fed is not None
            name = fed
        unit = out.setdefault(name, Unit(name))
        unit.nodes.append(n.name)
        unit.ops[n.op_type] += 1
        for o in n.output:
            producer[o] = name
    return list(out.values())
