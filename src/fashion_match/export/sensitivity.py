"""Which backbone units cost INT8 its accuracy: a scan, one unit at a time, in both directions.

Activation ranges are computed once (`onnx2int8.Int8Quantiser`); then for every unit
(`export.quant_units`: a block, or a layer):
- alone: only this unit INT8, the rest FP32 - the damage it does by itself;
- all but: everything INT8 except this unit - what keeping it in FP32 wins back.
Each is measured on the scan set (a small accuracy-gate set: category queries and gallery, held-out
consumer/shop pairs with distractors) as the embedding drift (1 - mean cosine to FP32) and the
change of category and instance Recall@1, next to the unit's share of ONNX Runtime's CPU time in
FP32 and in INT8 (its profiler, `export.ort_profile`). Ranked by drift alone: the least noisy
figure (a Recall@1 change of a few tenths is within one standard error on a few hundred queries).

Only the item embedding is scanned (the graph is cut at its `embedding` output): the tag and space
outputs are judged by the export gate.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.export import gate as gates
from fashion_match.export.onnx2int8 import Int8Quantiser
from fashion_match.export.quant_units import Unit, units

SCAN_SET = (300, 600, 400, 1000)  # category queries, gallery; held-out pairs; instance gallery
EMBEDDING = "embedding"


def embedding_graph(src: str | Path, dst: str | Path) -> None:
    """`src` cut down to what its `embedding` output needs (no tag or space branch)."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(str(src))
    names = [o.name for o in model.graph.output]
    if EMBEDDING not in names or len(names) == 1:
        onnx.save(model, str(dst))
        return
    cut = Extractor(model).extract_model([i.name for i in model.graph.input], [EMBEDDING])
    cut.opset_import.extend([o for o in model.opset_import if o.domain not in {x.domain for x in cut.opset_import}])
    onnx.save(cut, str(dst))


def evaluate(path: Path, gs: gates.GateSet, ref: gates.GateEmbeddings) -> dict[str, float]:
    """Drift and the Recall@1 figures of the ONNX file `path` on the scan set."""
    got = gates.embed_gate_set(path, gs)
    cos = gates.compare(ref, got)
    out = {"drift": round(1.0 - cos["mean_cosine"], 6)}
    for k, v in gates.hits(got, gs).items():
        out[k] = float(v.mean())
    return out


@dataclass
class Scan:
    granularity: str
    data: str
    fp32: dict[str, float]
    int8: dict[str, float]
    units: list[Unit]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def ranking(self) -> list[Unit]:
        """Units, most damaging first (drift alone; ties: what keeping them wins back)."""
        by_name = {u.name: u for u in self.units}
        order = sorted(self.rows, key=lambda r: (-r["alone"]["drift"], r["all_but"]["drift"]))
        return [by_name[r["unit"]] for r in order]

    def to_dict(self) -> dict[str, Any]:
        return {
            "granularity": self.granularity,
            "data": self.data,
            "fp32": self.fp32,
            "int8": self.int8,
            "ranking": [u.name for u in self.ranking()],
            "rows": self.rows,
        }


def _drops(base: dict[str, float], got: dict[str, float]) -> dict[str, float]:
    return {f"{k}_drop_pts": round(100 * (base[k] - got[k]), 4) for k in base if k != "drift"}


def scan(
    fp32_path: Path,
    calib_pixels: np.ndarray,
    gs: gates.GateSet,
    *,
    granularity: str = "block",
    target: str = "onnxruntime",
    method: str = "percentile",
    progress: Callable[[str], None] = lambda s: None,
    profile_pixels: np.ndarray | None = None,
    quantiser_hook: Callable[[Int8Quantiser], None] | None = None,
    ranges: dict[str, tuple[float, float]] | None = None,
) -> Scan:
    """The sensitivity scan of FP32 `fp32_path`; `quantiser_hook` may alter the ranges (tests plant a bad one);
    `ranges`: activation ranges already computed on `calib_pixels` (the export's own), else computed here."""
    from fashion_match.export.ort_profile import book, node_times, shares

    with tempfile.TemporaryDirectory(prefix="fm-sensitivity-") as d:
        cut = Path(d) / "embedding.onnx"
        embedding_graph(fp32_path, cut)
        ref = gates.embed_gate_set(cut, gs)
        fp32 = {k: float(v.mean()) for k, v in gates.hits(ref, gs).items()}
        with Int8Quantiser(cut, calib_pixels, target=target, method=method, ranges=ranges) as q:
            if quantiser_hook is not None:
                quantiser_hook(q)
            us = units(q.graph, q.backbone, granularity)
            full = Path(d) / "int8.onnx"
            q.quantise(full)
            int8 = evaluate(full, gs, ref)
            result = Scan(granularity, gs.description, fp32, int8, us)
            px = profile_pixels if profile_pixels is not None else gs.q_pixels[:32]
            groups = {u.name: u.nodes for u in us}
            t32 = shares(book(node_times(cut, px), q.graph), groups)
            t8 = shares(book(node_times(full, px), q.graph), groups)
            cand = Path(d) / "candidate.onnx"
            for i, u in enumerate(us):
                progress(f"sensitivity {i + 1}/{len(us)}: {u.name}")
                q.quantise(cand, only=u.nodes)
                alone = evaluate(cand, gs, ref)
                q.quantise(cand, keep_fp32=u.nodes)
                without = evaluate(cand, gs, ref)
                result.rows.append(
                    {
                        "unit": u.name,
                        "ops": u.op_summary,
                        "nodes": len(u.nodes),
                        "alone": {"drift": alone["drift"], **_drops(fp32, alone)},
                        "all_but": {
                            "drift": without["drift"],
                            **{k.replace("_drop", "_gain"): -v for k, v in _drops(int8, without).items()},
                        },
                        "time_share_fp32": round(t32[u.name], 4),
                        "time_share_int8": round(t8[u.name], 4),
                    }
                )
    return result


def scan_set(
    spec: Any, data: str = gates.DEFAULT_RETRIEVAL, sizes: tuple[int, int, int, int] = SCAN_SET
) -> gates.GateSet:
    return gates.build_gate_set(spec, data, sizes[0], sizes[1], gates.DEFAULT_VERIFICATION, sizes[2], sizes[3])
