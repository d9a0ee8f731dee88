"""Accuracy of one backend x precision on a dataset protocol subsample (one metrics module)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fashion_match.data.evalset import EvalSet
from fashion_match.errors import BadDataset
from fashion_match.metrics import retrieval_report, roc_auc


def pair_scores(q: np.ndarray, qk: np.ndarray, g: np.ndarray, gk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sims = q @ g.T
    same = qk[:, None] == gk[None, :]
    return sims[same], sims[~same]


def evaluate(q: np.ndarray, g: np.ndarray, es: EvalSet, threshold: float) -> dict[str, Any]:
    rep = retrieval_report(q, es.q_keys, g, es.g_keys, ks=(1, 10))
    pos, neg = pair_scores(q, es.q_keys, g, es.g_keys)
    tpr = float((pos >= threshold).mean()) if len(pos) else float("nan")
    tnr = float((neg < threshold).mean()) if len(neg) else float("nan")
    return {
        "recall_at_1": rep["recall_at_1"],
        "recall_at_10": rep["recall_at_10"],
        "map_at_r": rep["map_at_r"],
        "pair_auc": roc_auc(pos, neg) if len(pos) and len(neg) else float("nan"),
        "pair_accuracy": (tpr + tnr) / 2,  # balanced: negatives outnumber positives
        "pairs": int(len(pos) + len(neg)),
    }


def roc_points(pos: np.ndarray, neg: np.ndarray, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at `n` thresholds spanning the scores."""
    rng = np.random.default_rng(0)
    if len(neg) > 100_000:  # a curve needs no more; the AUC in the table uses every pair
        neg = rng.choice(neg, 100_000, replace=False)
    lo, hi = min(pos.min(), neg.min()), max(pos.max(), neg.max())
    t = np.linspace(hi, lo, n)
    return (neg[None, :] >= t[:, None]).mean(1), (pos[None, :] >= t[:, None]).mean(1)


def full_protocol(matcher: Any, spec: str) -> dict[str, Any]:
    """Retrieval report of `matcher` on the whole protocol of dataset `spec` (every query, every
    gallery image), as `benchmarks/eval_model.py` records it."""
    import time

    from fashion_match.data.spec import load_dataset

    ds = load_dataset(spec)
    p = ds.protocol
    t = time.perf_counter()

    def embed(rows: list[int]) -> np.ndarray:
        e = matcher.embed([ds.records[i].source for i in rows])
        if e.bad:
            raise BadDataset(f"{spec}: unreadable evaluation image {e.bad[0]}")
        return np.asarray(e.vectors)

    q, g = embed(p.queries), embed(p.gallery)
    key = p.match_on
    qk = np.array([getattr(ds.records[i], key) for i in p.queries], dtype=object)
    gk = np.array([getattr(ds.records[i], key) for i in p.gallery], dtype=object)
    rep = retrieval_report(q, qk, g, gk)
    rep.update({"protocol": p.description, "seconds": round(time.perf_counter() - t, 1)})
    return rep


def all_outputs(outputs: Any, pixels: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
    """Every named output of a backend for `pixels`, `batch` images per call."""
    parts = [outputs(pixels[s : s + batch]) for s in range(0, len(pixels), batch)]
    return {k: np.concatenate([p[k] for p in parts]).astype(np.float32) for k in parts[0]}


def attribute_figures(
    q: dict[str, np.ndarray], g: dict[str, np.ndarray], es: EvalSet, manifest: Any
) -> dict[str, float]:
    """Per attribute of a model with spaces or tags, on an eval set with attribute labels: space mAP
    (ASEN protocol: queries rank the gallery, relevant = same value), tag mAP (multi-label) and
    accuracy (single-valued), over the query and gallery images, from their outputs `q` and `g`."""
    from fashion_match.data.attributes import UNKNOWN
    from fashion_match.metrics import average_precision, mean_average_precision
    from fashion_match.runtime.tagging import (
        POSTERIORS_OUTPUT,
        SPACES_OUTPUT,
        TAGS_OUTPUT,
        query_form,
        space_output,
        tag_blocks,
    )

    if not es.q_attrs:
        return {}
    out: dict[str, float] = {}
    if SPACES_OUTPUT in q:
        searched = space_output(manifest)[0]  # what fm-search --attribute ranks by
        for a, spec in enumerate(manifest.data["spaces"]["attributes"]):
            name = spec["name"]
            if name not in es.q_attrs:
                continue
            qk, gk = es.q_attrs[name], es.g_attrs[name]
            qm, gm = qk != UNKNOWN, gk != UNKNOWN
            qv = q[searched][qm, a]
            sims = (query_form(qv) if searched == POSTERIORS_OUTPUT else qv) @ g[searched][gm, a].T
            out[f"space_map/{name}"] = round(mean_average_precision(sims, qk[qm], gk[gm]), 4)
    if TAGS_OUTPUT in q:
        probs = np.concatenate([q[TAGS_OUTPUT], g[TAGS_OUTPUT]])
        for b in tag_blocks(manifest):
            if b.name not in es.q_attrs:
                continue
            y = np.concatenate([es.q_attrs[b.name], es.g_attrs[b.name]])
            p = probs[:, b.offset : b.offset + len(b.values)]
            if b.kind == "single":
                known = y != UNKNOWN
                out[f"tag_accuracy/{b.name}"] = round(float((p[known].argmax(1) == y[known]).mean()), 4)
            else:
                aps = [average_precision(p[y[:, j] >= 0, j], y[y[:, j] >= 0, j] == 1) for j in range(len(b.values))]
                aps = [x for x in aps if not np.isnan(x)]
                out[f"tag_map/{b.name}"] = round(float(np.mean(aps)), 4) if aps else float("nan")
    return out
