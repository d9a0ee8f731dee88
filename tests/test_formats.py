"""The one table of formats and precisions, which the CLI, exporter, bench and tests read."""

from __future__ import annotations

import pytest

from fashion_match.errors import UsageError
from fashion_match.formats import BACKENDS, FORMATS, PRECISION_TABLE, PRECISIONS, REDUCED, lookup, precision


def test_every_precision_has_a_row_per_onnx_backend_and_an_engine() -> None:
    for p in PRECISION_TABLE:
        assert lookup("onnxruntime", p.name).artifact == p.onnx
        assert lookup("tensorrt", p.name).artifact == f"model.{p.name}.engine"
        assert p.engine_source.endswith(".onnx")
    keys = [(f.backend, f.precision) for f in FORMATS]
    assert len(keys) == len(set(keys)) and len({f.artifact for f in FORMATS}) == len(FORMATS)
    assert {f.backend for f in FORMATS} == set(BACKENDS) and PRECISIONS == tuple(p.name for p in PRECISION_TABLE)


def test_reduced_precisions_carry_their_converter_and_gate_limits() -> None:
    assert REDUCED == tuple(p.name for p in PRECISION_TABLE if p.name != "fp32")
    for name in REDUCED:
        p = precision(name)
        assert p.converter.startswith("onnx2") and p.max_drop_pts is not None and p.min_mean_cosine is not None
        assert p.name in lookup("onnxruntime", name).made_by
    # INT8 engines come from the symmetric TensorRT flavour, not from ONNX Runtime's file
    assert precision("int8").engine_source != precision("int8").onnx


def test_unknown_precision_names_the_choices() -> None:
    with pytest.raises(UsageError, match="choose one of fp32, fp16, int8"):
        precision("fp8")
