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
