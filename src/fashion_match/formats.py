"""The one table of backends x precisions.

The CLI's option checks, the exporter, the benchmark loop and the tests all read `FORMATS`;
adding a precision or backend means adding a row here, not editing five places.
"""

from __future__ import annotations

from dataclasses import dataclass

# also the order of fm-bench rows
BACKENDS = ("onnxruntime", "openvino", "torch", "tensorrt")


@dataclass(frozen=True)
class Precision:
    """What a precision means to the exporter: how its ONNX is made and what the accuracy gate allows."""

    name: str
    onnx: str  # its ONNX file in a model directory (ONNX Runtime's artifact, and an engine source)
    engine_source: str  # the ONNX its TensorRT engine is built from
    converter: str  # export.onnx2<x> that makes `onnx` from the FP32 file ("" for FP32 itself)
    max_drop_pts: float | None = None  # gate: Recall@1 / verification accuracy points it may lose
    min_mean_cosine: float | None = None  # gate: floor of the mean cosine to FP32
    help: str = ""  # fm-export --<name>
    remedy: str = ""  # what a user can do when its gate fails
    # no file of its own: a backend runs the FP32 file at this precision, gated at export (fm-export --<name>)
    execution_only: bool = False


PRECISION_TABLE: tuple[Precision, ...] = (
    Precision("fp32", "model.onnx", "model.onnx", ""),
    Precision(
        "fp16",
        "model.fp16.onnx",
        "model.fp16.onnx",
        "onnx2fp16",
        max_drop_pts=0.1,
        min_mean_cosine=0.999,
        help="FP16 ONNX (pooling and L2 normalisation stay FP32).",
        remedy="FP16 takes no calibration: check the drop against the gate's resolution, or accept it "
        "with --allow-accuracy-drop",
    ),
    # the INT8 engine source is the symmetric TensorRT flavour, never ONNX Runtime's (see export.trt_rules)
    Precision(
        "int8",
        "model.int8.onnx",
        "model.int8.trt.onnx",
        "onnx2int8",
        max_drop_pts=1.0,
        min_mean_cosine=0.95,
        help="INT8 Q/DQ ONNX calibrated on real images.",
        remedy="calibrate on images like yours (--calib SPEC, more --calib-images, another --calib-method), "
        "or accept it with --allow-accuracy-drop",
    ),
    # bf16 keeps FP32 weights and runs the FP32 file with bf16 arithmetic (OpenVINO on CPUs with AMX or
    # AVX-512-BF16); its 8-bit mantissa is coarser than FP16's, so it passes the same gate as FP16
    Precision(
        "bf16",
        "model.onnx",
        "",
        "",
        max_drop_pts=0.1,
        min_mean_cosine=0.999,
        help="Gate bf16 execution of the FP32 file on OpenVINO (CPUs with AMX or AVX-512-BF16); no new file.",
        remedy="bf16 takes no calibration: run FP32 or FP16 instead, or accept it with --allow-accuracy-drop",
        execution_only=True,
    ),
)
PRECISIONS = tuple(p.name for p in PRECISION_TABLE)
REDUCED = tuple(p.name for p in PRECISION_TABLE if p.converter)  # what fm-export makes from FP32
EXECUTIONS = tuple(p.name for p in PRECISION_TABLE if p.execution_only)  # what fm-export gates without a file
FILE_PRECISIONS = tuple(p for p in PRECISION_TABLE if not p.execution_only)  # a file of their own each
FP32_ONNX = PRECISION_TABLE[0].onnx
ONNX_FILES = {p.name: p.onnx for p in FILE_PRECISIONS}  # precision -> its ONNX file
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class Format:
    backend: str  # runtime backend that runs it
    precision: str  # fp32 | fp16 | int8
    artifact: str  # file name inside a model directory
    made_by: str  # converter / command that produces it
    needs: str  # python module the backend needs at run time
    extra: str  # pip extra that installs it
    gpu_only: bool = False
    # how the manifest lists the file when another backend's artifact is run (None: as this row)
    listed: tuple[str, str] | None = None
    # a key of the file's manifest `execution_gates`: this execution must have passed the gate at export
    gate_key: str = ""

    @property
    def listed_as(self) -> tuple[str, str]:
        """(backend, precision) the manifest entry of `artifact` must carry."""
        return self.listed or (self.backend, self.precision)


def _flag(p: Precision) -> str:
    return f" --{p.name}" if p.converter else ""


# One row per (backend, precision), derived from the precision table: a new precision is one new
# Precision row plus its converter.
FORMATS: tuple[Format, ...] = (
    *(
        Format(
            "onnxruntime",
            p.name,
            p.onnx,
            f"{p.converter or 'torch2onnx'} (fm-export{_flag(p)})",
            "onnxruntime",
            "runtime",
        )
        for p in FILE_PRECISIONS
    ),
    *(
        Format(
            "tensorrt",
            p.name,
            f"model.{p.name}.engine",
            f"onnx2engine (fm-export --trt{_flag(p)})",
            "tensorrt",
            "tensorrt",
            True,
        )
        for p in FILE_PRECISIONS
    ),
    Format("torch", "fp32", WEIGHTS, "fm-train checkpoint", "torch", "train"),
    # OpenVINO runs ONNX Runtime's files as they are (listed as theirs); bf16 runs the FP32 file
    *(
        Format(
            "openvino",
            p.name,
            p.onnx,
            f"fm-export --{p.name} (gates OpenVINO's bf16 run of {p.onnx})"
            if p.execution_only
            else f"{p.converter or 'torch2onnx'} (fm-export{_flag(p)})",
            "openvino",
            "openvino",
            listed=("onnxruntime", "fp32" if p.execution_only else p.name),
            gate_key=f"openvino/{p.name}" if p.execution_only else "",
        )
        for p in PRECISION_TABLE
    ),
)


def lookup(backend: str, precision: str) -> Format:
    """The row for (backend, precision); `UsageError` naming the valid choices otherwise."""
    from fashion_match.errors import UsageError

    for f in FORMATS:
        if f.backend == backend and f.precision == precision:
            return f
    have = ", ".join(f.precision for f in FORMATS if f.backend == backend) or "none"
    raise UsageError(f"backend '{backend}' has no '{precision}' format (it supports: {have})")


def precision(name: str) -> Precision:
    """The exporter's row for precision `name`; `UsageError` naming the valid ones otherwise."""
    from fashion_match.errors import UsageError

    for p in PRECISION_TABLE:
        if p.name == name:
            return p
    raise UsageError(f"precision '{name}': choose one of {', '.join(PRECISIONS)}")


def backends_for(precision: str) -> list[str]:
    return [f.backend for f in FORMATS if f.precision == precision]
