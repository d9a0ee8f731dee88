"""The accuracy gate's attribute part: a model with tag heads or attribute spaces keeps them.

The embedding gate (export.gate) judges the item embedding only. For a model whose graph also
returns `tag_probs` or `attr_embeddings`, the candidate must keep, on held-out images of the data
the heads were trained on (recorded in the manifest), every per-attribute space mAP (ASEN
protocol), every tag mAP and every single-valued attribute's accuracy within the same allowance in
points as the embedding gate. The figures are the ones fm-bench reports (bench.accuracy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fashion_match.data.evalset import EvalSet
from fashion_match.errors import ExportError

Outputs = Callable[[np.ndarray], dict[str, np.ndarray]]  # uint8 pixels -> every named output


def onnx_outputs(path: Any) -> Outputs:
    """Every named output of an ONNX file, run on the CPU (as the embedding gate runs it)."""
    from fashion_match.export.onnx_cpu import cpu_session

    sess = cpu_session(path)
    names = [o.name for o in sess.get_outputs()]
    feed = sess.get_inputs()[0].name
    return lambda pixels: dict(zip(names, sess.run(names, {feed: pixels}), strict=True))


@dataclass
class AttrGate:
    es: EvalSet
    manifest: Any
    ref: dict[str, float]

    @property
    def description(self) -> str:
        return f"{self.es.name}: {len(self.es.q_keys)} queries x {len(self.es.g_keys)} gallery (attribute labels)"

    def figures(self, outputs: Outputs, batch: int = 32) -> dict[str, float]:
        from fashion_match.bench.accuracy import all_outputs, attribute_figures

        q, g = all_outputs(outputs, self.es.q_pixels, batch), all_outputs(outputs, self.es.g_pixels, batch)
        for name, arr in (q | g).items():
            if not np.all(np.isfinite(arr)):
                raise ExportError(f"gate: the candidate produced NaN or Inf in {name}")
        return attribute_figures(q, g, self.es, self.manifest)


def build_attr_gate(manifest: Any, fp32_outputs: Outputs, data: str, queries: int = 500) -> AttrGate:
    """Held-out attribute images of `data` (its query/gallery protocol, `queries` of each side)
    and the FP32 figures on them."""
    from fashion_match.data.evalset import load_eval_set

    es = load_eval_set(data, manifest.preprocess, (queries, queries), (queries, queries))
    if es.skipped:
        raise ExportError(f"gate: unreadable attribute gate image {es.skipped[0]}")
    if not es.q_attrs:
        raise ExportError(f"gate: {data} has no attribute labels to judge the model's tag heads or spaces on")
    gate = AttrGate(es, manifest, {})
    gate.ref = gate.figures(fp32_outputs)
    if not gate.ref:
        raise ExportError(f"gate: none of the model's attributes is labelled in {data}")
    return gate


def judge(gate: AttrGate, got: dict[str, float], allowed: float) -> tuple[dict[str, Any], list[str]]:
    """(figures for the manifest, failure lines): each attribute figure against FP32's."""
    drops = {k: round(100 * (gate.ref[k] - got.get(k, float("nan"))), 4) for k in gate.ref}
    failures = [
        f"{k} {gate.ref[k]:.4f} -> {got.get(k, float('nan')):.4f} ({d:.2f} points lost, {allowed} allowed)"
        for k, d in drops.items()
        if not d <= allowed + 1e-9  # NaN (a figure gone) fails too
    ]
    figures = {
        "data": gate.description,
        "fp32": gate.ref,
        "candidate": got,
        "drop_pts": drops,
        "allowed_drop_pts": allowed,
        "resolution_pts": round(100.0 / max(1, len(gate.es.q_keys)), 4),
        "passed": not failures,
    }
    return figures, failures
