from __future__ import annotations

import itertools

import numpy as np
import pytest

from fashion_match.metrics import calibrate_threshold, recall_at_k, roc_auc


def naive_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def naive_best_balanced_accuracy(pos: np.ndarray, neg: np.ndarray) -> float:
    best = 0.5
    for t in np.unique(np.concatenate([pos, neg])):
        best = max(best, ((pos >= t).mean() + (neg < t).mean()) / 2)
    return float(best)


@pytest.mark.parametrize("seed", range(5))
def test_auc_and_threshold_match_naive(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pos = np.round(rng.normal(0.6, 0.15, 40), 2)  # rounding makes ties
    neg = np.round(rng.normal(0.3, 0.15, 70), 2)
    assert roc_auc(pos, neg) == pytest.approx(naive_auc(pos, neg))
    cal = calibrate_threshold(pos, neg)
    assert cal["balanced_accuracy"] == pytest.approx(naive_best_balanced_accuracy(pos, neg))
    t = cal["threshold"]
    # the threshold realises the reported rates
    assert (pos >= t).mean() == pytest.approx(cal["tpr"]) and (neg < t).mean() == pytest.approx(cal["tnr"])


def test_threshold_ignores_input_order_within_ties() -> None:
    # the cut is read at the last of each run of equal scores: shuffling the input (which reorders
    # equal scores in the sort) must not move it; auc=False gives the same cut without the AUC
    rng = np.random.default_rng(7)
    pos, neg = np.round(rng.normal(0.6, 0.2, 3000), 1), np.round(rng.normal(0.4, 0.2, 5000), 1)
    ref = calibrate_threshold(pos, neg)
    for _ in range(3):
        cal = calibrate_threshold(rng.permutation(pos), rng.permutation(neg), auc=False)
        assert (cal["threshold"], cal["tpr"], cal["tnr"]) == (ref["threshold"], ref["tpr"], ref["tnr"])
        assert cal["auc"] is None


def test_separable_threshold_sits_between() -> None:
    cal = calibrate_threshold(np.array([0.9, 0.8]), np.array([0.2, 0.4]))
    assert 0.4 < cal["threshold"] < 0.8 and cal["balanced_accuracy"] == 1.0 and cal["auc"] == 1.0


def test_recall_at_k_hand_count() -> None:
    sims = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.7, 0.1]])
    q = np.array(["a", "b", "c"])
    g = np.array(["x", "b", "c"])
    # q0: order 0,2,1 -> no 'a' anywhere; q1: order 2,1,0 -> 'b' at rank 2; q2: tie 0/1 -> stable 0,1,2 -> 'c' rank 3
    r = recall_at_k(sims, q, g, ks=(1, 2, 3))
    assert r == {1: 0.0, 2: pytest.approx(1 / 3), 3: pytest.approx(2 / 3)}
    ex = np.array([-1, 2, -1])  # q1 may not retrieve gallery 2
    assert recall_at_k(sims, q, g, ks=(1,), exclude=ex) == {1: pytest.approx(1 / 3)}


def test_retrieval_report_by_hand() -> None:
    from fashion_match.metrics import retrieval_report

    # 2-d unit vectors at known angles make the ranking obvious
    ang = np.deg2rad(np.array([0.0, 10.0, 50.0, 100.0]))
    g = np.stack([np.cos(ang), np.sin(ang)], 1)
    gk = np.array(["a", "b", "a", "b"])
    q = np.array([[1.0, 0.0], [np.cos(np.deg2rad(95)), np.sin(np.deg2rad(95))]])
    qk = np.array(["a", "c"])  # the second query has no relevant gallery entry: it is not counted
    r = retrieval_report(q, qk, g, gk, ks=(1, 2, 3), pairs_per_query=2)
    # query 0 ranking: g0 (a), g1 (b), g2 (a), g3 (b); R = 2 -> AP@R = (1/1 + 0) / 2
    assert r["recall_at_1"] == 1.0 and r["recall_at_2"] == 1.0 and r["queries"] == 1
    assert r["map_at_r"] == pytest.approx(0.5)
    # pairs: positives g0 (1.0), g2 (0.64); negatives g1 (0.98), g3 (-0.17): 3 of 4 orderings right
    assert r["pair_auc"] == pytest.approx(0.75)


def test_recall_at_k_does_not_count_a_hit_at_rank_k_plus_1() -> None:
    from fashion_match.metrics import retrieval_report

    # one query, gallery of 6: the only relevant image ranks 4th (similarities fall with the index)
    sims = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]], np.float32)
    q = np.array([1.0, 0.0], np.float32)
    gallery = np.stack([[s, np.sqrt(1 - s * s)] for s in sims[0]]).astype(np.float32)
    rep = retrieval_report(q[None, :], np.array([7]), gallery, np.array([0, 1, 2, 7, 3, 4]), ks=(1, 3, 4, 5))
    assert (rep["recall_at_1"], rep["recall_at_3"], rep["recall_at_4"], rep["recall_at_5"]) == (0.0, 0.0, 1.0, 1.0)
    assert rep["map_at_r"] == 0.0  # R = 1 relevant image, not in the first R = 1 places


def test_recall_at_k_breaks_ties_by_gallery_position() -> None:
    # two gallery images with the same similarity: the earlier one ranks first, as in the search engine
    sims = np.array([[0.5, 0.5, 0.1]])
    assert recall_at_k(sims, np.array([1]), np.array([1, 0, 2]), ks=(1,)) == {1: 1.0}
    assert recall_at_k(sims, np.array([0]), np.array([1, 0, 2]), ks=(1, 2)) == {1: 0.0, 2: 1.0}


def test_threshold_calibration_without_both_kinds_of_pair_is_a_dataset_error() -> None:
    from fashion_match.errors import BadDataset

    with pytest.raises(BadDataset, match="needs positive and negative pairs, got 2 and 0"):
        calibrate_threshold(np.array([0.9, 0.8]), np.array([]))
