"""Small ONNX graph-editing helpers shared by the precision converters."""

from __future__ import annotations

from typing import Any


def drop_unused_initializers(graph: Any) -> None:
    """Remove initializers no node reads any more (weights replaced by converted copies)."""
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
