"""The one way export code runs an ONNX file: a CPU ONNX Runtime session, quiet, device-independent.

The parity gate, the threshold calibration and the accuracy gate all measure files here, so a
figure in a manifest never depends on the machine's GPU or on three session set-ups drifting apart.
Nor on its CPU: INT8 runs in ONNX Runtime's exact (U8U8) kernels on x86 CPUs without VNNI, whose
fast U8S8 path can saturate with full-range int8 weights (see `export.onnx2int8`); the runtime
does the same, and TensorRT computes exactly anyway. On every other CPU the option does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.errors import ExportError
from fashion_match.runtime.onnxruntime_backend import PRECISE_INT8

Embed = Callable[[np.ndarray], np.ndarray]  # uint8 pixels (N, S, S, 3) -> float32 (N, D)


def cpu_session(path: str | Path) -> Any:
    """A quiet CPU ONNX Runtime session for `path`; `ExportError` when it cannot be loaded."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry(PRECISE_INT8, "1")
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own types for files it cannot load
        raise ExportError(f"{path}: ONNX Runtime cannot load it ({' '.join(str(e).split())[:200]})") from None


def onnx_embedder(path: str | Path) -> Embed:
    """`embed` for an ONNX file on the CPU; one session per file, loaded once."""
    sess = cpu_session(path)
    name = sess.get_inputs()[0].name
    return lambda pixels: np.asarray(sess.run(None, {name: pixels})[0], np.float32)
