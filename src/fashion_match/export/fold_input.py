"""Feed the uint8 pixels straight into the first INT8 convolution (ONNX Runtime flavour).

Our graphs take uint8 pixels and normalise them in-graph: Cast -> Mul(scale) -> Add(shift) ->
first Conv. Quantised for ONNX Runtime, that prologue stays FP32 and then is quantised again
to uint8 - and with the NHWC layout ORT picks for QLinearConv, those three element-wise ops
broadcast over a last axis of 3 channels: profiled on two cores at batch 32 they took about a
third of the INT8 model's time. But pixels already *are* uint8. So:

1. before calibration, the per-channel affine normalisation is folded into the first Conv's
   weights and bias, leaving Cast -> Sub(z) -> Conv' where z is the pixel value closest to the
   normalised zero (so the convolution's zero padding stays mid-grey, as in the original);
2. the Sub output's range is pinned to [-z, 255 - z]: its uint8 quantisation has scale 1 and zero
   point z, i.e. it is exactly the input pixel;
3. after quantisation, Cast -> Sub -> QuantizeLinear is removed and the pixels feed the
   DequantizeLinear directly; ORT fuses it into the first QLinearConv.

Exact except at the image border, where the padded value moves by at most |255 mean_c - z| pixel
levels (ImageNet statistics: under 0.25 in normalised units, on a 1-pixel frame); the accuracy
gate measures the whole INT8 model against FP32 as always. Not for the TensorRT flavour:
TensorRT's Q/DQ is signed INT8 and it fuses the normalisation itself.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from fashion_match.errors import ExportError
from fashion_match.export.onnx_graph import drop_unused_initializers


@dataclass(frozen=True)
class FoldedInput:
    tensor: str  # the float tensor (pixels - zero_point) that feeds the first convolution
    zero_point: int

    def to_dict(self) -> dict[str, Any]:
        return {"pixels_feed_first_conv": True, "input_zero_point": self.zero_point}


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            out[name].append(node)
    for o in graph.output:
        out[o.name].append(None)  # a graph output is a consumer no rewrite may drop
    return out


def _const(graph: Any, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    return None


def _only(consumers: dict[str, list[Any]], tensor: str, op: str) -> Any | None:
    users = consumers[tensor]
    return users[0] if len(users) == 1 and users[0] is not None and users[0].op_type == op else None


def _replace_initializer(graph: Any, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper

    for i, init in enumerate(graph.initializer):
        if init.name == name:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
            return
    graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))


def _transpose_before_cast(g: Any, uint8_inputs: set[str]) -> None:
    """input -> Cast -> Transpose becomes input -> Transpose -> Cast (exact: both move or convert
    each value alone), so the pixels reach the Cast in NCHW and can later skip it. The exporter
    writes cast-first graphs for TensorRT; this file is for ONNX Runtime, which transposes uint8."""
    from onnx import helper

    while True:  # one rewrite per pass: the node list is rebuilt each time
        consumers = _consumers(g)
        found = next(
            (
                (c, users[0])
                for c in g.node
                if c.op_type == "Cast" and c.input[0] in uint8_inputs
                # one Transpose reads the cast; any other reader only asks for its shape
                for users in [sorted(consumers[c.output[0]], key=lambda n: n is None or n.op_type != "Transpose")]
                if users
                and users[0] is not None
                and users[0].op_type == "Transpose"
                and all(u is not None and u.op_type in ("Shape", "Size") for u in users[1:])
            ),
            None,
        )
        if found is None:
            return
        cast, transpose = found
        raw, float_nhwc = cast.input[0], cast.output[0]
        perm = next(helper.get_attribute_value(a) for a in transpose.attribute if a.name == "perm")
        moved = helper.make_node("Transpose", [raw], [raw + "_nchw"], name=transpose.name + "_uint8", perm=perm)
        cast.input[0], cast.output[0] = moved.output[0], transpose.output[0]
        nodes = [n for n in g.node if n is not transpose]
        nodes.insert(nodes.index(cast), moved)
        for n in nodes:  # Shape and friends that read the float NHWC tensor read the raw input instead
            for i, name in enumerate(n.input):
                if name == float_nhwc:
                    n.input[i] = raw
        del g.node[:]
        g.node.extend(nodes)


def fold_normalisation(model: Any) -> FoldedInput | None:
    """Rewrite `model` in place (see the module doc); None, untouched, when the prologue is not ours."""
    from onnx import TensorProto, helper

    g = model.graph
    uint8_inputs = {i.name for i in g.input if i.type.tensor_type.elem_type == TensorProto.UINT8}
    _transpose_before_cast(g, uint8_inputs)
    consumers = _consumers(g)
    for cast in g.node:
        to = next((helper.get_attribute_value(a) for a in cast.attribute if a.name == "to"), None)
        if cast.op_type != "Cast" or to != TensorProto.FLOAT:
            continue
        src = next((n for n in g.node if cast.input[0] in n.output), None)
        from_input = cast.input[0] in uint8_inputs or (
            src is not None and src.op_type == "Transpose" and src.input[0] in uint8_inputs
        )
        mul = _only(consumers, cast.output[0], "Mul")
        add = mul and _only(consumers, mul.output[0], "Add")
        conv = add and _only(consumers, add.output[0], "Conv")
        if not (from_input and mul and add and conv and len(conv.input) >= 2):
            continue
        scale = _const(g, mul.input[1])
        shift = _const(g, add.input[1])
        weight = _const(g, conv.input[1])
        if scale is None or shift is None or weight is None or weight.ndim != 4:
            continue
        channels = weight.shape[1]
        group = next((helper.get_attribute_value(a) for a in conv.attribute if a.name == "group"), 1)
        if group != 1 or scale.size != channels or shift.size != channels:
            continue
        a = scale.reshape(channels).astype(np.float64)
        b = shift.reshape(channels).astype(np.float64)
        z = int(np.clip(np.rint(np.mean(-b / a)), 0, 255))
        bias = _const(g, conv.input[2]) if len(conv.input) > 2 else None
        w = weight.astype(np.float64)
        new_w = w * a[None, :, None, None]
        new_b = (0.0 if bias is None else bias.astype(np.float64)) + (w * (b + z * a)[None, :, None, None]).sum(
            axis=(1, 2, 3)
        )
        w_name, b_name = conv.input[1] + "_folded_input", conv.name + "_folded_input_bias"
        _replace_initializer(g, w_name, new_w)
        _replace_initializer(g, b_name, new_b)
        z_name, centred = cast.output[0] + "_zero_point", cast.output[0] + "_centred"
        _replace_initializer(g, z_name, np.array(z, np.float32))
        sub = helper.make_node("Sub", [cast.output[0], z_name], [centred], name=cast.name + "_centre")
        conv.input[0] = centred
        del conv.input[1:]
        conv.input.extend([w_name, b_name])
        nodes = [n for n in g.node if n is not mul and n is not add]
        nodes.insert(nodes.index(cast) + 1, sub)
        del g.node[:]
        g.node.extend(nodes)
        drop_unused_initializers(g)
        return FoldedInput(centred, z)
    return None


def feed_pixels_directly(model: Any, folded: FoldedInput) -> None:
    """After quantisation: drop Cast -> Sub -> QuantizeLinear so the uint8 pixels reach the DequantizeLinear."""
    g = model.graph
    consumers = _consumers(g)
    sub = next((n for n in g.node if folded.tensor in n.output), None)
    quant = _only(consumers, folded.tensor, "QuantizeLinear")
    cast = sub and next((n for n in g.node if sub.input[0] in n.output and n.op_type == "Cast"), None)
    if sub is None or quant is None or cast is None or len(consumers[cast.output[0]]) != 1:
        raise ExportError("int8: the folded input is not quantised as expected (no QuantizeLinear after it)")
    scale, zero = _const(g, quant.input[1]), _const(g, quant.input[2]) if len(quant.input) > 2 else None
    if scale is None or zero is None or zero.dtype != np.uint8 or float(scale) != 1.0 or int(zero) != folded.zero_point:
        raise ExportError(
            f"int8: the folded input was quantised with scale {scale} and zero point {zero}, "
            f"not 1 and {folded.zero_point}; the pixels cannot feed it directly"
        )
    pixels = cast.input[0]
    for node in consumers[quant.output[0]]:
        if node is None:
            raise ExportError("int8: the quantised input is a graph output")
        for i, name in enumerate(node.input):
            if name == quant.output[0]:
                node.input[i] = pixels
    keep = [n for n in g.node if n is not cast and n is not sub and n is not quant]
    del g.node[:]
    g.node.extend(keep)
    drop_unused_initializers(g)
