"""OpenVINO's per-layer counters: where its CPU plugin spends a batch, and on which kernels.

A second opinion next to ONNX Runtime's profiler (`export.ort_profile`): OpenVINO fuses and
re-lays the same ONNX file its own way, and its counters name the kernel each layer ran on
(`brgconv_avx512_amx_I8`, `jit_avx512_FP32`, `ref_any` ...), which says directly whether a layer ran
on integer units, on FP32, or on a slow reference path.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from fashion_match.runtime.openvino_backend import HINTS, load_openvino


def layer_times(path: Path, pixels: np.ndarray, runs: int, precision: str = "fp32") -> list[dict]:
    """Per executed layer: name, type, kernel and mean microseconds per call over `runs` calls
    (after one warm-up), compiled with the arithmetic `precision` asks for."""
    ov = load_openvino()
    core = ov.Core()
    config = {"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()
    request.infer({0: pixels})
    total: dict[tuple[str, str, str], float] = defaultdict(float)
    for _ in range(runs):
        request.infer({0: pixels})
        for p in request.get_profiling_info():
            if str(p.status).endswith("EXECUTED"):
                total[(p.node_name, p.node_type, p.exec_type)] += p.real_time.total_seconds() * 1e6
    return [
        {"layer": n, "type": t, "kernel": k, "us": us / runs}
        for (n, t, k), us in sorted(total.items(), key=lambda kv: -kv[1])
    ]


def by_kernel(layers: list[dict]) -> dict:
    """Milliseconds and share per (layer type, kernel), largest first."""
    groups: dict[str, float] = defaultdict(float)
    for row in layers:
        groups[f"{row['type']} [{row['kernel']}]"] += row["us"]
    total = sum(groups.values()) or 1.0
    return {
        "total_ms": round(total / 1000, 2),
        "kernels": {
            k: {"ms": round(v / 1000, 2), "share": round(v / total, 4)}
            for k, v in sorted(groups.items(), key=lambda kv: -kv[1])
        },
    }
