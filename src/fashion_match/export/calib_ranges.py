"""Activation ranges for INT8 calibration: min-max, percentile and entropy (KL), computed here.

ONNX Runtime's own entropy calibrator cannot be configured through `quantize_static` and,
with its fixed defaults (128 histogram bins for 128 quantised bins), it has exactly one
candidate threshold - the full range - so "entropy" silently equals min-max; its percentile
calibrator fails on tensors whose range is a few float32 ulps wide (ReLU6 outputs saturated
at 6). So the ranges are computed here, in two passes over the calibration images (min/max,
then 2048-bin histograms on those ranges), and handed to the quantiser as its calibration
cache.

- minmax: the observed range.
- percentile: the central P% of values (P=99.99 by default: clips the rarest outliers).
- entropy: TensorRT's rule - the clipping threshold on |x| whose 128-level quantised
  histogram diverges least (Kullback-Leibler) from the observed one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

BINS = 2048
LEVELS = 128  # quantised bins for the KL search: 7 bits of magnitude plus the sign


def _augmented(model: Any) -> tuple[Any, list[str]]:
    """A copy of `model` that also outputs every float intermediate tensor."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    floats = {v.name for v in g.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    floats |= {o.name for o in g.output if o.type.tensor_type.elem_type == TensorProto.FLOAT}
    outputs = [o for n in g.node for o in n.output if o in floats]
    have = {o.name for o in g.output}
    for name in outputs:
        if name not in have:
            g.output.append(onnx.helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return inferred, outputs


def _batches(session: Any, input_name: str, pixels: np.ndarray, batch: int, names: list[str]) -> Iterator[dict]:
    for s in range(0, len(pixels), batch):
        yield dict(zip(names, session.run(names, {input_name: pixels[s : s + batch]}), strict=True))


def _kl_threshold(hist: np.ndarray, edges: np.ndarray, step: int = 8) -> float:
    """TensorRT's entropy calibration on a histogram of |x| starting at 0."""
    hist = hist.astype(np.float64)
    best, best_i = np.inf, len(hist)
    for i in range(LEVELS, len(hist) + 1, step):
        ref = hist[:i]
        p = ref.copy()
        p[-1] += hist[i:].sum()  # clipped outliers land in the last bin
        if p.sum() == 0:
            continue
        # quantise the first i bins into LEVELS groups; spread each group's mass over its non-empty bins
        bounds = np.linspace(0, i, LEVELS + 1).astype(np.int64)
        nonzero = ref > 0
        sums = np.add.reduceat(ref, bounds[:-1])
        counts = np.add.reduceat(nonzero.astype(np.float64), bounds[:-1])
        q = np.repeat(sums / np.maximum(counts, 1), np.diff(bounds)) * nonzero
        mask = p > 0
        if (q[mask] == 0).any():
            continue
        pn, qn = p[mask] / p.sum(), q[mask] / q.sum()
        kl = float(np.sum(pn * np.log(pn / qn)))
        if kl < best:
            best, best_i = kl, i
    return float(edges[best_i])


def compute_ranges(
    model_path: str | Path, pixels: np.ndarray, method: str, percentile: float = 99.99, batch: int = 16
) -> dict[str, tuple[float, float]]:
    """tensor name -> (low, high) over the calibration `pixels` by `method`."""
    import onnx
    import onnxruntime as ort

    model, names = _augmented(onnx.load(str(model_path)))
    with tempfile.TemporaryDirectory(prefix="fm-calib-") as d:
        path = Path(d) / "augmented.onnx"
        onnx.save(model, str(path))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    for out in _batches(sess, input_name, pixels, batch, names):
        for n, a in out.items():
            if a.size:
                lo[n], hi[n] = min(lo[n], float(a.min())), max(hi[n], float(a.max()))
    ranges = {n: (lo[n], hi[n]) for n in names if np.isfinite(lo[n])}
    if method == "minmax":
        return ranges
    hists: dict[str, np.ndarray] = {}
    edges: dict[str, np.ndarray] = {}
    for n, (a, b) in ranges.items():
        if method == "percentile":
            edges[n] = np.linspace(a, b, BINS + 1) if b > a else np.array([a, b])
        else:
            edges[n] = np.linspace(0.0, max(abs(a), abs(b)), BINS + 1)
        hists[n] = np.zeros(len(edges[n]) - 1, np.int64)
    for out in _batches(sess, input_name, pixels, batch, names):
        for n, a in out.items():
            if n not in hists or len(edges[n]) < 3 or edges[n][-1] <= edges[n][0]:
                continue
            x = a.ravel() if method == "percentile" else np.abs(a.ravel())
            idx = np.clip(((x - edges[n][0]) / (edges[n][-1] - edges[n][0]) * BINS).astype(np.int64), 0, BINS - 1)
            hists[n] += np.bincount(idx, minlength=BINS)
    out_ranges: dict[str, tuple[float, float]] = {}
    for n, (a, b) in ranges.items():
        h, e = hists[n], edges[n]
        if len(e) < 3 or e[-1] <= e[0] or h.sum() == 0:
            out_ranges[n] = (a, b)  # constant tensor: nothing to clip
        elif method == "percentile":
            c = np.cumsum(h) / h.sum()
            tail = (100.0 - percentile) / 100.0
            low = float(e[int(np.searchsorted(c, tail))])
            high = float(e[min(int(np.searchsorted(c, 1.0 - tail)) + 1, BINS)])
            out_ranges[n] = (max(a, low), min(b, high))
        else:
            t = _kl_threshold(h, e)
            out_ranges[n] = (max(a, -t), min(b, t))
    return out_ranges


def write_cache(ranges: dict[str, tuple[float, float]], method: Any, path: Path) -> None:
    """ONNX Runtime's calibration cache format (read back by `quantize_static`)."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    data = {
        n: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
        for n, (lo, hi) in ranges.items()
    }
    save_tensors_data(TensorsData(method, data), path)
