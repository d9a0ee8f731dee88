"""The one table of backends x precisions.

The CLI's option checks, the exporter, the benchmark loop and the tests all read `FORMATS`;
adding a precision or backend means adding a row here, not editing five places.
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("onnxruntime", "tensorrt", "torch")


@dataclass(frozen=True)
class Format:
    backend: str  # runtime backend that runs it
    precision: str  # fp32 | fp16 | int8
    artifact: str  # file name inside a model directory
    made_by: str  # converter / command that produces it
    needs: str  # python module the backend needs at run time
    extra: str  # pip extra that installs it
    gpu_only: bool = False


FORMATS: tuple[Format, ...] = (
    Format("onnxruntime", "fp32", "model.onnx", "torch2onnx (fm-export)", "onnxruntime", "runtime"),
    Format("onnxruntime", "fp16", "model.fp16.onnx", "onnx2fp16 (fm-export --fp16)", "onnxruntime", "runtime"),
    Format("onnxruntime", "int8", "model.int8.onnx", "onnx2int8 (fm-export --int8)", "onnxruntime", "runtime"),
    Format("tensorrt", "fp32", "model.fp32.engine", "onnx2engine (fm-export --trt)", "tensorrt", "tensorrt", True),
    Format(
        "tensorrt", "fp16", "model.fp16.engine", "onnx2engine (fm-export --trt --fp16)", "tensorrt", "tensorrt", True
    ),
    Format(
        "tensorrt", "int8", "model.int8.engine", "onnx2engine (fm-export --trt --int8)", "tensorrt", "tensorrt", True
    ),
    Format("torch", "fp32", "model.safetensors", "fm-train checkpoint", "torch", "train"),
)


def lookup(backend: str, precision: str) -> Format:
    """The row for (backend, precision); `UsageError` naming the valid choices otherwise."""
    from fashion_match.errors import UsageError

    for f in FORMATS:
        if f.backend == backend and f.precision == precision:
            return f
    have = ", ".join(f.precision for f in FORMATS if f.backend == backend) or "none"
    raise UsageError(f"backend '{backend}' has no '{precision}' format (it supports: {have})")


def backends_for(precision: str) -> list[str]:
    return [f.backend for f in FORMATS if f.precision == precision]
