"""cuda-python helpers shared by the TensorRT backend and the engine builder (no torch)."""

from __future__ import annotations

from typing import Any

from fashion_match.errors import BackendUnavailable, MissingDependency


def cudart() -> Any:
    """cuda-python's runtime module (its import path moved in cuda-python 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # type: ignore[no-redef]
        except ImportError as e:
            raise MissingDependency("cuda-python is not installed: pip install 'fashion-match[tensorrt]'") from e
    return runtime


def check_cuda(result: tuple[Any, ...], what: str) -> Any:
    """cuda-python returns (error, value...): raise on error, return the value(s)."""
    err, *rest = result
    if int(err) != 0:
        raise BackendUnavailable(f"CUDA {what} failed: {err}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


def gpu_identity(device: int = 0) -> dict[str, Any]:
    """Name and compute capability: what an engine is tied to besides the TensorRT version."""
    props = check_cuda(cudart().cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}"}
