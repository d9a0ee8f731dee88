"""Every graph an engine may be built from keeps TensorRT's input rules (checked without TensorRT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fashion_match.errors import ExportError
from fashion_match.export.onnx2engine import check_engine_source
from fashion_match.export.onnx2fp16 import onnx2fp16
from fashion_match.export.onnx2int8 import onnx2int8
from fashion_match.export.trt_rules import tensorrt_problems
from fashion_match.formats import FORMATS, FP32_ONNX
from fashion_match.runtime import load_manifest
from fashion_match.runtime.manifest import default_model_dir


@pytest.fixture(scope="module")
def tiny_sources(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What the exporter gives for the tiny model: each precision, the TensorRT INT8 flavour, and
    (not an engine source) ONNX Runtime's INT8 flavour."""
    out = tmp_path_factory.mktemp("sources")
    s = load_manifest(tiny_model_dir).preprocess.size
    px = np.random.default_rng(0).integers(0, 256, (16, s, s, 3), dtype=np.uint8)
    fp32 = tiny_model_dir / FP32_ONNX
    onnx2fp16(fp32, out / "fp16.onnx")
    onnx2int8(fp32, out / "int8.trt.onnx", px, target="tensorrt")
    onnx2int8(fp32, out / "int8.ort.onnx", px, target="onnxruntime")
    return {
        "fp32": fp32,
        "fp16": out / "fp16.onnx",
        "int8-tensorrt": out / "int8.trt.onnx",
        "int8-ort": out / "int8.ort.onnx",
    }


@pytest.mark.parametrize("which", ["fp32", "fp16", "int8-tensorrt"])
def test_engine_sources_keep_tensorrts_rules(tiny_sources: dict[str, Path], which: str) -> None:
    model = onnx.load(str(tiny_sources[which]))
    assert tensorrt_problems(model) == []
    pixels = model.graph.input[0].name
    readers = [n.op_type for n in model.graph.node if pixels in n.input]
    assert readers == ["Cast"]  # the uint8 pixels go straight into one cast, nothing else reads them
    check_engine_source(tiny_sources[which])


def test_onnxruntimes_int8_flavour_is_refused_as_an_engine_source(tiny_sources: dict[str, Path]) -> None:
    problems = tensorrt_problems(onnx.load(str(tiny_sources["int8-ort"])))
    assert any("uint8 input pixels feeds Transpose" in p for p in problems)  # its speed trick: pixels into the DQ
    assert any("zero point" in p for p in problems)  # and unsigned activations
    with pytest.raises(ExportError, match="not an engine source"):
        check_engine_source(tiny_sources["int8-ort"])


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.backend == "onnxruntime" and f.precision != "int8"])
def test_the_shipped_models_engine_sources_keep_the_rules(fmt) -> None:  # type: ignore[no-untyped-def]
    """The embedded model's FP32 and FP16 files are what fm-export --trt builds engines from."""
    path = default_model_dir() / fmt.artifact
    assert tensorrt_problems(onnx.load(str(path))) == []


def _graph(first_op: str, dims: list[int | str]) -> onnx.ModelProto:
    """pixels (uint8) -> first_op -> ... -> a float output."""
    inp = helper.make_tensor_value_info("pixels", TensorProto.UINT8, dims)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    if first_op == "Transpose":
        nodes = [
            helper.make_node("Transpose", ["pixels"], ["t"], perm=[0, 3, 1, 2]),
            helper.make_node("Cast", ["t"], ["y"], to=TensorProto.FLOAT),
        ]
    else:
        nodes = [
            helper.make_node("Cast", ["pixels"], ["c"], to=TensorProto.FLOAT),
            helper.make_node("Transpose", ["c"], ["y"], perm=[0, 3, 1, 2]),
        ]
    return helper.make_model(helper.make_graph(nodes, "g", [inp], [out]), opset_imports=[helper.make_opsetid("", 18)])


def test_the_rules_themselves() -> None:
    assert tensorrt_problems(_graph("Cast", ["batch", 8, 8, 3])) == []
    (p,) = tensorrt_problems(_graph("Transpose", ["batch", 8, 8, 3]))  # the graphs this project wrote before
    assert "feeds Transpose" in p
    (p,) = tensorrt_problems(_graph("Cast", ["batch", "h", 8, 3]))
    assert "dynamic dimensions [0, 1]" in p
    model = _graph("Cast", ["batch", 8, 8, 3])
    model.graph.node.append(helper.make_node("QLinearConv", ["c"], ["z"]))
    assert any("QLinearConv" in p for p in tensorrt_problems(model))
