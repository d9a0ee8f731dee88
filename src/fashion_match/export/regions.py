"""Which nodes of an exported graph are the backbone, and which are its fragile ends.

Our graphs have three parts: the in-graph preprocessing (uint8 cast, mean/std), the
convolutional backbone, and the tail (global pooling, projection, L2 normalisation). Reduced
precision belongs to the backbone only: the preprocessing is cheap and exact in FP32, and the
tail holds the reductions where FP16 overflows (sum of squares in an L2 norm) and where INT8
rounding moves every embedding at once.

Rule: the backbone is every node downstream of a Conv that is not itself a global reduction
(or downstream of one). It holds for every model `create_model` builds.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

BACKBONE_START = {"Conv", "ConvTranspose"}
TAIL_START = {"ReduceMean", "GlobalAveragePool", "GlobalMaxPool", "ReduceL2", "LpNormalization", "Flatten"}


def _descendants(graph: Any, start: set[int]) -> set[int]:
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers[name].append(i)
    seen, stack = set(start), list(start)
    while stack:
        for out in graph.node[stack.pop()].output:
            for j in consumers[out]:
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
    return seen


def backbone_nodes(graph: Any) -> set[int]:
    """Indices (into graph.node, which ONNX keeps topologically sorted) of the backbone nodes."""
    convs = {i for i, n in enumerate(graph.node) if n.op_type in BACKBONE_START}
    after_conv = _descendants(graph, convs)
    tail_heads = {i for i in after_conv if graph.node[i].op_type in TAIL_START}
    return after_conv - _descendants(graph, tail_heads)


def split_names(graph: Any) -> tuple[list[str], list[str]]:
    """(backbone node names, other node names): the second list is what stays FP32."""
    inside = backbone_nodes(graph)
    names = [n.name for n in graph.node]
    return [names[i] for i in sorted(inside)], [names[i] for i in range(len(names)) if i not in inside]
