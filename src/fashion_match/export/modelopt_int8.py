"""The TensorRT INT8 flavour placed by NVIDIA's own quantizer (Model Optimizer, `nvidia-modelopt`).

`modelopt.onnx.quantization.quantize` puts the Q/DQ pairs where TensorRT's fusion rules want them
(no Q/DQ on a residual Add's skip input, concat inputs sharing one scale, ...), which hand placement
only approximates. The project's calibration is kept: the activation ranges are the ones
`export.calib_ranges` computes on our calibration images, handed to ModelOpt as a TensorRT
calibration cache (one big-endian float32 scale = amax / 127 per tensor), so the two flavours differ
only in where the Q/DQ pairs sit. ModelOpt calibrates on the CPU execution provider here; the file
has been checked and gated on ONNX Runtime CPU, never built into a TensorRT engine on this machine.

Install: pip install "fashion-match[modelopt]".
"""

from __future__ import annotations

import contextlib
import logging
import re
import struct
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.errors import ExportError, UsageError
from fashion_match.export.calib_ranges import compute_ranges
from fashion_match.export.regions import split_names

log = logging.getLogger(__name__)
CACHE_HEADER = "TRT-100001-EntropyCalibration2"


def unavailable_reason() -> str | None:
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a missing optional dependency raises ImportError or worse
        return (
            f"NVIDIA Model Optimizer is not installed ({type(e).__name__}: {e}); pip install 'fashion-match[modelopt]'"
        )
    return None


QUANTIZERS = ("auto", "fashion-match", "modelopt")


def choose_quantizer(requested: str, target: str) -> str:
    """Who places the Q/DQ pairs: ModelOpt for the TensorRT flavour when it is installed (auto), ours
    for ONNX Runtime's (ModelOpt writes TensorRT's symmetric form only)."""
    if requested not in QUANTIZERS:
        raise UsageError(f"--int8-quantizer {requested}: one of {', '.join(QUANTIZERS)}")
    if target != "tensorrt":
        if requested == "modelopt":
            raise UsageError("--int8-quantizer modelopt writes the TensorRT flavour: add --target tensorrt (or --trt)")
        return "fashion-match"
    if requested == "auto":
        why = unavailable_reason()
        if why is None:
            return "modelopt"
        log.warning("warning: %s; the TensorRT INT8 flavour is placed by fashion-match's own rules instead", why)
        return "fashion-match"
    return requested


