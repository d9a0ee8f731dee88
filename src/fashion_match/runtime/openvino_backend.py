"""OpenVINO backend: runs the exported ONNX files on the CPU, fp32, bf16, fp16 and int8 (Q/DQ).

OpenVINO's CPU plugin quietly runs FP32 models in bf16 on CPUs with AMX or AVX-512-BF16 unless told
otherwise; here every precision is asked for explicitly and read back from the compiled model, so
`--precision fp32` is FP32 arithmetic and bf16 runs only where the CPU has bf16 units (and only once
fm-export gated it: `formats` row `openvino/bf16`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.errors import BackendUnavailable, ManifestMismatch, MissingDependency
from fashion_match.runtime.backend import BackendInfo, BaseBackend
from fashion_match.runtime.manifest import Manifest

# fashion-match precision -> OpenVINO's INFERENCE_PRECISION_HINT. fp16 and int8 files run with f32
# arithmetic between their own FP16 weights / integer kernels, as ONNX Runtime runs them on the CPU.
HINTS = {"fp32": "f32", "fp16": "f32", "int8": "f32", "bf16": "bf16"}


def load_openvino() -> Any:
    try:
        import openvino
    except ImportError as e:
        raise MissingDependency("openvino is not installed: pip install 'fashion-match[openvino]'") from e
    return openvino


def cpu_capabilities(ov: Any | None = None) -> list[str]:
    """What OpenVINO's CPU plugin says this CPU can run natively (FP32, BF16, INT8, FP16 ...)."""
    core = (ov or load_openvino()).Core()
    return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def precision_reason(precision: str) -> str | None:
    """Why this CPU cannot run `precision` natively under OpenVINO (None when it can)."""
    if HINTS.get(precision) != "bf16":
        return None
    caps = cpu_capabilities()
    if "BF16" in caps:
        return None
    return f"this CPU has no bf16 units (OpenVINO lists {', '.join(caps)}); run fp32 or fp16 instead"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


class OpenVinoBackend(BaseBackend):
    reads_outputs = True

    @staticmethod
    def unavailable_reason(device: str = "auto") -> str | None:
        try:
            load_openvino()
        except MissingDependency as e:
            return str(e)
        if device.startswith("cuda"):
            return "the OpenVINO backend runs on the CPU (--device cpu); for NVIDIA GPUs use tensorrt or onnxruntime"
        return None

    def __init__(
        self, path: Path, entry: dict[str, Any], manifest: Manifest, *, device: str = "auto", threads: int | None = None
    ) -> None:
        ov = load_openvino()
        precision = str(entry["precision"])  # what open_backend was asked for (bf16 on the FP32 file)
        hint = HINTS[precision]
        core = ov.Core()
        why = precision_reason(precision)
        if why:
            raise BackendUnavailable(f"--precision {precision}: {why}")
        n_threads = threads or min(os.cpu_count() or 1, 16)
        config = {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",  # one stream: a batch uses every thread, as ONNX Runtime's session does
            "INFERENCE_NUM_THREADS": n_threads,
        }
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own types
            raise ManifestMismatch(f"{path}: OpenVINO cannot load it ({_one_line(e)})") from None
        got = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if got != hint:  # never a silent change of arithmetic
            raise BackendUnavailable(f"OpenVINO compiled {path.name} for {got} arithmetic, not the {hint} asked for")
        spec = manifest.preprocess
        inp = self.compiled.inputs[0]
        shape = inp.get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else []
        if len(dims) != 4 or dims[1:] != [spec.size, spec.size, 3]:
            raise ManifestMismatch(
                f"{path}: input shape {shape} does not match the manifest's {spec.size}x{spec.size}x3"
            )
        self.names = [o.get_any_name() for o in self.compiled.outputs]
        last = self.compiled.outputs[0].get_partial_shape()[-1]
        if not last.is_static or last.get_length() != manifest.embedding_dim:
            raise ManifestMismatch(
                f"{path}: output dim {last} does not match the manifest's embedding_dim {manifest.embedding_dim}"
            )
        # an infer request is not thread-safe; a server may call embed from several threads
        self.request, self.lock = self.compiled.create_infer_request(), threading.Lock()
        self.info = BackendInfo(
            backend="openvino",
            precision=precision,
            device="cpu",
            artifact=path.name,
            embedding_dim=manifest.embedding_dim,
            input_size=spec.size,
            detail=f"openvino {ov.__version__} CPU inference_precision={got} threads={n_threads}",
        )

    def _run(self, pixels: np.ndarray) -> list[np.ndarray]:
        self.check_input(pixels)
        with self.lock:
            res = self.request.infer({0: np.ascontiguousarray(pixels)})
            return [np.array(res[o], np.float32) for o in self.compiled.outputs]

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        return self._run(pixels)[0]

    def outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Every named output of the graph, as ONNX Runtime returns them."""
        return dict(zip(self.names, self._run(pixels), strict=True))

    def close(self) -> None:
        self.request = self.compiled = None  # type: ignore[assignment]
