"""Honest latency: warm-up, many runs, rotated inputs, a synchronised device, percentiles.

Every backend's `embed` returns host memory, so the device has finished (and copied back)
before the clock is read. Inputs rotate through several distinct batches so no cache or
branch predictor sees the same bytes twice in a row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TimingPlan:
    warmup: int = 3
    min_runs: int = 10
    max_runs: int = 200
    min_seconds: float = 2.0  # keep running until both min_runs and min_seconds are reached


QUICK = TimingPlan(warmup=2, min_runs=5, max_runs=50, min_seconds=0.3)
FULL = TimingPlan()


def rotated_batches(pool: np.ndarray, batch: int, count: int = 4) -> list[np.ndarray]:
    """`count` distinct batches of `batch` images cut from `pool` (wrapping around)."""
    n = len(pool)
    return [np.ascontiguousarray(pool[np.arange(i * batch, (i + 1) * batch) % n]) for i in range(count)]


def measure(fn: Callable[[Any], object], batches: Sequence[Any], plan: TimingPlan) -> np.ndarray:
    """Seconds per call over the timed runs (after `plan.warmup` untimed ones)."""
    for i in range(plan.warmup):
        fn(batches[i % len(batches)])
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < plan.max_runs and (len(times) < plan.min_runs or time.perf_counter() - start < plan.min_seconds):
        x = batches[len(times) % len(batches)]
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return np.asarray(times)


def summarise(seconds: np.ndarray, batch: int) -> dict[str, float]:
    ms = seconds * 1000.0
    p50 = round(float(np.percentile(ms, 50)), 4)  # the throughput below is derived from this very value
    return {
        "latency_ms_p50": p50,
        "latency_ms_p99": round(float(np.percentile(ms, 99)), 4),
        "throughput_ips": round(batch / (max(p50, 1e-4) / 1000.0), 1),
        "runs": int(len(ms)),
    }
