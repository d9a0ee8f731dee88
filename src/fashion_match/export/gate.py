"""The accuracy gate every reduced-precision artifact passes before it is kept.

On held-out real images the candidate is compared with the FP32 reference (`model.onnx`):
- embedding agreement: min and mean cosine over all gate images;
- retrieval: Recall@1 on a query/gallery subsample of a dataset protocol (default:
  Fashion-MNIST test queries against train gallery images, category match);
- verification: balanced accuracy at the manifest's threshold on held-out consumer/shop pairs
  (default: the last items of the fmnist-c2s test split, as the threshold calibration uses);
- instance retrieval: Recall@1 of those consumer photos against their shop photos plus further
  shop photos of other items (the item-level question users ask, where INT8 loses most).
Each figure is stored with its standard error (and the drop with its paired standard error:
one query is 0.1 point at 1,000 queries, but a drop of a few tenths is within the noise).
The export fails when any Recall@1 or the verification accuracy drops by more than the precision's
allowance (`MAX_DROP_PTS`, in percentage points), or when the mean cosine to FP32 falls below
`MIN_MEAN_COSINE`, unless the user accepts it with `--allow-accuracy-drop` (which sets the
allowance and waives the cosine floor; both are recorded). The floor matters on small or
weak gate sets where Recall@1 barely moves: there a constant-image calibration left Recall@1
within 0.5 points while the mean cosine fell to 0.89.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.data.images import load_batch
from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.data.records import spaced
from fashion_match.errors import ExportError
from fashion_match.export.onnx_cpu import Embed, onnx_embedder
from fashion_match.formats import PRECISION_TABLE
from fashion_match.formats import precision as precision_row
from fashion_match.runtime.backend import embed_in_batches

log = logging.getLogger(__name__)

# per reduced precision, from the one table (shipped default model: mean cosine fp16 0.99999, int8 0.994)
MAX_DROP_PTS = {p.name: p.max_drop_pts for p in PRECISION_TABLE if p.max_drop_pts is not None}  # percentage points
MIN_MEAN_COSINE = {p.name: p.min_mean_cosine for p in PRECISION_TABLE if p.min_mean_cosine is not None}
DEFAULT_RETRIEVAL = "fashion-mnist"
DEFAULT_VERIFICATION = "fmnist-c2s"


@dataclass
class GateSet:
    """Decoded gate images (uint8), kept in memory so every candidate sees identical pixels."""

    description: str
    q_pixels: np.ndarray
    q_keys: np.ndarray
    g_pixels: np.ndarray
    g_keys: np.ndarray
    pair_q: np.ndarray | None = None  # verification: consumer photos
    pair_g: np.ndarray | None = None  # ... and the shop photos; positives on the diagonal
    distractors: np.ndarray | None = None  # instance retrieval: shop photos of other items, after pair_g

    @property
    def images(self) -> int:
        arrays = (self.q_pixels, self.g_pixels, self.pair_q, self.pair_g, self.distractors)
        return sum(len(a) for a in arrays if a is not None)


def _decode(ds: Any, rows: list[int], spec: PreprocessSpec) -> np.ndarray:
    batch = load_batch([ds.records[i].source for i in rows], spec)
    if batch.bad:
        raise ExportError(f"gate: unreadable gate image {batch.bad[0]}")
    return batch.pixels


def build_gate_set(
    spec: PreprocessSpec,
    retrieval: str = DEFAULT_RETRIEVAL,
    queries: int = 1000,
    gallery: int = 5000,
    verification: str | None = DEFAULT_VERIFICATION,
    pairs: int = 1000,
    instance_gallery: int = 3000,
) -> GateSet:
    from fashion_match.data.evalset import load_eval_set
    from fashion_match.data.spec import load_dataset
    from fashion_match.export.threshold import held_out_pairs

    es = load_eval_set(retrieval, spec, (queries, gallery), (queries, gallery))
    if es.skipped:
        raise ExportError(f"gate: unreadable gate image {es.skipped[0]}")
    if not len(es.q_keys) or not len(es.g_keys):
        raise ExportError(f"gate: {retrieval} has no query/gallery protocol")
    gs = GateSet(
        description=f"{retrieval}: {len(es.q_keys)} queries x {len(es.g_keys)} gallery ({es.match_on} match)",
        q_pixels=es.q_pixels,
        q_keys=es.q_keys,
        g_pixels=es.g_pixels,
        g_keys=es.g_keys,
    )
    if verification:
        vd = load_dataset(verification)
        pq, pg = held_out_pairs(vd, pairs)
        vkey = vd.protocol.match_on
        by_key = {getattr(vd.records[g], vkey): g for g in pg}
        pq = [q for q in pq if getattr(vd.records[q], vkey) in by_key]
        pg = [by_key[getattr(vd.records[q], vkey)] for q in pq]  # one shop photo per consumer photo
        gs.pair_q, gs.pair_g = _decode(vd, pq, spec), _decode(vd, pg, spec)
        gs.description += f"; {verification}: {len(pq)} held-out consumer/shop pairs"
        used = set(pg)
        others = [g for g in vd.protocol.gallery if g not in used and getattr(vd.records[g], vkey) not in by_key]
        extra = spaced(others, max(0, instance_gallery - len(pg)))
        if extra:
            gs.distractors = _decode(vd, extra, spec)
        gs.description += f" (instance retrieval against {len(pg) + len(extra)} shop photos)"
    return gs


@dataclass
class GateEmbeddings:
    q: np.ndarray
    g: np.ndarray
    pq: np.ndarray | None
    pg: np.ndarray | None
    distractors: np.ndarray | None = None


def embed_gate_set(path: str | Path, gs: GateSet, embed: Embed | None = None, batch: int = 32) -> GateEmbeddings:
    """Gate embeddings from an ONNX file (ONNX Runtime CPU) or, with `embed`, from any backend."""
    fn = embed or onnx_embedder(path)

    def run(pixels: np.ndarray | None) -> np.ndarray | None:
        return None if pixels is None else embed_in_batches(fn, pixels, batch)

    return GateEmbeddings(
        embed_in_batches(fn, gs.q_pixels, batch),
        embed_in_batches(fn, gs.g_pixels, batch),
        run(gs.pair_q),
        run(gs.pair_g),
        run(gs.distractors),
    )


def _verification_accuracy(pq: np.ndarray, pg: np.ndarray, threshold: float) -> float:
    sims = pq @ pg.T
    pos = np.eye(len(pq), dtype=bool)
    tpr = float((sims[pos] >= threshold).mean())
    tnr = float((sims[~pos] < threshold).mean()) if len(pq) > 1 else 1.0
    return (tpr + tnr) / 2


def hits(e: GateEmbeddings, gs: GateSet) -> dict[str, np.ndarray]:
    """Per query, whether its top-1 is right: category Recall@1, and instance Recall@1 when the set has pairs."""
    top = np.argmax(e.q @ e.g.T, axis=1)
    out = {"recall_at_1": gs.g_keys[top] == gs.q_keys}
    if e.pq is not None and e.pg is not None:
        gallery = e.pg if e.distractors is None else np.concatenate([e.pg, e.distractors])
        out["instance_recall_at_1"] = np.argmax(e.pq @ gallery.T, axis=1) == np.arange(len(e.pq))
    return out


def score(e: GateEmbeddings, gs: GateSet, threshold: float) -> dict[str, float]:
    out = {k: float(v.mean()) for k, v in hits(e, gs).items()}
    if e.pq is not None and e.pg is not None:
        out["verification_accuracy"] = _verification_accuracy(e.pq, e.pg, threshold)
    return out


def standard_errors_pts(base: dict[str, np.ndarray], new: dict[str, np.ndarray]) -> dict[str, float]:
    """Standard errors, in points, of each Recall@1 and of its drop (paired: from the queries that flipped)."""
    out: dict[str, float] = {}
    for k, a in base.items():
        b, n = new[k], len(a)
        p = float(b.mean())
        out[k] = round(100 * float(np.sqrt(p * (1 - p) / max(1, n))), 4)
        lost, gained = float(np.sum(a & ~b)), float(np.sum(~a & b))
        var = lost + gained - (lost - gained) ** 2 / max(1, n)
        out[f"{k}_drop"] = round(100 * float(np.sqrt(max(var, 0.0))) / max(1, n), 4)
    return out


def compare(ref: GateEmbeddings, got: GateEmbeddings) -> dict[str, float]:
    def rows(e: GateEmbeddings) -> np.ndarray:
        return np.concatenate([a for a in (e.q, e.g, e.pq, e.pg, e.distractors) if a is not None])

    a, b = rows(ref), rows(got)
    if not np.all(np.isfinite(b)):
        raise ExportError("gate: the candidate produced NaN or Inf embeddings")
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cos = np.sum(a * b, axis=1)
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def run_gate(
    candidate: str | Path,
    precision: str,
    gs: GateSet,
    ref: GateEmbeddings,
    threshold: float,
    allow_drop_pts: float | None = None,
    embed: Embed | None = None,
    name: str | None = None,
    batch: int = 32,
    mode: str = "full",
) -> dict[str, Any]:
    """Gate figures for `candidate`; `GateFailed` (an ExportError, with the figures) when it fails.

    mode "quick" (a small gate set, for trying things) widens the default allowance to what two
    queries or pairs are worth, since a single flip would otherwise decide it; the figures say so."""
    allowed = MAX_DROP_PTS[precision] if allow_drop_pts is None else float(allow_drop_pts)
    allowance = "default" if allow_drop_pts is None else "--allow-accuracy-drop"
    if mode == "quick" and allow_drop_pts is None:
        allowed = max(allowed, round(2 * max(resolution_pts(gs).values()), 4))
        allowance = "quick gate: the default, or two queries' (pairs') worth when that is more"
    got = embed_gate_set(candidate, gs, embed, batch)
    base, new = score(ref, gs, threshold), score(got, gs, threshold)
    figures: dict[str, Any] = {
        "data": gs.description,
        "images": gs.images,
        **compare(ref, got),
        "recall_at_1_fp32": base["recall_at_1"],
        "recall_at_1": new["recall_at_1"],
        "recall_at_1_drop_pts": round(100 * (base["recall_at_1"] - new["recall_at_1"]), 4),
        "allowed_drop_pts": allowed,
        "allowance": allowance,
        "mode": mode,
        "resolution_pts": {k: round(v, 4) for k, v in resolution_pts(gs).items()},
        "standard_error_pts": standard_errors_pts(hits(ref, gs), hits(got, gs)),
    }
    if "instance_recall_at_1" in base:
        figures["instance_recall_at_1_fp32"] = base["instance_recall_at_1"]
        figures["instance_recall_at_1"] = new["instance_recall_at_1"]
        figures["instance_recall_at_1_drop_pts"] = round(
            100 * (base["instance_recall_at_1"] - new["instance_recall_at_1"]), 4
        )
    if "verification_accuracy" in base:
        figures["verification_accuracy_fp32"] = base["verification_accuracy"]
        figures["verification_accuracy"] = new["verification_accuracy"]
        figures["verification_accuracy_drop_pts"] = round(
            100 * (base["verification_accuracy"] - new["verification_accuracy"]), 4
        )
    floor = MIN_MEAN_COSINE[precision] if allow_drop_pts is None else None
    figures["min_mean_cosine"] = floor
    failures = []
    if figures["recall_at_1_drop_pts"] > allowed + 1e-9:
        failures.append(
            f"Recall@1 {base['recall_at_1']:.4f} -> {new['recall_at_1']:.4f} "
            f"({figures['recall_at_1_drop_pts']:.2f} points lost, {allowed} allowed for {precision})"
        )
    if figures.get("instance_recall_at_1_drop_pts", 0.0) > allowed + 1e-9:
        failures.append(
            f"instance Recall@1 {base['instance_recall_at_1']:.4f} -> {new['instance_recall_at_1']:.4f} "
            f"({figures['instance_recall_at_1_drop_pts']:.2f} points lost, {allowed} allowed for {precision})"
        )
    if figures.get("verification_accuracy_drop_pts", 0.0) > allowed + 1e-9:
        failures.append(
            f"verification accuracy {base['verification_accuracy']:.4f} -> {new['verification_accuracy']:.4f} "
            f"({figures['verification_accuracy_drop_pts']:.2f} points lost, {allowed} allowed for {precision})"
        )
    if floor is not None and figures["mean_cosine"] < floor:
        failures.append(f"mean cosine to FP32 {figures['mean_cosine']:.4f} < {floor} for {precision}")
    figures["passed"] = not failures
    if failures:
        worst = max(allowed, largest_drop_pts(figures))
        raise GateFailed(
            f"{name or Path(candidate).name}: accuracy gate failed on {gs.description}: {'; '.join(failures)}; "
            f"min cosine {figures['min_cosine']:.4f}. To go on: {precision_row(precision).remedy} "
            f"{worst + 0.01:.2f}",
            figures,
        )
    return figures


DROPS = ("recall_at_1_drop_pts", "instance_recall_at_1_drop_pts", "verification_accuracy_drop_pts")


def largest_drop_pts(figures: dict[str, Any]) -> float:
    """The gated figure that dropped most, in points (what an allowance is compared with)."""
    return max(float(figures.get(k, 0.0)) for k in DROPS)


def resolution_pts(gs: GateSet) -> dict[str, float]:
    """Points of each gated figure that one query (or one pair) is worth: the gate cannot tell
    drops smaller than this from none."""
    out = {"recall_at_1": 100.0 / max(1, len(gs.q_pixels))}
    if gs.pair_q is not None:  # balanced accuracy: one positive pair is half of 1/n
        out["instance_recall_at_1"] = 100.0 / max(1, len(gs.pair_q))
        out["verification_accuracy"] = 50.0 / max(1, len(gs.pair_q))
    return out


def resolution_warning(gs: GateSet, precision: str, allowed: float) -> str | None:
    """Why the gate for `precision` cannot pass unless nothing at all changes, or None."""
    coarse = {k: v for k, v in resolution_pts(gs).items() if v > allowed + 1e-9}
    if not coarse or allowed <= 0:
        return None
    said = ", ".join(f"one {'pair' if k[0] == 'v' else 'query'} is {v:.2f} points of {k}" for k, v in coarse.items())
    return (
        f"the {precision} gate is coarser than its allowance: {said}, but {allowed} points are allowed, "
        "so any change fails it; gate on more queries (--gate-queries, --gate-pairs) or accept a drop with "
        "--allow-accuracy-drop"
    )


class GateFailed(ExportError):
    def __init__(self, message: str, figures: dict[str, Any]) -> None:
        super().__init__(message)
        self.figures = figures
