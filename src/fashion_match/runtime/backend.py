"""One `Backend` protocol, many implementations, and a registry that opens them by name.

A backend turns uint8 RGB pixels (N, S, S, 3) into L2-normalised float32 embeddings (N, D).
Asking for a backend, device or precision that cannot run is an error, never a downgrade.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fashion_match.errors import BackendUnavailable, UsageError
from fashion_match.formats import BACKENDS, FORMATS, PRECISIONS, backends_for, lookup
from fashion_match.runtime.manifest import Manifest, load_manifest


@dataclass(frozen=True)
class BackendInfo:
    backend: str
    precision: str
    device: str  # "cpu" | "cuda:0" ...
    artifact: str  # file name inside the model directory
    embedding_dim: int
    input_size: int
    min_batch: int = 1
    max_batch: int | None = None  # None: unbounded (dynamic)
    detail: str = ""  # providers, engine profile, threads...

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Backend(Protocol):
    """An opened artifact: `embed` uint8 pixels (N, S, S, 3) -> L2-normalised float32 (N, D)."""

    info: BackendInfo
    reads_outputs: bool  # whether `outputs` can give a model's tag and space outputs too

    def embed(self, pixels: np.ndarray) -> np.ndarray: ...

    def outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc: Any) -> None: ...


class BackendClass(Protocol):
    """What the registry names: a class that says whether it can run here, and opens an artifact
    (hash-checked by the manifest before it is called)."""

    def unavailable_reason(self, device: str = "auto") -> str | None: ...

    def __call__(
        self, path: Path, entry: dict[str, Any], manifest: Manifest, *, device: str = "auto", threads: int | None = None
    ) -> Backend: ...


class BaseBackend:
    """Shared behaviour: context manager and the input check every `embed` starts with."""

    info: BackendInfo
    reads_outputs = False

    def __enter__(self) -> BaseBackend:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        pass

    def check_input(self, pixels: np.ndarray) -> None:
        s = self.info.input_size
        if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
            raise UsageError(
                f"{self.info.backend}: pixels must be a uint8 array, got {getattr(pixels, 'dtype', type(pixels))}"
            )
        if pixels.ndim != 4 or pixels.shape[1:] != (s, s, 3):
            raise UsageError(f"{self.info.backend}: pixels must have shape (N, {s}, {s}, 3), got {pixels.shape}")
        n = pixels.shape[0]
        hi = self.info.max_batch
        if n < self.info.min_batch or (hi is not None and n > hi):
            raise UsageError(
                f"{self.info.backend}: batch {n} is outside this artifact's range {self.info.min_batch}..{hi}"
            )

    def embed(self, pixels: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Every named output of the artifact: the embedding, then a model's tag and space outputs."""
        raise UsageError(
            f"backend {self.info.backend} cannot read a model's tag or space outputs yet; use --backend onnxruntime"
        )


DEVICES = "auto, cpu, cuda or cuda:N"


def check_device(device: str) -> str:
    """`device` when it is one of DEVICES; a usage error otherwise."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise UsageError(f"--device {device}: choose {DEVICES}")
    return device


def device_index(device: str) -> int:
    """N of a "cuda:N" device; 0 for "cuda", "auto" and "cpu"."""
    return int(check_device(device).partition(":")[2] or 0)


def embed_in_batches(embed: Any, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    """float32 embeddings of `pixels` through `embed`, `batch` images per call."""
    return np.concatenate([embed(pixels[s : s + batch]) for s in range(0, len(pixels), batch)]).astype(np.float32)


# name -> (module, class), imported lazily: a missing library fails only its own backend, and the
# lean runtime never imports torch for the torch backend's sake. tests/runtime check every entry
# resolves to a BackendClass, since the import graph cannot see these strings.
REGISTRY: dict[str, tuple[str, str]] = {
    "onnxruntime": ("fashion_match.runtime.onnxruntime_backend", "OnnxRuntimeBackend"),
    "torch": ("fashion_match.models.torch_backend", "TorchBackend"),
    "tensorrt": ("fashion_match.runtime.tensorrt_backend", "TensorRTBackend"),
    "openvino": ("fashion_match.runtime.openvino_backend", "OpenVinoBackend"),
}
# "auto" tries these in order: the fastest that is installed and has the artifact wins. OpenVINO is
# never picked by "auto": it runs the same files as ONNX Runtime, so choosing it is the user's call.
AUTO_ORDER = ("tensorrt", "onnxruntime", "torch")


def backend_class(name: str) -> BackendClass:
    """The class registered as `name` (ImportError when its library is missing)."""
    module, cls = REGISTRY[name]
    found: BackendClass = getattr(importlib.import_module(module), cls)
    return found


def unavailable_reason(name: str, device: str = "auto") -> str | None:
    """Why backend `name` cannot run here (None when it can)."""
    if name not in REGISTRY:
        return f"unknown backend '{name}'"
    try:
        cls = backend_class(name)
    except ImportError as e:
        return f"cannot import the {name} backend ({e})"
    reason: str | None = cls.unavailable_reason(device)
    return reason


def open_backend(
    model_dir: str | Path,
    backend: str = "auto",
    precision: str = "fp32",
    *,
    device: str = "auto",
    threads: int | None = None,
    manifest: Manifest | None = None,
) -> Backend:
    """Open the artifact for (backend, precision) in `model_dir`, verified against its manifest."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if backend != "auto" and backend not in BACKENDS:
        raise UsageError(f"--backend {backend}: choose auto or one of {', '.join(BACKENDS)}")
    check_device(device)
    manifest = manifest or load_manifest(model_dir)
    if backend == "auto":
        if not any(f.backend in AUTO_ORDER for f in FORMATS if f.precision == precision):
            raise UsageError(
                f"--precision {precision} runs on --backend {' or '.join(backends_for(precision))} only: "
                "--backend auto never picks it, name it"
            )
        if not any(a.get("precision") == precision for a in manifest.artifacts.values()):
            raise BackendUnavailable(
                f"{manifest.folder}: no {precision} artifact for any backend; make one with "
                f"{lookup('onnxruntime', precision).made_by}, or choose another --precision"
            )
        tried = []
        for name in AUTO_ORDER:
            fmt_ok = any(
                a.get("backend") == name and a.get("precision") == precision for a in manifest.artifacts.values()
            )
            why = None if fmt_ok else f"no {precision} artifact"
            why = why or unavailable_reason(name, device)
            if why is None:
                backend = name
                break
            tried.append(f"{name}: {why}")
        else:
            raise BackendUnavailable(f"--backend auto: nothing can run {precision} here ({'; '.join(tried)})")
    path, entry = manifest.artifact(backend, precision)  # BackendUnavailable / ManifestMismatch first
    why = unavailable_reason(backend, device)
    if why is not None:
        raise BackendUnavailable(f"--backend {backend}: {why}")
    cls = backend_class(backend)
    # the precision to run: the file's own, except an execution-only one (bf16 on the FP32 file)
    return cls(path, dict(entry, precision=precision), manifest, device=device, threads=threads)
