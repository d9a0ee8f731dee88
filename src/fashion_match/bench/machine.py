"""The machine a number was measured on: recorded beside every benchmark result."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from typing import Any

PACKAGES = (
    "fashion-match",
    "numpy",
    "pillow",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnx",
    "torch",
    "torchvision",
    "tensorrt",
    "cuda-python",
    "faiss-cpu",
    "cupy-cuda12x",
    "cupy-cuda13x",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (AVX-512 or AVX): without it ONNX Runtime's fast INT8 kernels
    can saturate (docs/precision.md)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def imported() -> dict[str, Any]:
    """What this process runs: onnxruntime and onnxruntime-gpu install the same module, so the installed
    versions alone cannot say which one (and which providers) a timing used."""
    found: dict[str, Any] = {}
    try:
        import onnxruntime as ort

        found["onnxruntime"] = {"version": ort.__version__, "providers": list(ort.get_available_providers())}
    except ImportError:
        pass
    torch = sys.modules.get("torch")  # only when already loaded: the lean runtime never imports it
    if torch is not None:
        found["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda}
    return found


def machine_info() -> dict[str, Any]:
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem_gib = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "gpus": gpus(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "imported": imported(),
    }
