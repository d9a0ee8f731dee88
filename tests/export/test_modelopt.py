"""The TensorRT INT8 flavour from NVIDIA Model Optimizer, end to end on CPU (tiny model).

TensorRT itself is not here: the files are checked, run and gated on ONNX Runtime CPU only.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import onnx
import pytest

from fashion_match.errors import UsageError
from fashion_match.export import modelopt_int8
from fashion_match.export.calib_ranges import compute_ranges
from fashion_match.export.modelopt_int8 import choose_quantizer, onnx2int8_modelopt, write_trt_cache
from fashion_match.export.onnx_cpu import onnx_embedder
from fashion_match.export.pipeline import ExportOptions, run_export
from fashion_match.formats import FP32_ONNX, precision
from fashion_match.runtime.manifest import load_manifest

GATE = {"gate_data": "fashion-mnist", "gate_queries": 200, "gate_gallery": 1000, "gate_verification": None}


def _pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_the_calibration_cache_is_tensorrts_text_format(tmp_path: Path) -> None:
    n = write_trt_cache({"a": (-0.5, 2.54), "flat": (0.0, 0.0), "b": (-6.35, 1.0)}, tmp_path / "c")
    lines = (tmp_path / "c").read_text().splitlines()
    assert n == 2 and lines[0].startswith("TRT-") and len(lines) == 3  # a constant tensor has no scale
    scales = {k: struct.unpack("!f", bytes.fromhex(v))[0] for k, v in (line.split(": ") for line in lines[1:])}
    assert scales == pytest.approx({"a": 2.54 / 127, "b": 6.35 / 127})


def test_who_places_the_qdq_pairs() -> None:
    assert choose_quantizer("auto", "onnxruntime") == "fashion-match"
    assert choose_quantizer("fashion-match", "tensorrt") == "fashion-match"
    with pytest.raises(UsageError, match="writes the TensorRT flavour"):
        choose_quantizer("modelopt", "onnxruntime")


def test_auto_says_so_when_modelopt_is_missing(monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # noqa: ANN001
    monkeypatch.setattr(modelopt_int8, "unavailable_reason", lambda: "NVIDIA Model Optimizer cannot be imported")
    assert choose_quantizer("auto", "tensorrt") == "fashion-match"
    assert "placed by fashion-match's own rules instead" in caplog.text
    with pytest.raises(UsageError, match="cannot be imported"):
        onnx2int8_modelopt("x.onnx", "y.onnx", np.zeros((1, 8, 8, 3), np.uint8))


needs_modelopt = pytest.mark.skipif(modelopt_int8.unavailable_reason() is not None, reason="nvidia-modelopt missing")


@needs_modelopt
def test_modelopt_flavour_is_checker_clean_symmetric_and_uses_our_ranges(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert choose_quantizer("auto", "tensorrt") == "modelopt"
    src = tiny_model_dir / FP32_ONNX
    s = load_manifest(tiny_model_dir).preprocess.size
    px = _pixels(16, s)
    info = onnx2int8_modelopt(src, tmp_path / "q.onnx", px)
    assert info["quantizer"].startswith("nvidia-modelopt") and info["quantize_linear"] > 0
    m = onnx.load(str(tmp_path / "q.onnx"))
    onnx.checker.check_model(m, full_check=True)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    ranges = compute_ranges(src, px, "percentile")
    checked = 0
    for n in m.graph.node:
        if n.op_type != "QuantizeLinear":
            continue
        zero = inits.get(n.input[2]) if len(n.input) > 2 else None
        assert zero is None or (zero.dtype == np.int8 and not zero.any())  # TensorRT's form: int8, zero point 0
        if n.input[0] in ranges:  # an activation: its scale is our range's amax / 127, not ModelOpt's own
            lo, hi = ranges[n.input[0]]
            assert float(inits[n.input[1]]) == pytest.approx(max(abs(lo), abs(hi)) / 127, rel=1e-5)
            checked += 1
    assert checked > 0
    ref, got = onnx_embedder(src)(px), onnx_embedder(tmp_path / "q.onnx")(px)
    assert np.min(np.sum(ref * got, axis=1)) > 0.95  # it runs on ONNX Runtime CPU and stays close to FP32
    tail = {n.name for n in m.graph.node if n.op_type in ("ReduceL2", "Div")}
    producers = {o: n.op_type for n in m.graph.node for o in n.output}
    for n in m.graph.node:
        if n.name in tail:
            assert producers.get(n.input[0]) != "DequantizeLinear"  # the tail stayed FP32


@needs_modelopt
def test_fm_export_target_tensorrt_gates_the_modelopt_file(model_copy: Path) -> None:
    run_export(model_copy, None, ExportOptions(precisions=("int8",), target="tensorrt", **GATE), lambda s: None)
    entry = load_manifest(model_copy).data["engine_sources"][precision("int8").engine_source]
    assert entry["int8"]["quantizer"].startswith("nvidia-modelopt") and entry["gate"]["passed"]
    assert "not built or timed" in entry["int8"]["tensorrt"]
    with pytest.raises(UsageError, match="--int8-quantizer fashion-match"):
        opts = ExportOptions(precisions=("int8",), target="tensorrt", int8_max_drop=0.5, **GATE)
        run_export(model_copy, None, opts, lambda s: None)


_OURS_AROUND_MODELOPT = """
import sys
from pathlib import Path
import numpy as np
from fashion_match.export.modelopt_int8 import onnx2int8_modelopt
from fashion_match.export.onnx2int8 import onnx2int8
src, out, size = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
px = np.random.default_rng(0).integers(0, 256, (16, size, size, 3), dtype=np.uint8)
onnx2int8(src, out / "before.onnx", px)
onnx2int8_modelopt(src, out / "modelopt.onnx", px)
onnx2int8(src, out / "after.onnx", px)
"""


def test_modelopt_leaves_our_quantizer_as_it_found_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    """ModelOpt patches onnxruntime.quantization for the whole process (calibrators, Q/DQ registries):
    our own quantizer must write the same file after a ModelOpt run as before it. A fresh process,
    so that no earlier test has run ModelOpt already."""
    import subprocess
    import sys

    s = load_manifest(tiny_model_dir).preprocess.size
    cmd = [sys.executable, "-c", _OURS_AROUND_MODELOPT, str(tiny_model_dir / FP32_ONNX), str(tmp_path), str(s)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    assert (tmp_path / "modelopt.onnx").exists()
    assert (tmp_path / "after.onnx").read_bytes() == (tmp_path / "before.onnx").read_bytes()
