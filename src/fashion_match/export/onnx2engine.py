"""`onnx2engine`: a TensorRT engine from one of our ONNX files (TensorRT 10.x / 11.x API).

The network is *strongly typed*: every tensor's precision comes from the ONNX (FP32, the
FP16 file's casts, the INT8 file's Q/DQ), so there are no FP16/INT8 builder flags and the
engine runs exactly the precision the accuracy gate measured. Batch ranges become several
narrow optimisation profiles (`batch_profiles`): one wide profile tunes kernels for its OPT
size and makes batch 1 slow. A timing cache makes rebuilds fast.

Not run on a TensorRT machine yet (TensorRT cannot be installed where this was written); the
parts that need no TensorRT (profiles, manifests, refusals) are tested.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from fashion_match.errors import ExportError, MissingDependency, UsageError
from fashion_match.export.trt_rules import tensorrt_problems
from fashion_match.formats import FILE_PRECISIONS
from fashion_match.runtime.cuda import gpu_identity

log = logging.getLogger(__name__)
DEFAULT_BATCH = (1, 32, 128)


def parse_batch(text: str) -> tuple[int, int, int]:
    """'MIN,OPT,MAX' (or one number) -> (min, opt, max), validated."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise UsageError(f"--batch {text!r}: expected MIN,OPT,MAX such as 1,32,128") from None
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise UsageError(f"--batch {text!r}: expected MIN,OPT,MAX such as 1,32,128")
    mn, opt, mx = parts
    if not 1 <= mn <= opt <= mx:
        raise UsageError(f"--batch {text!r}: need 1 <= MIN <= OPT <= MAX")
    return mn, opt, mx


def batch_profiles(mn: int, opt: int, mx: int) -> list[tuple[int, int, int]]:
    """Narrow (min, opt, max) profiles covering mn..mx: batch 1 alone, then up to OPT, then up to MAX.

    Each profile is tuned at its top size, so a request is never run with kernels chosen for
    a batch several times larger.
    """
    out: list[tuple[int, int, int]] = []
    lo = mn
    for top in sorted({b for b in (1, opt, mx) if mn <= b <= mx}):
        if top >= lo:
            out.append((lo, top, top))
            lo = top + 1
    return out


def _trt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise MissingDependency(
            "TensorRT is not installed: pip install 'fashion-match[tensorrt]' on a machine with an NVIDIA GPU "
            "(engines are built on the GPU that will run them)"
        ) from e
    return trt


def network_flags(trt: Any) -> int:
    """Strongly typed: a flag in TensorRT 10, always on (the flag deprecated and ignored) from 11."""
    major = int(str(trt.__version__).split(".")[0])
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 1 << int(flag) if major < 11 and flag is not None else 0


def attach_timing_cache(config: Any, path: Path | None) -> Any:
    """The timing cache in `path` attached to `config`, or a fresh one where that file came from
    another GPU or TensorRT version: TensorRT refuses such a cache (ignore_mismatch stays False:
    tactics timed on another device would mislead), and saving the refused one back would keep
    every later build uncached."""
    data = path.read_bytes() if path and path.is_file() else b""
    # create_timing_cache gives None for bytes it cannot read (corrupt, truncated, not a cache)
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    if data:
        why = "unreadable" if cache is None else "from another GPU or TensorRT version"
        log.warning("%s: timing cache %s; starting a fresh one", path, why)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise ExportError("TensorRT could not create an empty timing cache")
    return cache


def check_engine_source(onnx_path: str | Path) -> None:
    """Refuse a file TensorRT would reject (see export.trt_rules): ONNX Runtime's INT8 flavour
    above all, which feeds uint8 pixels to its first quantised convolution."""
    import onnx

    problems = tensorrt_problems(onnx.load(str(onnx_path), load_external_data=False))
    if problems:
        more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
        raise ExportError(
            f"{onnx_path}: not an engine source: {'; '.join(problems[:2])}{more}. Engines are built from "
            f"{', '.join(p.engine_source for p in FILE_PRECISIONS)} (the INT8 one: fm-export --int8 --target tensorrt)"
        )


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    batch: tuple[int, int, int] = DEFAULT_BATCH,
    *,
    timing_cache: str | Path | None = None,
    workspace_gib: float = 4.0,
) -> dict[str, Any]:
    """Build and write an engine; returns its manifest entry fields (TensorRT version, GPU, profiles)."""
    from fashion_match.fileio import write_bytes_atomic

    check_engine_source(onnx_path)  # before TensorRT is even imported: a plain file check
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT's ONNX parser refused it: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    inp = network.get_input(0)
    _, h, w, c = inp.shape
    profiles = batch_profiles(*batch)
    for mn, opt, mx in profiles:
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (mn, h, w, c), (opt, h, w, c), (mx, h, w, c))
        config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = attach_timing_cache(config, cache_path)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT log above)")
    build_s = time.perf_counter() - t0
    write_bytes_atomic(engine_path, bytes(serialized))
    if cache_path:
        write_bytes_atomic(cache_path, bytes(cache.serialize()))
    log.info("built %s in %.1fs", engine_path, build_s)
    return {
        "tensorrt_version": trt.__version__,
        **gpu_identity(),
        "profiles": [list(p) for p in profiles],
        "strongly_typed": True,
        "built_from": Path(onnx_path).name,
        "build_s": round(build_s, 2),
        "input": {"name": inp.name, "dtype": "uint8", "layout": "NHWC"},
    }
