"""The one table of formats and precisions, which the CLI, exporter, bench and tests read."""

from __future__ import annotations

import pytest

from fashion_match.errors import UsageError
from fashion_match.formats import (
    BACKENDS,
    EXECUTIONS,
    FILE_PRECISIONS,
    FORMATS,
    FP32_ONNX,
    PRECISION_TABLE,
    PRECISIONS,
    REDUCED,
    lookup,
    precision,
)


def test_every_file_precision_has_a_row_per_onnx_backend_and_an_engine() -> None:
    for p in FILE_PRECISIONS:
        assert lookup("onnxruntime", p.name).artifact == p.onnx
        assert lookup("tensorrt", p.name).artifact == f"model.{p.name}.engine"
        assert p.engine_source.endswith(".onnx")
        # OpenVINO runs the very file ONNX Runtime runs, checked as ONNX Runtime's in the manifest
        assert lookup("openvino", p.name).artifact == p.onnx
        assert lookup("openvino", p.name).listed_as == ("onnxruntime", p.name)
    keys = [(f.backend, f.precision) for f in FORMATS]
    assert len(keys) == len(set(keys))
    for b in BACKENDS:  # one file per precision within a backend; only bf16 shares the FP32 file
        files = [f.artifact for f in FORMATS if f.backend == b and not f.gate_key]
        assert len(files) == len(set(files))
    assert {f.backend for f in FORMATS} == set(BACKENDS) and PRECISIONS == tuple(p.name for p in PRECISION_TABLE)


def test_execution_only_precisions_run_the_fp32_file_once_gated() -> None:
    assert EXECUTIONS == ("bf16",) and "bf16" not in REDUCED
    row = lookup("openvino", "bf16")
    assert row.artifact == FP32_ONNX and row.listed_as == ("onnxruntime", "fp32") and row.gate_key == "openvino/bf16"
    # the same gate as FP16: its 8-bit mantissa is coarser, not calibrated
    assert (precision("bf16").max_drop_pts, precision("bf16").min_mean_cosine) == (
        precision("fp16").max_drop_pts,
        precision("fp16").min_mean_cosine,
    )
    with pytest.raises(UsageError, match="backend 'onnxruntime' has no 'bf16' format"):
        lookup("onnxruntime", "bf16")
    assert [f.backend for f in FORMATS if f.precision == "bf16"] == ["openvino"]


def test_reduced_precisions_carry_their_converter_and_gate_limits() -> None:
    assert REDUCED == tuple(p.name for p in FILE_PRECISIONS if p.name != "fp32")
    for name in REDUCED:
        p = precision(name)
        assert p.converter.startswith("onnx2") and p.max_drop_pts is not None and p.min_mean_cosine is not None
        assert p.name in lookup("onnxruntime", name).made_by
    # INT8 engines come from the symmetric TensorRT flavour, not from ONNX Runtime's file
    assert precision("int8").engine_source != precision("int8").onnx


def test_unknown_precision_names_the_choices() -> None:
    with pytest.raises(UsageError, match="choose one of fp32, fp16, int8, bf16"):
        precision("fp8")
