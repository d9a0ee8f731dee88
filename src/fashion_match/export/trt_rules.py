"""What TensorRT's ONNX parser accepts, checked here without TensorRT.

Every graph TensorRT may build an engine from (each precision's ONNX, the TensorRT INT8 flavour)
must pass `tensorrt_problems`; `onnx2engine` refuses a file that does not, before any build.

The rules, from the TensorRT 10/11 documentation:
- UINT8 is a network input/output type only: "use a cast to convert kUINT8 network-level inputs to
  {kFLOAT, kHALF} prior to use with other TensorRT layers" (`DataType::kUINT8`, NvInferRuntimeBase.h).
  So every consumer of a uint8 input must be a Cast to float or half; even Shape and Transpose may not
  read it (NVIDIA/TensorRT#3985).
- Quantisation is signed and symmetric: QuantizeLinear/DequantizeLinear with INT8 (or FP8/INT4) and a
  zero point of 0; ONNX Runtime's uint8 activations and its QOperator ops (QLinearConv, ...) are not
  TensorRT's. The ONNX Runtime INT8 flavour is therefore never an engine source.
- Only the batch dimension may be dynamic: engines are built with batch profiles over fixed images.
- Every op is one onnx-tensorrt's support matrix lists, for the types it receives.
"""

from __future__ import annotations

from typing import Any

F, H, I32, I64, I8, U8, B = "float32", "float16", "int32", "int64", "int8", "uint8", "bool"
_FLOATS = (F, H)
_ALL_MOVE = (F, H, I32, I64, I8, B)  # data movement: any TensorRT type but uint8
# op -> input types TensorRT 10 takes on the data inputs (onnx-tensorrt docs/operators.md). Only ops
# our exporters emit are listed: a new op must be looked up before it is trusted here.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "Add": (F, H, I32, I64),
    "Sub": (F, H, I32, I64),
    "Mul": (F, H, I32, I64),
    "Div": (F, H, I32, I64),
    "Pow": _FLOATS,
    "Sqrt": _FLOATS,
    "Reciprocal": _FLOATS,
    "Max": (F, H, I32, I64),
    "Min": (F, H, I32, I64),
    "Clip": (F, H, I8),
    "Relu": (F, H, I8),
    "Sigmoid": (F, H, I8),
    "Tanh": (F, H, I8),
    "HardSigmoid": (F, H, I8),
    "HardSwish": (F, H, I8),
    "Softmax": _FLOATS,
    "Conv": (F, H, I8),
    "Gemm": (F, H, I8),
    "MatMul": _FLOATS,
    "GlobalAveragePool": (F, H, I8),
    "AveragePool": (F, H, I8),
    "MaxPool": (F, H, I8),
    "ReduceMean": _FLOATS,
    "ReduceSum": _FLOATS,
    "ReduceSumSquare": _FLOATS,
    "ReduceL2": _FLOATS,
    "ReduceMax": _FLOATS,
    "LpNormalization": _FLOATS,
    "BatchNormalization": _FLOATS,
    "Cast": (F, H, I32, I64, I8, U8, B),
    "Transpose": _ALL_MOVE,
    "Reshape": _ALL_MOVE,
    "Flatten": _ALL_MOVE,
    "Squeeze": _ALL_MOVE,
    "Unsqueeze": _ALL_MOVE,
    "Concat": _ALL_MOVE,
    "Slice": _ALL_MOVE,
    "Gather": _ALL_MOVE,
    "Expand": _ALL_MOVE,
    "Identity": _ALL_MOVE,
    "Shape": _ALL_MOVE,
    "Constant": _ALL_MOVE,
    "ConstantOfShape": _ALL_MOVE,
    "Equal": (F, H, I32, I64),
    "Where": (F, H, I32, I64, B),
    "QuantizeLinear": _FLOATS,
    "DequantizeLinear": (I8,),
}
# inputs that are shapes, axes or quantisation parameters, not data (their types follow other rules)
_PARAM_INPUTS = {
    "Reshape": {1},
    "Slice": {1, 2, 3, 4},
    "Gather": {1},
    "Expand": {1},
    "Squeeze": {1},
    "Unsqueeze": {1},
    "Clip": {1, 2},
    "ReduceMean": {1},
    "ReduceSum": {1},
    "ReduceSumSquare": {1},
    "ReduceL2": {1},
    "ReduceMax": {1},
    "QuantizeLinear": {1, 2},
    "DequantizeLinear": {1, 2},
    "ConstantOfShape": {0},
}


def _types(model: Any) -> dict[str, str]:
    """Element type of every tensor: inputs, initialisers and whatever shape inference finds."""
    import onnx
    from onnx import helper

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is a help here; unknown types are reported as unknown
        inferred = model
    g = inferred.graph
    out: dict[str, str] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type.elem_type
        if t:
            out[vi.name] = helper.tensor_dtype_to_np_dtype(t).name
    for init in g.initializer:
        out[init.name] = helper.tensor_dtype_to_np_dtype(init.data_type).name
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = helper.tensor_dtype_to_np_dtype(a.t.data_type).name
    return out


def _const_zero(model: Any, name: str) -> bool | None:
    """Whether initialiser `name` is all zeros (None when it is not an initialiser)."""
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return bool((numpy_helper.to_array(init) == 0).all())
    return None


def tensorrt_problems(model: Any) -> list[str]:
    """Every reason TensorRT's ONNX parser or builder would refuse `model` (empty: none found)."""
    from onnx import TensorProto, helper

    g = model.graph
    problems: list[str] = []
    types = _types(model)
    inputs = {i.name for i in g.input} - {init.name for init in g.initializer}
    for inp in g.input:
        if inp.name not in inputs:
            continue
        dims = inp.type.tensor_type.shape.dim
        dynamic = [i for i, d in enumerate(dims) if not d.dim_value]
        if dynamic != [0]:
            problems.append(f"input {inp.name}: dynamic dimensions {dynamic}; only the batch (0) may be dynamic")
        if inp.type.tensor_type.elem_type == TensorProto.UINT8:
            for node in g.node:
                if inp.name not in node.input:
                    continue
                to = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "to"), None)
                if node.op_type != "Cast" or to not in (TensorProto.FLOAT, TensorProto.FLOAT16):
                    problems.append(
                        f"uint8 input {inp.name} feeds {node.op_type} {node.name!r}: TensorRT takes uint8 "
                        "only straight into a Cast to float or half"
                    )
    for node in g.node:
        allowed = SUPPORTED.get(node.op_type)
        if allowed is None:
            problems.append(
                f"{node.op_type} {node.name!r}: not an op TensorRT's ONNX parser supports (or not listed here)"
            )
            continue
        skip = _PARAM_INPUTS.get(node.op_type, set())
        for i, name in enumerate(node.input):
            if not name or i in skip or name in inputs:
                continue  # graph inputs are judged above
            t = types.get(name)
            if t is not None and t not in allowed:
                problems.append(
                    f"{node.op_type} {node.name!r}: input {name} is {t}; TensorRT takes {', '.join(allowed)}"
                )
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = node.input[2]
            if types.get(zp) not in (I8, None) or _const_zero(model, zp) is False:
                problems.append(
                    f"{node.op_type} {node.name!r}: zero point {zp} is {types.get(zp)}, not a zero int8; "
                    "TensorRT quantises signed and symmetric (this is ONNX Runtime's INT8 flavour)"
                )
    return problems
