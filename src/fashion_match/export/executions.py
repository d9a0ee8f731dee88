"""Execution-only precisions: another backend running the FP32 file with coarser arithmetic (bf16).

No file is made, so nothing on disk says the run was checked; the FP32 file's manifest entry keeps
the gate's figures under `execution_gates[<backend>/<precision>]`, and `Manifest.artifact` refuses
the execution until they are there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fashion_match.errors import UsageError
from fashion_match.export.gate_session import GateSession
from fashion_match.formats import FORMATS, Format
from fashion_match.runtime.manifest import Manifest


def row(precision: str) -> Format:
    """The format row that runs execution-only `precision` (the run the gate must pass)."""
    return next(f for f in FORMATS if f.precision == precision and f.gate_key)


def check_runnable(fmt: Format) -> None:
    """UsageError when `fmt`'s backend, or this CPU, cannot run it."""
    from fashion_match.runtime.backend import unavailable_reason

    why = unavailable_reason(fmt.backend, "cpu")
    if why is None and fmt.backend == "openvino":
        from fashion_match.runtime.openvino_backend import precision_reason

        why = precision_reason(fmt.precision)
    if why:
        raise UsageError(f"--{fmt.precision}: {why}")


def gate_execution(manifest: Manifest, fmt: Format, gate: GateSession) -> tuple[Path, dict[str, Any]]:
    """(the FP32 file, the gate's figures) for `fmt`'s backend running it at `fmt.precision`;
    `GateFailed` as for any artifact."""
    from fashion_match.runtime.backend import backend_class

    path, entry = manifest.artifact(*fmt.listed_as)
    # opened directly: open_backend refuses this very execution until its gate is recorded
    cls = backend_class(fmt.backend)
    with cls(path, dict(entry, precision=fmt.precision), manifest, device="cpu") as be:
        outputs = be.outputs if be.reads_outputs else None
        figures = gate.check(path, fmt.precision, f"{fmt.backend} {fmt.precision}", embed=be.embed, outputs=outputs)
        figures["backend_detail"] = be.info.detail
    return path, figures