class _NoGpuNoise(logging.Filter):
    """ModelOpt logs an ERROR when it finds no NVML library, although CPU calibration needs none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to get GPU count" not in record.getMessage()


@contextlib.contextmanager
def ort_quantization_restored() -> Iterator[None]:
    """Undo, on the way out, what ModelOpt patches in `onnxruntime.quantization` for the whole process:
    calibrator and quantizer methods replaced, ops added to and removed from the Q/DQ registries.
    Left in place, fashion-match's own quantizer (`export.onnx2int8`) would afterwards place and
    range its Q/DQ pairs differently depending on whether ModelOpt had run earlier in the process."""
    import onnxruntime.quantization  # noqa: F401 - its submodules are what is saved

    def owned(obj: object) -> bool:
        return str(getattr(obj, "__module__", "")).startswith("onnxruntime.quantization")

    modules = [m for name, m in list(sys.modules.items()) if name.startswith("onnxruntime.quantization") and m]
    saved: list[tuple[Any, dict[str, Any]]] = []
    tables: list[tuple[dict[Any, Any], dict[Any, Any]]] = []
    for mod in modules:
        saved.append((mod, dict(vars(mod))))
        for value in vars(mod).values():
            if isinstance(value, type) and owned(value):
                saved.append((value, dict(vars(value))))
            elif isinstance(value, dict):
                tables.append((value, dict(value)))
    try:
        yield
    finally:
        for obj, before in saved:
            for key in set(vars(obj)) - set(before):
                delattr(obj, key)
            for key, value in before.items():
                if vars(obj).get(key, _MISSING) is not value and key not in ("__dict__", "__weakref__"):
                    setattr(obj, key, value)
        for table, contents in tables:
            table.clear()
            table.update(contents)


_MISSING = object()


def write_trt_cache(ranges: dict[str, tuple[float, float]], path: Path) -> int:
    """TensorRT's calibration cache text: a header line, then `tensor: <hex of float32 scale>` lines."""
    lines = [CACHE_HEADER]
    for name, (lo, hi) in ranges.items():
        amax = max(abs(lo), abs(hi))
        if amax > 0 and np.isfinite(amax):
            lines.append(f"{name}: {struct.pack('!f', amax / 127.0).hex()}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines) - 1


def onnx2int8_modelopt(
    src: str | Path, dst: str | Path, pixels: np.ndarray, *, method: str = "percentile", percentile: float = 99.99
) -> dict[str, Any]:
    """Quantise FP32 `src` to the TensorRT Q/DQ flavour `dst` with ModelOpt, on our activation ranges."""
    import onnx

    why = unavailable_reason()
    if why:
        raise UsageError(f"--int8-quantizer modelopt: {why}")
    from modelopt.onnx.quantization import quantize

    from fashion_match.fileio import make_temp

    dst = Path(dst)
    tmp = make_temp(dst.parent, dst.name)
    model = onnx.load(str(src))
    _, kept = split_names(model.graph)
    noise = _NoGpuNoise()
    mo_log = logging.getLogger("modelopt.onnx")
    mo_log.addFilter(noise)
    for h in mo_log.handlers:
        h.addFilter(noise)
    try:
        with tempfile.TemporaryDirectory(prefix="fm-modelopt-") as d:
            ranges = compute_ranges(src, pixels, method, percentile)
            cache = Path(d) / "calibration.cache"
            cached = write_trt_cache(ranges, cache)
            with ort_quantization_restored():
                quantize(
                    str(src),
                    quantize_mode="int8",
                    calibration_data=pixels,
                    calibration_method="max",
                    calibration_cache_path=str(cache),
                    calibration_eps=["cpu"],
                    nodes_to_exclude=[f"^{re.escape(n)}$" for n in kept],  # ModelOpt reads these as regexes
                    output_path=str(tmp),
                    high_precision_dtype="fp32",
                    log_level="WARNING",
                )
        onnx.checker.check_model(str(tmp), full_check=True)
        quantised = onnx.load(str(tmp), load_external_data=False)
        counts = {
            op: sum(n.op_type == op for n in quantised.graph.node) for op in ("QuantizeLinear", "DequantizeLinear")
        }
        tmp.replace(dst)
    except (UsageError, ExportError):
        raise
    except Exception as e:  # noqa: BLE001 - ModelOpt and ONNX Runtime raise many types
        raise ExportError(
            f"modelopt int8 quantisation failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
        ) from e
    finally:
        mo_log.removeFilter(noise)
        for h in mo_log.handlers:
            h.removeFilter(noise)
        tmp.unlink(missing_ok=True)
    return {
        "target": "tensorrt",
        "format": "QDQ",
        "quantizer": "nvidia-modelopt " + _version(),
        "activations": "int8",
        "weights": "int8",
        "activation_symmetric": True,
        "weight_symmetric": True,
        "per_channel_weights": True,
        "weight_max": 127,
        "calibration_method": method,
        **({"percentile": percentile} if method == "percentile" else {}),
        "calibration_images": int(len(pixels)),
        "ranges_from": f"fashion-match's own calibration ({method}), as a TensorRT cache of {cached} tensors",
        "quantize_linear": counts["QuantizeLinear"],
        "dequantize_linear": counts["DequantizeLinear"],
        "kept_fp32": "input cast and normalisation, global pooling, projection, L2 normalisation",
        "tensorrt": "not built or timed on this machine (no TensorRT); gated on ONNX Runtime CPU",
    }


def _version() -> str:
    from importlib.metadata import version

    try:
        return version("nvidia-modelopt")
    except Exception:  # noqa: BLE001
        return "?"
