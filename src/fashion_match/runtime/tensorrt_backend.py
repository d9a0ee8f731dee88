"""TensorRT backend (TensorRT 10.x / 11.x name-based API, cuda-python for memory and streams).

An engine only runs on the TensorRT version and GPU it was built for: the manifest records
both and this backend refuses a mismatch with a message that says to rebuild, before
TensorRT is asked to deserialise anything. Per batch size it keeps one set of device buffers
and pinned host buffers (reused across calls), selects the narrowest optimisation profile,
and copies asynchronously on its own stream.

Not run on a TensorRT machine yet: TensorRT cannot be installed where this was written. The
refusal logic (`engine_mismatch`, `unavailable_reason`) is tested without it.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.errors import BackendUnavailable, ManifestMismatch, MissingDependency
from fashion_match.runtime.backend import BackendInfo, BaseBackend, device_index
from fashion_match.runtime.cuda import check_cuda, cudart, gpu_identity
from fashion_match.runtime.manifest import Manifest
from fashion_match.runtime.tagging import output_dims

MAX_CACHED_BATCH_SIZES = 8


def engine_mismatch(entry: dict[str, Any], trt_version: str, gpu: dict[str, Any]) -> str | None:
    """Why an engine described by `entry` cannot run with this TensorRT and GPU (None when it can)."""
    built = entry.get("tensorrt_version")
    if built != trt_version:
        return f"built with TensorRT {built}, this machine has TensorRT {trt_version}"
    if entry.get("compute_capability") != gpu.get("compute_capability"):
        return (
            f"built for {entry.get('gpu')} (compute capability {entry.get('compute_capability')}), "
            f"this GPU is {gpu.get('gpu')} (compute capability {gpu.get('compute_capability')})"
        )
    if entry.get("gpu") != gpu.get("gpu"):
        return f"built on {entry.get('gpu')}, this GPU is {gpu.get('gpu')}"
    return None


def io_dtype_mismatch(input_dtype: Any, output_dtypes: list[Any]) -> str | None:
    """Why an engine with these I/O dtypes cannot use this backend's buffers (uint8 pixels in,
    float32 outputs; None when it can): a mismatch would read or write garbage silently."""
    got = [np.dtype(input_dtype), *(np.dtype(d) for d in output_dtypes)]
    if got[0] != np.dtype(np.uint8) or any(d != np.dtype(np.float32) for d in got[1:]):
        return (
            f"its input/outputs are {got[0]}/{'/'.join(str(d) for d in got[1:])}, "
            "expected uint8 pixels in and float32 outputs"
        )
    return None


def engine_io_mismatch(
    engine: Any, context: Any, in_name: str, outputs: dict[str, tuple[int, ...]], profiles: list[list[int]], size: int
) -> str | None:
    """Why the engine's own shapes disagree with its manifest entry (None when they agree).

    The buffers are sized from the manifest (`outputs`: each output's shape after the batch);
    an engine whose profiles or output sizes differ would be fed the wrong shapes or write past
    the end of an output buffer."""
    for i, (mn, opt, mx) in enumerate(profiles):
        got = [tuple(int(v) for v in d) for d in engine.get_tensor_profile_shape(in_name, i)]
        want = [(b, size, size, 3) for b in (mn, opt, mx)]
        if got != want:
            return f"its profile {i} takes {got}, the manifest says {want}"
    for name, dims in outputs.items():
        static = tuple(int(v) for v in engine.get_tensor_shape(name))
        if static[1:] != dims:
            return f"its output {name} is {static}, the manifest says (N, {', '.join(map(str, dims))})"
    n = profiles[0][0]
    if not context.set_input_shape(in_name, (n, size, size, 3)):
        return f"it refuses input shape {(n, size, size, 3)}, the smallest its manifest lists"
    for name, dims in outputs.items():
        shape = tuple(int(v) for v in context.get_tensor_shape(name))
        if shape != (n, *dims):
            return f"for a batch of {n} its output {name} is {shape}, the manifest implies {(n, *dims)}"
    return None


def pick_profile(profiles: list[list[int]] | list[tuple[int, int, int]], batch: int) -> int | None:
    """Index of the narrowest profile containing `batch` (None when none does)."""
    fits = [(p[2] - p[0], i) for i, p in enumerate(profiles) if p[0] <= batch <= p[2]]
    return min(fits)[1] if fits else None


@dataclass
class _Buffers:
    profile: int
    d_in: int
    h_in_ptr: int
    h_in: np.ndarray
    d_out: dict[str, int]  # per output, in graph order
    h_out_ptr: dict[str, int]
    h_out: dict[str, np.ndarray]


class TensorRTBackend(BaseBackend):
    reads_outputs = True

    @staticmethod
    def unavailable_reason(device: str = "auto") -> str | None:
        if device == "cpu":
            return "TensorRT runs on NVIDIA GPUs only (--device cpu was given)"
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return "TensorRT is not installed (pip install 'fashion-match[tensorrt]' on an NVIDIA GPU machine)"
        try:
            rt = cudart()
            count = check_cuda(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        except (MissingDependency, Exception) as e:  # noqa: BLE001 - no driver raises several types
            return f"CUDA is not usable ({e})"
        if count <= device_index(device):
            return f"no CUDA device {device_index(device)} ({count} visible)"
        return None

    def __init__(
        self, path: Path, entry: dict[str, Any], manifest: Manifest, *, device: str = "auto", threads: int | None = None
    ) -> None:
        import tensorrt as trt

        self.rt = cudart()
        self.dev = device_index(device)
        why = engine_mismatch(entry, trt.__version__, gpu_identity(self.dev))
        if why:
            raise ManifestMismatch(
                f"{path}: {why}; engines are tied to both - rebuild it here with "
                f"fm-export {manifest.folder} --trt{' --' + entry['precision'] if entry['precision'] != 'fp32' else ''}"
            )
        check_cuda(self.rt.cudaSetDevice(self.dev), "cudaSetDevice")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ManifestMismatch(f"{path}: TensorRT cannot deserialise it; rebuild it with fm-export --trt")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.out_dims = output_dims(manifest)
        if len(inputs) != 1 or outputs != list(self.out_dims):
            raise ManifestMismatch(
                f"{path}: expected one input and the outputs {list(self.out_dims)}, got {inputs} -> {outputs}"
            )
        self.in_name, self.out_names = inputs[0], outputs
        why = io_dtype_mismatch(
            trt.nptype(self.engine.get_tensor_dtype(self.in_name)),
            [trt.nptype(self.engine.get_tensor_dtype(n)) for n in self.out_names],
        )
        if why:
            raise ManifestMismatch(f"{path}: {why}; rebuild it from this project's ONNX with fm-export --trt")
        self.profiles: list[list[int]] = [list(p) for p in entry["profiles"]]
        if self.engine.num_optimization_profiles != len(self.profiles):
            raise ManifestMismatch(f"{path}: the engine's profiles do not match its manifest entry")
        spec = manifest.preprocess
        why = engine_io_mismatch(self.engine, self.context, self.in_name, self.out_dims, self.profiles, spec.size)
        if why:
            raise ManifestMismatch(f"{path}: {why}; rebuild it with fm-export --trt")
        self.stream = check_cuda(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        self.buffers: OrderedDict[int, _Buffers] = OrderedDict()
        self.active_profile: int | None = None
        self.info = BackendInfo(
            backend="tensorrt",
            precision=str(entry["precision"]),
            device=f"cuda:{self.dev}",
            artifact=path.name,
            embedding_dim=manifest.embedding_dim,
            input_size=spec.size,
            min_batch=min(p[0] for p in self.profiles),
            max_batch=max(p[2] for p in self.profiles),
            detail=f"TensorRT {trt.__version__} on {entry.get('gpu')}, profiles {self.profiles}",
        )

    def _pinned(self, nbytes: int, dtype: Any, shape: tuple[int, ...]) -> tuple[int, np.ndarray]:
        ptr = check_cuda(self.rt.cudaMallocHost(nbytes), "cudaMallocHost")
        view = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(int(ptr)))
        return int(ptr), view.view(dtype).reshape(shape)

    def _buffers_for(self, n: int) -> _Buffers:
        if n in self.buffers:
            self.buffers.move_to_end(n)
            return self.buffers[n]
        profile = pick_profile(self.profiles, n)
        if profile is None:
            raise BackendUnavailable(f"tensorrt: batch {n} is in no optimisation profile {self.profiles}")
        s = self.info.input_size
        h_in_ptr, h_in = self._pinned(n * s * s * 3, np.uint8, (n, s, s, 3))
        d_out, h_out_ptr, h_out = {}, {}, {}
        for name, dims in self.out_dims.items():
            nbytes = n * int(np.prod(dims)) * 4
            d_out[name] = int(check_cuda(self.rt.cudaMalloc(nbytes), "cudaMalloc"))
            h_out_ptr[name], h_out[name] = self._pinned(nbytes, np.float32, (n, *dims))
        d_in = int(check_cuda(self.rt.cudaMalloc(h_in.nbytes), "cudaMalloc"))
        buf = _Buffers(profile, d_in, h_in_ptr, h_in, d_out, h_out_ptr, h_out)
        self.buffers[n] = buf
        if len(self.buffers) > MAX_CACHED_BATCH_SIZES:
            self._free(self.buffers.popitem(last=False)[1])
        return buf

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        return self._run(pixels, self.out_names[:1])[self.out_names[0]]

    def outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Every named output of the engine: the embedding, then a model's tag and space outputs."""
        return self._run(pixels, self.out_names)

    def _run(self, pixels: np.ndarray, wanted: list[str]) -> dict[str, np.ndarray]:
        self.check_input(pixels)
        n = len(pixels)
        b = self._buffers_for(n)
        rt = self.rt
        if self.active_profile != b.profile:
            self.context.set_optimization_profile_async(b.profile, int(self.stream))
            self.active_profile = b.profile
        self.context.set_input_shape(self.in_name, tuple(pixels.shape))
        self.context.set_tensor_address(self.in_name, b.d_in)
        for name in self.out_names:  # every output needs an address, even those not copied back
            self.context.set_tensor_address(name, b.d_out[name])
        np.copyto(b.h_in, pixels)
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check_cuda(rt.cudaMemcpyAsync(b.d_in, b.h_in_ptr, b.h_in.nbytes, h2d, self.stream), "copy to GPU")
        if not self.context.execute_async_v3(int(self.stream)):
            raise BackendUnavailable("tensorrt: execute_async_v3 failed (see the TensorRT log)")
        for name in wanted:
            nbytes = b.h_out[name].nbytes
            check_cuda(rt.cudaMemcpyAsync(b.h_out_ptr[name], b.d_out[name], nbytes, d2h, self.stream), "copy from GPU")
        check_cuda(rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return {name: b.h_out[name].copy() for name in wanted}

    def _free(self, b: _Buffers) -> None:
        self.rt.cudaFree(b.d_in)
        self.rt.cudaFreeHost(b.h_in_ptr)
        for name in b.d_out:
            self.rt.cudaFree(b.d_out[name])
            self.rt.cudaFreeHost(b.h_out_ptr[name])

    def close(self) -> None:
        if getattr(self, "stream", None) is None:
            return
        self.rt.cudaStreamSynchronize(self.stream)
        for b in self.buffers.values():
            self._free(b)
        self.buffers.clear()
        self.rt.cudaStreamDestroy(self.stream)
        self.stream = None
        self.context = self.engine = None
