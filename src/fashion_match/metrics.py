"""Retrieval and verification metrics, numpy only: shared by export, trainer and benchmark."""

from __future__ import annotations

from typing import Any

import numpy as np

from fashion_match.errors import BadDataset


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


def calibrate_threshold(pos: np.ndarray, neg: np.ndarray, auc: bool = True) -> dict[str, Any]:
    """The match threshold that maximises balanced accuracy, (TPR + TNR) / 2.

    "Match" means similarity >= threshold. The threshold sits halfway between the best cut's
    lowest accepted score and the next score below it, so it is not glued to one sample.
    `auc=False` skips the ROC AUC (a second sort: half the time on tens of millions of pairs).
    """
    pos, neg = np.asarray(pos, np.float64).ravel(), np.asarray(neg, np.float64).ravel()
    if not len(pos) or not len(neg):
        raise BadDataset(
            f"threshold calibration needs positive and negative pairs, got {len(pos)} and {len(neg)}; "
            "the calibration data needs items with two or more images and more than one item"
        )
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    # counts are read only at the last of each run of equal scores, so the order within a run is
    # free: numpy's default sort, several times faster than a stable one on millions of pairs
    order = np.argsort(-scores)
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
        "auc": roc_auc(pos, neg) if auc else None,
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


RECALL_KS = (1, 10, 20, 30, 40, 50)


def retrieval_report(
    q_emb: np.ndarray,
    q_keys: np.ndarray,
    g_emb: np.ndarray,
    g_keys: np.ndarray,
    *,
    q_ids: np.ndarray | None = None,
    g_ids: np.ndarray | None = None,
    ks: tuple[int, ...] = RECALL_KS,
    pairs_per_query: int = 5,
    seed: int = 0,
    chunk: int = 256,
) -> dict[str, Any]:
    """Recall@K, mAP@R and pair verification on a query/gallery protocol.

    - Recall@K: share of queries with a same-key gallery entry in the top K (the DeepFashion
      protocol). mAP@R (Musgrave et al., "A Metric Learning Reality Check"): R = number of
      same-key gallery entries; AP over the top R.
    - With `q_ids`/`g_ids`, a gallery entry with the query's own id is ignored (leave-one-out).
    - Verification: for each query up to `pairs_per_query` positive pairs (its same-key gallery
      entries, first in gallery order) and as many negatives (seeded random other-key entries);
      ROC AUC and the max-balanced-accuracy threshold over those pairs.
    Ties rank by gallery position, as the search engine does.
    """
    rng = np.random.default_rng(seed)
    n_q, n_g = len(q_emb), len(g_emb)
    kmax = min(max(ks), n_g)
    hits = np.zeros((n_q, kmax), bool)
    ap = np.zeros(n_q)
    has_pos = np.zeros(n_q, bool)
    pos_s: list[np.ndarray] = []
    neg_s: list[np.ndarray] = []
    g_keys = np.asarray(g_keys)
    for s in range(0, n_q, chunk):
        sims = np.asarray(q_emb[s : s + chunk], np.float32) @ np.asarray(g_emb, np.float32).T
        rel = np.asarray(q_keys[s : s + chunk])[:, None] == g_keys[None, :]
        if q_ids is not None and g_ids is not None:
            self_mask = np.asarray(q_ids[s : s + chunk])[:, None] == np.asarray(g_ids)[None, :]
            sims[self_mask] = -np.inf
            rel &= ~self_mask
        order = np.argsort(-sims, axis=1, kind="stable")
        rel_sorted = np.take_along_axis(rel, order, axis=1)
        hits[s : s + chunk] = rel_sorted[:, :kmax]
        r_count = rel.sum(axis=1)
        has_pos[s : s + chunk] = r_count > 0
        cum = np.cumsum(rel_sorted, axis=1)
        prec = cum / np.arange(1, n_g + 1)[None, :]
        within_r = np.arange(n_g)[None, :] < r_count[:, None]
        ap[s : s + chunk] = np.where(r_count > 0, (prec * rel_sorted * within_r).sum(1) / np.maximum(r_count, 1), 0)
        for row in range(len(sims)):
            p = np.nonzero(rel[row])[0][:pairs_per_query]
            candidates = np.nonzero(~rel[row] & np.isfinite(sims[row]))[0]
            if len(p) and len(candidates):
                n = rng.choice(candidates, min(len(candidates), pairs_per_query), replace=False)
                pos_s.append(sims[row, p])
                neg_s.append(sims[row, n])
    valid = has_pos
    report: dict[str, Any] = {
        f"recall_at_{k}": float(hits[valid, : min(k, kmax)].any(axis=1).mean()) if valid.any() else float("nan")
        for k in ks
    }
    report["map_at_r"] = float(ap[valid].mean()) if valid.any() else float("nan")
    report["queries"] = int(valid.sum())
    report["gallery"] = int(n_g)
    if pos_s and neg_s:
        cal = calibrate_threshold(np.concatenate(pos_s), np.concatenate(neg_s))
        report.update(
            {
                "pair_auc": cal["auc"],
                "threshold": cal["threshold"],
                "pair_balanced_accuracy": cal["balanced_accuracy"],
                "pairs": cal["n_pos"] + cal["n_neg"],
            }
        )
    return report


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 3, 5)) -> dict[str, float]:
    order = np.argsort(-logits, axis=1, kind="stable")
    return {f"top{k}": float((order[:, :k] == labels[:, None]).any(axis=1).mean()) for k in ks}


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """AP of one label: the mean, over its positives, of the precision at each one's rank (ties
    broken by input order); NaN when the label has no positive."""
    positive = np.asarray(positive, bool)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = positive[order]
    ranks = np.nonzero(hits)[0] + 1
    return float(np.mean(np.arange(1, n_pos + 1) / ranks))


def best_f1_threshold(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 when `scores >= threshold` is called positive; with no
    positive, a threshold above every score (nothing is called)."""
    positive = np.asarray(positive, bool)
    scores = np.asarray(scores, np.float64)
    if not positive.any():
        return float(np.nextafter(scores.max(initial=1.0), np.inf)), float("nan")
    order = np.argsort(-scores, kind="stable")
    s, hits = scores[order], positive[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    f1 = 2 * tp / (tp + fp + positive.sum())
    last = np.r_[s[1:] != s[:-1], True]  # a threshold can only sit at the last of equal scores
    f1 = np.where(last, f1, -1.0)
    i = int(np.argmax(f1))
    return float(s[i]), float(f1[i])


def topk_recall(scores: np.ndarray, positive: np.ndarray, k: int) -> float:
    """DeepFashion's attribute protocol: of all positive labels, the share found in each image's
    top-k predictions (images with no positive left out)."""
    positive = np.asarray(positive, bool)
    keep = positive.any(axis=1)
    if not keep.any():
        return float("nan")
    top = np.argsort(-scores[keep], axis=1, kind="stable")[:, :k]
    found = np.take_along_axis(positive[keep], top, axis=1).sum()
    return float(found / positive[keep].sum())


def mean_average_precision(sims: np.ndarray, q_keys: np.ndarray, g_keys: np.ndarray) -> float:
    """mAP of a ranking (ASEN's attribute protocol): each query ranks the whole gallery, its
    relevant images are those with the same key; queries with none are left out."""
    aps = [average_precision(row, g_keys == k) for row, k in zip(sims, q_keys, strict=True)]
    aps = [a for a in aps if not np.isnan(a)]
    return float(np.mean(aps)) if aps else float("nan")
