"""Accuracy of one backend x precision on a dataset protocol subsample (one metrics module)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fashion_match.data.evalset import EvalSet
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
