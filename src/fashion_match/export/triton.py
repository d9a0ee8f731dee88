"""A Triton Inference Server model repository from a model directory (`fm-export --triton DIR`).

Layout (Triton's):  DIR/<name>/config.pbtxt  and  DIR/<name>/1/model.onnx | model.plan
One Triton model per artifact: `<name>_onnx_fp32`, `<name>_onnx_int8`, `<name>_trt_fp16` ...
ONNX files run on Triton's onnxruntime backend, engines as `platform: "tensorrt_plan"` (an
engine still only runs on the GPU model and TensorRT version that built it). The configs are
written from the manifest and checked by parsing them with Triton's own model-config protobuf
(`tritonclient`), when it is installed.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

from fashion_match.errors import ExportError, MissingDependency
from fashion_match.fileio import atomic_open, make_temp
from fashion_match.formats import FORMATS
from fashion_match.runtime.manifest import Manifest
from fashion_match.runtime.tagging import output_dims

log = logging.getLogger(__name__)

# the file names Triton's TensorRT and ONNX Runtime backends look for by default (theirs, not ours)
TRITON_FILE = {"trt": "model.plan", "onnx": "model.onnx"}
PREFERRED_BATCH = (8, 32)
QUEUE_DELAY_US = 500  # wait at most 0.5 ms to fill a batch


def _model_name(manifest: Manifest) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", manifest.model).strip("_").lower() or "fashion_match"


def config_pbtxt(
    name: str, manifest: Manifest, entry: dict[str, Any], *, max_batch: int, instances: int, gpu: bool
) -> str:
    s = manifest.preprocess.size
    is_plan = entry["backend"] == "tensorrt"
    # the INT8 ONNX is made for ONNX Runtime's CPU kernels: on its CUDA provider it ran slower than FP32
    # (H100, benchmarks/results/bench_gpu_h100), so it is served on CPU; engines and FP32/FP16 on GPU
    on_gpu = is_plan or (gpu and entry.get("precision") != "int8")
    preferred = [b for b in PREFERRED_BATCH if b <= max_batch] or [max_batch]
    lines = [
        f'name: "{name}"',
        'platform: "tensorrt_plan"' if is_plan else 'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch}",
        "input [",
        "  {",
        '    name: "pixels"',
        "    data_type: TYPE_UINT8",
        f"    dims: [ {s}, {s}, 3 ]",
        "  }",
        "]",
        "output [",
        ",\n".join(  # the embedding, then a model's tag and space outputs (all float32)
            f'  {{\n    name: "{n}"\n    data_type: TYPE_FP32\n    dims: [ {", ".join(map(str, dims))} ]\n  }}'
            for n, dims in output_dims(manifest).items()
        ),
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]",
        f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {instances}",
        f"    kind: {'KIND_GPU' if on_gpu else 'KIND_CPU'}",
    ]
    if is_plan:
        profiles = ", ".join(f'"{i}"' for i in range(len(entry.get("profiles", [[1, 1, 1]]))))
        lines.append(f"    profile: [ {profiles} ]")
    lines += ["  }", "]"]
    return "\n".join(lines) + "\n"


def validate_config(text: str) -> Any:
    """Parse with Triton's ModelConfig protobuf; `ExportError` on any unknown field or bad value."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise MissingDependency(
            "checking Triton configs needs tritonclient: pip install 'fashion-match[triton]'"
        ) from e
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise ExportError(f"generated config.pbtxt does not parse as a Triton ModelConfig: {e}") from None


def check_triton_profiles(engine: Path | str, profiles: list[list[int]]) -> None:
    """Triton's dynamic batcher sends any batch from 1 up; its TensorRT backend runs a batch only in
    a profile that holds it (else it logs "failed to find any Optimization Profile" and the request
    fails). So an engine for Triton must cover 1..max with no gap."""
    covered = sorted((p[0], p[2]) for p in profiles)
    top = 0
    for lo, hi in covered:
        if lo > top + 1:
            raise ExportError(
                f"{engine}: its profiles {profiles} leave batches {top + 1}..{lo - 1} uncovered, which Triton's "
                "dynamic batcher will send; rebuild it for Triton with --batch 1,OPT,MAX"
            )
        top = max(top, hi)


def write_repository(
    manifest: Manifest, out: str | Path, *, max_batch: int = 128, instances: int = 1, gpu: bool = True
) -> list[Path]:
    """One Triton model per ONNX/engine artifact of `manifest`; returns the model folders written."""
    out = Path(out)
    base = _model_name(manifest)
    written = []
    for fmt in FORMATS:
        entry = manifest.artifacts.get(fmt.artifact)
        if entry is None or fmt.backend not in ("onnxruntime", "tensorrt"):  # Triton's ONNX Runtime / TensorRT
            continue
        path, entry = manifest.artifact(fmt.backend, fmt.precision)  # hash-checked
        kind = "trt" if fmt.backend == "tensorrt" else "onnx"
        name = f"{base}_{kind}_{fmt.precision}"
        mb = max_batch
        if kind == "trt":
            check_triton_profiles(path, entry["profiles"])
            mb = min(max_batch, max(p[2] for p in entry["profiles"]))
        if kind == "onnx" and fmt.precision == "int8":
            # Triton's onnxruntime backend takes no option for ONNX Runtime's exact INT8 kernels, which
            # fashion-match's own runtime asks for (runtime.onnxruntime_backend.PRECISE_INT8)
            log.warning(
                "warning: %s runs on Triton's onnxruntime backend in ONNX Runtime's fast INT8 kernels, which "
                "saturate on x86 CPUs without VNNI (AVX2; AMD before Zen 4): there serve INT8 with fm-serve "
                "(docs/precision.md)",
                name,
            )
        text = config_pbtxt(name, manifest, entry, max_batch=mb, instances=instances, gpu=gpu)
        validate_config(text)
        folder = out / name
        (folder / "1").mkdir(parents=True, exist_ok=True)
        target = folder / "1" / TRITON_FILE[kind]
        tmp = make_temp(target.parent, target.name)
        try:
            shutil.copyfile(path, tmp)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        with atomic_open(folder / "config.pbtxt", "w") as f:
            f.write(text)
        written.append(folder)
    if not written:
        raise ExportError(f"{manifest.folder}: no ONNX or engine artifact to put in a Triton repository")
    return written
