"""Small ONNX graph-editing helpers shared by the precision converters."""

from __future__ import annotations

from typing import Any


def drop_unused_initializers(graph: Any) -> None:
    """Remove initializers no node reads any more (weights replaced by converted copies)."""
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def shapes_from_the_cast(model: Any) -> None:
    """Let Shape/Size nodes read a uint8 input's Cast instead of the input (same shape).

    torch's exporter reads the batch size off the raw input; TensorRT takes a uint8 input only
    straight into a Cast (see export.trt_rules), so those reads move one node down.
    """
    from onnx import TensorProto

    g = model.graph
    for inp in g.input:
        if inp.type.tensor_type.elem_type != TensorProto.UINT8:
            continue
        cast = next((n for n in g.node if n.op_type == "Cast" and list(n.input) == [inp.name]), None)
        if cast is None:
            continue
        for node in g.node:
            if node.op_type in ("Shape", "Size"):
                for i, name in enumerate(node.input):
                    if name == inp.name:
                        node.input[i] = cast.output[0]
    # a Cast of a graph input depends on nothing else: first in the list, it precedes its new readers
    inputs = {i.name for i in g.input}
    nodes = list(g.node)
    first = [n for n in nodes if n.op_type == "Cast" and n.input[0] in inputs]
    firsts = {id(n) for n in first}
    del g.node[:]
    g.node.extend(first + [n for n in nodes if id(n) not in firsts])
