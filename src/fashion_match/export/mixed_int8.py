"""Automatic mixed precision for INT8 (`fm-export --int8 --int8-max-drop PTS`).

The whole backbone is tried in INT8 first. When the accuracy gate's largest drop (category
Recall@1, instance Recall@1, verification accuracy) is above PTS, the sensitivity scan ranks the
units (`export.sensitivity`) and the most damaging ones are kept in FP32, one more per step, each
step gated again; it stops at the first step within PTS. What it costs in speed is measured in the
same run: INT8 throughput with and without the kept units, alternating, at one batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.errors import ExportError
from fashion_match.export import gate as gates
from fashion_match.export.onnx2int8 import Int8Quantiser
from fashion_match.export.quant_units import Unit
from fashion_match.fileio import make_temp

Check = Callable[[Path], dict[str, Any]]  # gate figures of a candidate file; GateFailed when it fails


def _try(check: Check, path: Path) -> tuple[dict[str, Any], bool]:
    try:
        return check(path), True
    except gates.GateFailed as e:
        return e.figures, False


def within(figures: dict[str, Any], passed: bool, max_drop: float) -> bool:
    return passed and gates.largest_drop_pts(figures) <= max_drop + 1e-9


def keep_until_within(
    q: Int8Quantiser,
    dst: Path,
    check: Check,
    max_drop: float,
    ranking: Callable[[], tuple[list[Unit], dict[str, dict[str, Any]]]],
    say: Callable[[str], None] = lambda s: None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(record, gate figures) of the first candidate within `max_drop`, written to `dst`.

    `ranking` is called only if all-INT8 is not within: units most damaging first, and each
    unit's scan row (why it is kept)."""
    tmp = make_temp(dst.parent, dst.name)
    steps: list[dict[str, Any]] = []
    kept: list[Unit] = []
    rows: dict[str, dict[str, Any]] = {}
    order: list[Unit] | None = None
    try:
        while True:
            summary = q.quantise(tmp, keep_fp32=[n for u in kept for n in u.nodes])
            figures, passed = _try(check, tmp)
            drop = gates.largest_drop_pts(figures)
            steps.append(
                {
                    "kept": [u.name for u in kept],
                    "largest_drop_pts": drop,
                    "drops_pts": {k: figures[k] for k in gates.DROPS if k in figures},
                    "mean_cosine": figures.get("mean_cosine"),
                    "gate_passed": passed,
                }
            )
            say(f"int8 mixed precision: {len(kept)} unit(s) kept FP32, largest drop {drop:.2f} pts")
            if within(figures, passed, max_drop):
                break
            if order is None:
                order, rows = ranking()
            if len(kept) == len(order):
                raise ExportError(
                    f"--int8-max-drop {max_drop}: even with all {len(order)} scanned units in FP32 the gate's "
                    f"largest drop is {drop:.2f} points; the rest of the drop is not in the backbone units "
                    "(or is noise: see the gate's standard errors); allow more, or keep the FP32 model"
                )
            kept.append(order[len(kept)])
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    record = {
        "max_drop_pts": max_drop,
        "rule": "all INT8 first; then the units the sensitivity scan ranks most damaging (embedding drift "
        "when quantised alone) kept in FP32 one by one until the gate's largest drop is within max_drop_pts",
        "kept": [{"unit": u.name, "ops": u.op_summary, "nodes": list(u.nodes), "why": rows.get(u.name)} for u in kept],
        "steps": steps,
        "summary": summary,
    }
    return record, figures


def alternate_speed(paths: dict[str, Path], pixels: np.ndarray, batch: int = 32, rounds: int = 3) -> dict[str, Any]:
    """Images/s of each ONNX file at `batch`, measured in alternating rounds on this CPU (median)."""
    from fashion_match.bench.timing import TimingPlan, measure, rotated_batches, summarise
    from fashion_match.export.onnx_cpu import onnx_embedder

    plan = TimingPlan(warmup=2, min_runs=5, max_runs=100, min_seconds=1.5)
    batches = rotated_batches(pixels, batch)
    fns = {k: onnx_embedder(p) for k, p in paths.items()}
    got: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for k, fn in fns.items():
            got[k].append(summarise(measure(fn, batches, plan), batch)["throughput_ips"])
    return {
        "batch": batch,
        "rounds": rounds,
        "images_per_s": {k: float(np.median(v)) for k, v in got.items()},
        "per_round": got,
    }


def make_mixed(
    fp32_path: Path,
    dst: Path,
    pixels: np.ndarray,
    check: Check,
    max_drop: float,
    *,
    target: str,
    method: str,
    scan_data: Callable[[], gates.GateSet],
    timing_pixels: Callable[[], np.ndarray],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """fm-export's step: (int8 summary with its `mixed_precision` record, gate figures), `dst` written."""
    from fashion_match.export import sensitivity
    from fashion_match.progress import say, stage

    def ranking() -> tuple[list[Unit], dict[str, dict[str, Any]]]:
        with stage("int8: sensitivity scan of the backbone units"):
            found = sensitivity.scan(
                fp32_path, pixels, scan_data(), target=target, method=method, progress=say, ranges=q.ranges
            )  # the ranges calibrated below: the scan ranks the very units this search keeps
        return found.ranking(), {r["unit"]: {**r, "scan_data": found.data} for r in found.rows}

    with stage("int8: calibrating"):
        q = Int8Quantiser(fp32_path, pixels, target=target, method=method)
    with q:
        record, figures = keep_until_within(q, dst, check, max_drop, ranking, say)
        summary = record.pop("summary")
        if record["kept"]:  # what the kept units cost: both files timed in the same run
            all_int8 = make_temp(dst.parent, "all-int8.onnx")
            try:
                q.quantise(all_int8)
                with stage("int8: timing all-INT8 against the mixed file (batch 32, alternating)"):
                    record["speed"] = alternate_speed({"all_int8": all_int8, "mixed": dst}, timing_pixels())
            finally:
                all_int8.unlink(missing_ok=True)
    summary["mixed_precision"] = record
    return summary, figures
