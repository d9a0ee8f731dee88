"""INT8 figures must not depend on the CPU: which ONNX Runtime sessions ask for its exact int8 kernels.

ONNX Runtime's fast U8S8 kernels on x86 CPUs without VNNI add pairs of products in 16 bits and
saturate with full-range int8 weights. This machine may well have VNNI, so what is checked is the
session switch and the files' weight range (tests/export/test_precision.py), not the saturation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fashion_match.export.onnx_cpu import cpu_session
from fashion_match.formats import FP32_ONNX
from fashion_match.runtime.manifest import load_manifest
from fashion_match.runtime.onnxruntime_backend import PRECISE_INT8, OnnxRuntimeBackend


def _precise(options: Any) -> bool:
    try:
        return bool(options.get_session_config_entry(PRECISE_INT8) == "1")
    except RuntimeError:  # ONNX Runtime raises for a key never set
        return False


def test_export_measures_int8_in_the_exact_kernels(tiny_model_dir: Path) -> None:
    """The gates measure INT8 files (full-range weights) exactly, as a CPU with VNNI or TensorRT computes them."""
    assert _precise(cpu_session(tiny_model_dir / FP32_ONNX).get_session_options())


@pytest.mark.parametrize(
    ("entry", "precise"),
    [
        ({"precision": "int8", "int8": {"weight_max": 64}}, False),  # cannot saturate: the fast kernels
        ({"precision": "int8", "int8": {"weight_max": 127}}, True),
        ({"precision": "int8", "int8": {"weights": "int8"}}, True),  # made before the range was recorded
        ({"precision": "fp32"}, False),
    ],
)
def test_runtime_asks_for_exact_kernels_only_for_full_range_int8(
    tiny_model_dir: Path, entry: dict[str, Any], precise: bool
) -> None:
    backend = OnnxRuntimeBackend(tiny_model_dir / FP32_ONNX, entry, load_manifest(tiny_model_dir), device="cpu")
    assert _precise(backend.session.get_session_options()) is precise
    assert ("int8=x64quantprecision" in backend.info.detail) is precise
