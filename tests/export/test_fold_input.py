"""Folding the input normalisation into the first convolution (ONNX Runtime INT8 flavour)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fashion_match.errors import ExportError
from fashion_match.export.fold_input import FoldedInput, feed_pixels_directly, fold_normalisation
from fashion_match.export.onnx2int8 import onnx2int8
from fashion_match.formats import FP32_ONNX
from fashion_match.runtime.manifest import load_manifest

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _prologue_model(pads: int, seed: int = 0) -> onnx.ModelProto:
    """uint8 NHWC pixels -> Transpose -> Cast -> Mul -> Add -> Conv(3x3): the prologue our exporter writes."""
    rng = np.random.default_rng(seed)
    scale = (1 / (255 * STD)).reshape(1, 3, 1, 1).astype(np.float32)
    shift = (-MEAN / STD).reshape(1, 3, 1, 1).astype(np.float32)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["pixels"], ["nchw"], perm=[0, 3, 1, 2], name="t"),
        helper.make_node("Cast", ["nchw"], ["f"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Mul", ["f", "scale"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "shift"], ["a"], name="add"),
        helper.make_node("Conv", ["a", "w", "b"], ["y"], pads=[pads] * 4, kernel_shape=[3, 3], name="conv"),
    ]
    graph = helper.make_graph(
        nodes,
        "prologue",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", "h", "w", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, n) for a, n in ((scale, "scale"), (shift, "shift"), (w, "w"), (b, "b"))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _run(model: onnx.ModelProto, px: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"pixels": px})[0])


def _pixels(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_fold_is_exact_without_padding() -> None:
    model = _prologue_model(pads=0)
    px = _pixels(4, 8)
    ref = _run(model, px)
    folded = fold_normalisation(model)
    assert folded is not None and folded.zero_point == int(np.rint(np.mean(255 * MEAN)))
    assert [n.op_type for n in model.graph.node] == ["Transpose", "Cast", "Sub", "Conv"]
    assert {t.name for t in model.graph.initializer}.isdisjoint({"scale", "shift"})
    np.testing.assert_allclose(_run(model, px), ref, rtol=1e-4, atol=1e-3)


def test_fold_moves_only_the_border_by_the_padding_difference() -> None:
    """With padding, the frame differs exactly as if the original had been padded with pixel z, not the mean."""
    model = _prologue_model(pads=1)
    px = _pixels(2, 8)
    ref = _run(model, px)
    folded = fold_normalisation(model)
    assert folded is not None
    got = _run(model, px)
    np.testing.assert_allclose(got[:, :, 1:-1, 1:-1], ref[:, :, 1:-1, 1:-1], rtol=1e-4, atol=1e-3)
    # the original, fed the image framed by pixel value z and no padding, gives the folded output
    framed = np.pad(px, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=folded.zero_point)
    unpadded = _prologue_model(pads=0)
    expected = _run(unpadded, framed)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    assert np.abs(got - ref).max() > 1e-3, "the test pixels must reach the border"


def test_fold_leaves_other_prologues_alone() -> None:
    model = _prologue_model(pads=0)
    for n in model.graph.node:
        if n.op_type == "Conv":
            n.input[1] = "missing_weight"  # weights that are not an initializer: nothing to fold
    before = model.SerializeToString()
    assert fold_normalisation(model) is None
    assert model.SerializeToString() == before


def test_feed_pixels_refuses_an_unexpected_quantisation() -> None:
    model = _prologue_model(pads=0)
    folded = fold_normalisation(model)
    assert folded is not None
    with pytest.raises(ExportError, match="not quantised as expected"):
        feed_pixels_directly(model, folded)  # a float model: no QuantizeLinear after the folded input
    with pytest.raises(ExportError):
        feed_pixels_directly(model, FoldedInput("nonexistent", 114))


def test_onnxruntime_int8_reads_pixels_directly(tiny_model_dir: Path, tmp_path: Path) -> None:
    s = load_manifest(tiny_model_dir).preprocess.size
    px = _pixels(16, s)
    info = onnx2int8(tiny_model_dir / FP32_ONNX, tmp_path / "q.onnx", px, target="onnxruntime")
    assert info["pixels_feed_first_conv"] is True
    m = onnx.load(str(tmp_path / "q.onnx"))
    ops = [n.op_type for n in m.graph.node]
    assert "Cast" not in ops and "Sub" not in ops and "Mul" not in ops
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    first_dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] not in inits)
    assert producers[first_dq.input[0]].op_type == "Transpose"
    assert producers[first_dq.input[0]].input[0] == m.graph.input[0].name
    assert float(inits[first_dq.input[1]]) == 1.0
    assert int(inits[first_dq.input[2]]) == info["input_zero_point"]
    ref = _run(onnx.load(str(tiny_model_dir / FP32_ONNX)), px)
    got = _run(m, px)
    assert np.min(np.sum(ref * got, axis=1)) > 0.95


def test_tensorrt_int8_keeps_the_normalisation(tiny_model_dir: Path, tmp_path: Path) -> None:
    s = load_manifest(tiny_model_dir).preprocess.size
    info = onnx2int8(tiny_model_dir / FP32_ONNX, tmp_path / "q.onnx", _pixels(16, s), target="tensorrt")
    assert info["pixels_feed_first_conv"] is False
    ops = [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]
    assert "Cast" in ops and "Mul" in ops
