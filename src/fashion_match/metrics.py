"""Retrieval and verification metrics, numpy only: shared by export, trainer and benchmark."""

from __future__ import annotations

from typing import Any

import numpy as np


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = np.asarray(pos, np.float64).ravel(), np.asarray(neg, np.float64).ravel()
    if not len(pos) or not len(neg):
        return float("nan")
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # average ranks over ties (1-based)
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def calibrate_threshold(pos: np.ndarray, neg: np.ndarray) -> dict[str, Any]:
    """The match threshold that maximises balanced accuracy, (TPR + TNR) / 2.

    "Match" means similarity >= threshold. The threshold sits halfway between the best cut's
    lowest accepted score and the next score below it, so it is not glued to one sample.
    """
    pos, neg = np.asarray(pos, np.float64).ravel(), np.asarray(neg, np.float64).ravel()
    if not len(pos) or not len(neg):
        raise ValueError("calibration needs positive and negative pairs")
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    tp, fp = np.cumsum(y), np.cumsum(1 - y)
    last_of_run = np.r_[s[1:] != s[:-1], True]  # a cut can only fall between distinct scores
    tpr, tnr = tp / len(pos), 1.0 - fp / len(neg)
    bal = np.where(last_of_run, (tpr + tnr) / 2.0, -1.0)
    i = int(np.argmax(bal))
    # accepting nothing is also a cut: balanced accuracy 0.5
    if bal[i] < 0.5:
        thr, best_tpr, best_tnr = float(s[0]) + 1e-6, 0.0, 1.0
    else:
        lower = s[i + 1] if i + 1 < len(s) else s[i] - 1e-3
        thr, best_tpr, best_tnr = float((s[i] + lower) / 2.0), float(tpr[i]), float(tnr[i])
    return {
        "rule": "max balanced accuracy",
        "threshold": thr,
        "balanced_accuracy": (best_tpr + best_tnr) / 2.0,
        "tpr": best_tpr,
        "tnr": best_tnr,
        "auc": roc_auc(pos, neg),
        "n_pos": int(len(pos)),
        "n_neg": int(len(neg)),
    }


def recall_at_k(
    sims: np.ndarray,
    query_keys: np.ndarray,
    gallery_keys: np.ndarray,
    ks: tuple[int, ...] = (1, 10),
    exclude: np.ndarray | None = None,
) -> dict[int, float]:
    """Share of queries with a same-key gallery entry among their top K by similarity.

    `exclude` (n_query,) gives, per query, a gallery column to ignore (its own image), or -1.
    Ties are broken by gallery position (stable), as in the search engine.
    """
    sims = np.array(sims, np.float64, copy=True)
    if exclude is not None:
        rows = np.nonzero(exclude >= 0)[0]
        sims[rows, exclude[rows]] = -np.inf
    kmax = min(max(ks), sims.shape[1])
    top = np.argsort(-sims, axis=1, kind="stable")[:, :kmax]
    hit = gallery_keys[top] == query_keys[:, None]
    return {k: float(hit[:, : min(k, kmax)].any(axis=1).mean()) for k in ks}
