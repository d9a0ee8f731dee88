"""The TensorRT backend's CUDA side (pinned host buffers, device buffers, async copies on its stream,
buffers reused per batch size and evicted, profile switches, everything freed on close) with a fake
execution context in place of TensorRT: on CPU against a host-memory stand-in for cuda-python's
runtime, and with real cuda-python on a GPU (which needs no TensorRT)."""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest

import fashion_match.runtime.tensorrt_backend as trb
from fashion_match.runtime.backend import BackendInfo
from fashion_match.runtime.cuda import check_cuda, cudart

S, D = 8, 48  # 8 x 8 x 3 uint8 pixels = 192 bytes = 48 float32: the fake "network" is a byte copy


class HostCudart:
    """cuda-python's runtime calls the backend makes, on host memory; tracks what is still allocated."""

    class cudaMemcpyKind:  # cuda-python's names
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice = 1, 2, 3

    def __init__(self) -> None:
        self.live: dict[int, Any] = {}

    def cudaMalloc(self, n: int) -> tuple[int, int]:
        buf = (ctypes.c_uint8 * n)()
        self.live[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    cudaMallocHost = cudaMalloc

    def cudaFree(self, ptr: int) -> tuple[int]:
        del self.live[int(ptr)]
        return (0,)

    cudaFreeHost = cudaFree

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, stream: int) -> tuple[int]:
        ctypes.memmove(int(dst), int(src), n)
        return (0,)

    def cudaSetDevice(self, dev: int) -> tuple[int]:
        return (0,)

    def cudaStreamCreate(self) -> tuple[int, int]:
        return 0, 7

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (0,)

    cudaStreamDestroy = cudaStreamSynchronize


class FakeContext:
    """Stands in for a TensorRT execution context: 'inference' copies the input bytes to the output on
    the stream, device to device, so what comes back proves both copies and their order."""

    def __init__(self, rt: Any) -> None:
        self.rt, self.addr, self.shape, self.profiles = rt, {}, (0,), []

    def set_optimization_profile_async(self, profile: int, stream: int) -> None:
        self.profiles.append(profile)

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addr[name] = ptr

    def execute_async_v3(self, stream: int) -> bool:
        n, kind = int(np.prod(self.shape)), self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        check_cuda(self.rt.cudaMemcpyAsync(self.addr["out"], self.addr["in"], n, kind, stream), "fake inference")
        if "tags" in self.addr:  # a second output: the first 4 bytes of each image, as one float32
            for i in range(self.shape[0]):
                check_cuda(
                    self.rt.cudaMemcpyAsync(
                        self.addr["tags"] + 4 * i, self.addr["in"] + n // self.shape[0] * i, 4, kind, stream
                    ),
                    "fake",
                )
        return True


def bare_backend(rt: Any, tags: bool = False) -> trb.TensorRTBackend:
    """The backend's state after __init__, without an engine (what __init__ reads from TensorRT)."""
    be = object.__new__(trb.TensorRTBackend)
    be.rt, be.dev = rt, 0
    check_cuda(rt.cudaSetDevice(0), "cudaSetDevice")
    be.context, be.in_name = FakeContext(rt), "in"
    be.out_dims = {"out": (D,), **({"tags": (1,)} if tags else {})}
    be.out_names = list(be.out_dims)
    be.profiles = [[1, 1, 1], [2, 4, 4], [5, 16, 16]]
    be.stream = check_cuda(rt.cudaStreamCreate(), "cudaStreamCreate")
    be.buffers, be.active_profile = OrderedDict(), None
    be.info = BackendInfo("tensorrt", "fp16", "cuda:0", "x.engine", D, S, min_batch=1, max_batch=16)
    return be


def check_buffers_copy_reuse_and_evict(be: trb.TensorRTBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trb, "MAX_CACHED_BATCH_SIZES", 2)
    rng = np.random.default_rng(0)
    try:
        for n in (1, 3, 3, 9, 1):  # profiles 0, 1, 1, 2, 0; the second batch of 3 reuses its buffers
            x = rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8)
            y = be.embed(x)
            assert y.dtype == np.float32 and y.shape == (n, D)
            assert y.tobytes() == x.tobytes()  # host -> device -> "engine" -> host, in stream order
        assert be.context.profiles == [0, 1, 2, 0]  # switched only when the profile changes
        assert list(be.buffers) == [9, 1]  # at most 2 batch sizes kept, the least recently used evicted
    finally:
        be.close()
    assert be.stream is None and not be.buffers


def test_tensorrt_backend_buffers_on_host_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    rt = HostCudart()
    check_buffers_copy_reuse_and_evict(bare_backend(rt), monkeypatch)
    assert rt.live == {}  # every pinned and device buffer freed, evicted ones included


def test_tensorrt_backend_returns_every_named_output() -> None:
    rt = HostCudart()
    be = bare_backend(rt, tags=True)
    x = np.random.default_rng(1).integers(0, 256, (3, S, S, 3), dtype=np.uint8)
    try:
        out = be.outputs(x)
        assert list(out) == ["out", "tags"] and out["tags"].shape == (3, 1)
        assert out["out"].tobytes() == x.tobytes()
        assert out["tags"][:, 0].tobytes() == x.reshape(3, -1)[:, :4].tobytes()  # each image's own bytes
        assert set(out) - set(be.outputs(x)) == set() and be.embed(x).tobytes() == x.tobytes()
    finally:
        be.close()
    assert rt.live == {}  # both outputs' buffers freed


@pytest.mark.gpu
def test_tensorrt_backend_buffers_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cuda.bindings", reason="needs cuda-python")
    check_buffers_copy_reuse_and_evict(bare_backend(cudart()), monkeypatch)
