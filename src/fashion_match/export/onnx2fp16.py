"""`onnx2fp16`: an FP16 copy of an FP32 graph whose fragile parts stay FP32.

Only the backbone (see `export.regions`) is converted: its float weights become FP16 and
Cast nodes sit where it meets the FP32 parts. The input cast and mean/std stay FP32 (uint8
pixels are exact there), and so does the tail: global pooling, projection and the L2
normalisation, whose sum of squares overflows FP16 (65504) for any embedding with a norm
above ~256 - the bug TensorRT users hit in L2-normalise layers. Inputs (uint8) and outputs
(float32) keep their types, so every runtime feeds and reads the file as it does the FP32 one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.errors import ExportError
from fashion_match.export.onnx_graph import drop_unused_initializers
from fashion_match.export.regions import backbone_nodes

# float inputs that must stay FP32 even inside the backbone (they are parameters, not data)
_KEEP_FP32_INPUTS = {("Resize", 1), ("Resize", 2)}


def _float_types(model: Any) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def convert_fp16(model: Any) -> tuple[Any, dict[str, Any]]:
    """Return (FP16 model, summary). `model` is an `onnx.ModelProto` and is not modified."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    types = _float_types(model)
    inside = backbone_nodes(g)
    if not inside:
        raise ExportError("fp16: no convolutional backbone found in the graph; nothing to convert")
    inits = {t.name: t for t in g.initializer}
    produced_inside = {o for i in inside for o in g.node[i].output}
    graph_outputs = {o.name for o in g.output}
    consumed_outside = {name for i, n in enumerate(g.node) if i not in inside for name in n.input} | graph_outputs

    half_inits: dict[str, str] = {}
    new_nodes: list[Any] = []
    casts_in: dict[str, str] = {}
    n_cast = 0
    for i, node in enumerate(g.node):
        if i not in inside:
            new_nodes.append(node)
            continue
        for k, name in enumerate(node.input):
            if not name or types.get(name) != FLOAT or (node.op_type, k) in _KEEP_FP32_INPUTS:
                continue
            if name in produced_inside:
                continue
            if name in inits:  # weights: an FP16 copy (the FP32 one may feed the tail too)
                if name not in half_inits:
                    arr = numpy_helper.to_array(inits[name])
                    if np.abs(arr).max(initial=0) > 65504:
                        raise ExportError(f"fp16: weight {name} exceeds the FP16 range")
                    half = numpy_helper.from_array(arr.astype(np.float16), f"{name}__fp16")
                    g.initializer.append(half)
                    half_inits[name] = half.name
                node.input[k] = half_inits[name]
            else:  # activations entering the backbone
                if name not in casts_in:
                    casts_in[name] = f"{name}__fp16"
                    new_nodes.append(
                        helper.make_node("Cast", [name], [casts_in[name]], to=HALF, name=f"fp16_in_{n_cast}")
                    )
                    n_cast += 1
                node.input[k] = casts_in[name]
        if node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to" and a.i == FLOAT:
                    a.i = HALF
        new_nodes.append(node)
        for k, out in enumerate(node.output):
            if out in consumed_outside and types.get(out) == FLOAT:
                # rename inside the backbone; a Cast gives the FP32 world its old name back
                inner = f"{out}__fp16"
                node.output[k] = inner
                for j in inside:
                    other = g.node[j]
                    for m, name in enumerate(other.input):
                        if name == out:
                            other.input[m] = inner
                new_nodes.append(helper.make_node("Cast", [inner], [out], to=FLOAT, name=f"fp32_out_{n_cast}"))
                n_cast += 1
    del g.node[:]
    g.node.extend(new_nodes)
    drop_unused_initializers(g)  # the FP32 weights that only the backbone used
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    summary = {
        "fp16_nodes": len(inside),
        "fp32_nodes": len(g.node) - len(inside) - n_cast,
        "casts_inserted": n_cast,
        "kept_fp32": "input cast and normalisation, global pooling, projection, L2 normalisation",
    }
    return model, summary


def onnx2fp16(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Convert the FP32 ONNX file `src` and write the FP16 one to `dst` (atomically)."""
    import onnx

    from fashion_match.fileio import write_bytes_atomic

    try:
        model = onnx.load(str(src))
    except Exception as e:  # noqa: BLE001 - protobuf decode errors have many types
        raise ExportError(f"{src}: not a readable ONNX file ({e})") from None
    half, summary = convert_fp16(model)
    write_bytes_atomic(dst, half.SerializeToString())
    return summary
