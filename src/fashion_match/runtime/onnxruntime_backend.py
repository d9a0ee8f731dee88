"""ONNX Runtime backend: CPU everywhere, CUDA when onnxruntime-gpu is installed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.errors import BackendUnavailable, ManifestMismatch, MissingDependency
from fashion_match.runtime.backend import BackendInfo, BaseBackend, device_index
from fashion_match.runtime.manifest import Manifest

# ONNX Runtime's switch to its exact U8U8 kernels on x86 CPUs without VNNI (elsewhere it does nothing),
# whose fast U8S8 path adds pairs of products in 16 bits and saturates with full-range int8 weights
PRECISE_INT8 = "session.x64quantprecision"
SATURATION_FREE_WEIGHT_MAX = 64  # 2 x 255 x 64 fits in 16 bits; 2 x 255 x 127 does not


def full_range_int8(entry: dict[str, Any]) -> bool:
    """An INT8 file whose weights may reach +-127: every one fm-export writes (7-bit weights could not saturate)."""
    weight_max = int((entry.get("int8") or {}).get("weight_max", 127))
    return entry.get("precision") == "int8" and weight_max > SATURATION_FREE_WEIGHT_MAX


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingDependency("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)") from e
    return onnxruntime


def _session(ort: Any, path: Path, opts: Any, providers: list[Any]) -> Any:
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
        raise ManifestMismatch(f"{path}: ONNX Runtime cannot load it ({' '.join(str(e).split())[:200]})") from None


class OnnxRuntimeBackend(BaseBackend):
    reads_outputs = True

    @staticmethod
    def unavailable_reason(device: str = "auto") -> str | None:
        try:
            ort = _ort()
        except MissingDependency as e:
            return str(e)
        if device.startswith("cuda") and "CUDAExecutionProvider" not in ort.get_available_providers():
            return "device cuda needs onnxruntime-gpu with the CUDA provider (pip install 'fashion-match[gpu]')"
        return None

    def __init__(
        self, path: Path, entry: dict[str, Any], manifest: Manifest, *, device: str = "auto", threads: int | None = None
    ) -> None:
        ort = _ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 16)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        precise = full_range_int8(entry)
        if precise:  # slower on those CPUs, but the figures its gate measured; elsewhere a no-op
            opts.add_session_config_entry(PRECISE_INT8, "1")
        # onnxruntime-gpu lists the CUDA provider even where no GPU or driver works; "auto" then means
        # CPU (said in the backend's detail), an explicit --device cuda is refused instead.
        want_cuda = device.startswith("cuda") or (
            device == "auto" and "CUDAExecutionProvider" in ort.get_available_providers()
        )
        dev_id = device_index(device)
        cpu_only = ["CPUExecutionProvider"]
        try:
            # device_id only when not 0: since ORT 1.26 passing it logs a warning on stderr per session
            # ("No registered plugin EP device found", seen on an H100), and 0 is the provider's default
            cuda: Any = ("CUDAExecutionProvider", {"device_id": dev_id}) if dev_id else "CUDAExecutionProvider"
            providers = [cuda, *cpu_only] if want_cuda else cpu_only
            self.session = _session(ort, path, opts, providers)
        except ManifestMismatch:
            if not want_cuda:
                raise
            self.session = _session(ort, path, opts, cpu_only)  # loads on CPU: CUDA was what failed
        active = self.session.get_providers()
        on_cuda = "CUDAExecutionProvider" in active
        if device.startswith("cuda") and not on_cuda:
            # ORT falls back to CPU quietly when CUDA libraries fail to load: we do not.
            raise BackendUnavailable(f"onnxruntime could not start the CUDA provider (active: {active})")
        fell_back = " (CUDA provider listed but could not start: running on CPU)" if want_cuda and not on_cuda else ""
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        spec = manifest.preprocess
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1:] != [spec.size, spec.size, 3]:
            raise ManifestMismatch(
                f"{path}: input shape {shape} does not match the manifest's {spec.size}x{spec.size}x3"
            )
        if out.shape[-1] != manifest.embedding_dim:
            raise ManifestMismatch(
                f"{path}: output dim {out.shape[-1]} does not match "
                f"the manifest's embedding_dim {manifest.embedding_dim}"
            )
        self.info = BackendInfo(
            backend="onnxruntime",
            precision=str(entry["precision"]),
            device=f"cuda:{dev_id}" if on_cuda else "cpu",
            artifact=path.name,
            embedding_dim=manifest.embedding_dim,
            input_size=spec.size,
            detail=f"providers={','.join(active)} threads={opts.intra_op_num_threads}"
            + (" int8=x64quantprecision (exact kernels where the fast ones saturate)" if precise else "")
            + fell_back,
        )

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        self.check_input(pixels)
        out = self.session.run([self.output_name], {self.input_name: pixels})[0]
        return np.asarray(out, dtype=np.float32)

    def outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Every named output of the graph (a model with tag heads: the embedding and `tag_probs`)."""
        self.check_input(pixels)
        names = [o.name for o in self.session.get_outputs()]
        return {
            n: np.asarray(v, np.float32)
            for n, v in zip(names, self.session.run(names, {self.input_name: pixels}), strict=True)
        }

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
