"""The accuracy gate's verdicts: Recall@1, verification accuracy and the mean-cosine floor."""

from __future__ import annotations

import numpy as np
import pytest

from fashion_match.export.gate import MIN_MEAN_COSINE, GateFailed, GateSet, embed_gate_set, run_gate

N, DIM = 16, 32


def _gate_set() -> GateSet:
    """Image i (a 2x2 patch of value i) has key i; the pairs are images 0..7 against themselves."""
    px = np.stack([np.full((2, 2, 3), i, np.uint8) for i in range(N)])
    keys = np.arange(N)
    return GateSet("synthetic", px, keys, px.copy(), keys.copy(), px[:8].copy(), px[:8].copy())


def _one_hot(pixels: np.ndarray) -> np.ndarray:
    e = np.zeros((len(pixels), DIM), np.float32)
    e[np.arange(len(pixels)), pixels[:, 0, 0, 0].astype(int)] = 1.0
    return e


def _blurred(weight: float):  # noqa: ANN202 - an Embed
    """Each embedding leans towards one shared direction: rankings stay, cosines and similarities change."""

    def embed(pixels: np.ndarray) -> np.ndarray:
        e = _one_hot(pixels) * weight
        e[:, -1] += np.sqrt(1 - weight**2)
        return e

    return embed


def _gate(embed, **kw):  # noqa: ANN001, ANN202
    gs = _gate_set()
    ref = embed_gate_set("ref", gs, _one_hot)
    return run_gate("cand", "int8", gs, ref, threshold=0.5, embed=embed, **kw)


def test_identical_candidate_passes() -> None:
    figures = _gate(_one_hot)
    assert figures["passed"] and figures["mean_cosine"] == pytest.approx(1.0)
    assert figures["min_mean_cosine"] == MIN_MEAN_COSINE["int8"]


def test_mean_cosine_floor_trips_even_when_rankings_hold() -> None:
    # cosine 0.9 to FP32; the impostor pairs' similarity (0.19) stays below the threshold
    with pytest.raises(GateFailed, match="mean cosine to FP32 0.9000 < 0.95") as err:
        _gate(_blurred(0.9))
    assert err.value.figures["recall_at_1_drop_pts"] == 0.0
    assert err.value.figures["verification_accuracy_drop_pts"] == 0.0


def test_verification_drop_trips() -> None:
    # cosine 0.6: impostor similarity 0.64 crosses the 0.5 threshold, verification accuracy falls
    with pytest.raises(GateFailed, match="verification accuracy 1.0000 -> 0.5000") as err:
        _gate(_blurred(0.6), allow_drop_pts=10.0)
    assert err.value.figures["recall_at_1_drop_pts"] == 0.0


def test_allowance_waives_the_floor_and_is_recorded() -> None:
    figures = _gate(_blurred(0.9), allow_drop_pts=2.0)
    assert figures["passed"] and figures["min_mean_cosine"] is None
    assert figures["allowance"] == "--allow-accuracy-drop" and figures["allowed_drop_pts"] == 2.0


def _twins(swap: bool):  # noqa: ANN202 - an Embed
    """Items 2j and 2j+1 are near twins (cosine ~0.9998). Gallery images carry pixel value 100 + key.
    With `swap`, the gallery images of items 0..3 take their twin's embedding: four of sixteen
    queries find the twin first, every cosine to FP32 stays >= 0.999, the pairs are untouched."""
    rng = np.random.default_rng(0)
    u, w = rng.standard_normal((8, DIM)), rng.standard_normal((8, DIM))
    d = np.empty((N, DIM))
    d[0::2], d[1::2] = u + 0.01 * w, u - 0.01 * w
    d /= np.linalg.norm(d, axis=1, keepdims=True)

    def embed(pixels: np.ndarray) -> np.ndarray:
        v = pixels[:, 0, 0, 0].astype(int)
        key = v % 100
        if swap:
            key = np.where((v >= 100) & (key < 4), key ^ 1, key)
        return d[key].astype(np.float32)

    return embed


def test_a_recall_drop_beyond_the_allowance_is_refused() -> None:
    px = np.stack([np.full((2, 2, 3), i, np.uint8) for i in range(N)])
    keys = np.arange(N)
    gs = GateSet("twins", px, keys, px + 100, keys.copy(), px[:8].copy(), px[:8].copy())
    ref = embed_gate_set("ref", gs, _twins(False))
    with pytest.raises(GateFailed, match=r"Recall@1 1.0000 -> 0.7500 \(25.00 points lost, 1.0 allowed") as err:
        run_gate("cand", "int8", gs, ref, threshold=0.5, embed=_twins(True))
    f = err.value.figures
    assert f["min_cosine"] > 0.999 and f["verification_accuracy_drop_pts"] == 0.0  # only Recall@1 can see it
    # the same candidate passes when the user allows that drop: the allowance is what decides
    assert run_gate("cand", "int8", gs, ref, threshold=0.5, embed=_twins(True), allow_drop_pts=30)["passed"]


def test_a_failure_names_the_data_and_the_remedy_of_its_precision() -> None:
    gs = _gate_set()
    ref = embed_gate_set("ref", gs, _one_hot)
    with pytest.raises(GateFailed, match=r"failed on synthetic: .*--calib SPEC") as err:
        run_gate("cand", "int8", gs, ref, threshold=0.5, embed=_blurred(0.6))
    assert "no calibration" not in str(err.value)
    with pytest.raises(GateFailed, match=r"FP16 takes no calibration") as err:
        run_gate("cand", "fp16", gs, ref, threshold=0.5, embed=_blurred(0.6))
    assert "--calib" not in str(err.value)


def test_resolution_warns_only_when_one_query_outweighs_the_allowance() -> None:
    from fashion_match.export.gate import resolution_pts, resolution_warning

    gs = _gate_set()  # 16 queries (6.25 points each), 8 pairs (12.5 points of instance Recall@1 and
    # 6.25 points of balanced accuracy each)
    assert resolution_pts(gs) == {"recall_at_1": 6.25, "instance_recall_at_1": 12.5, "verification_accuracy": 6.25}
    assert "one query is 6.25 points of recall_at_1" in (resolution_warning(gs, "fp16", 0.1) or "")
    assert "12.50 points of instance_recall_at_1" in (resolution_warning(gs, "int8", 6.25) or "")
    assert resolution_warning(gs, "int8", 12.5) is None


def test_an_instance_drop_is_refused_while_category_recall_holds() -> None:
    """Pairs: consumer photos 50+i, shop photos 60+i (item i < 8), distractors 100+j (items 8..15).
    The candidate turns pair 0's consumer photo towards distractor 108: only instance Recall@1 sees it."""
    px = np.stack([np.full((2, 2, 3), i, np.uint8) for i in range(N)])
    gs = GateSet("pairs", px, np.arange(N), px.copy(), np.arange(N), px[:8] + 50, px[:8] + 60, px[8:] + 100)

    def item(pixels: np.ndarray) -> np.ndarray:
        v = pixels[:, 0, 0, 0].astype(int)
        return np.where(v >= 100, v - 100, np.where(v >= 60, v - 60, np.where(v >= 50, v - 50, v)))

    def fp32(pixels: np.ndarray) -> np.ndarray:
        e = np.zeros((len(pixels), DIM), np.float32)
        e[np.arange(len(pixels)), item(pixels)] = 1.0
        return e

    def moved(pixels: np.ndarray) -> np.ndarray:
        e = fp32(pixels)
        e[pixels[:, 0, 0, 0] == 50] = 0.0
        e[pixels[:, 0, 0, 0] == 50, 0], e[pixels[:, 0, 0, 0] == 50, 8] = 0.6, 0.8
        return e

    ref = embed_gate_set("ref", gs, fp32)
    assert ref.distractors is not None and ref.distractors.shape == (8, DIM)
    with pytest.raises(GateFailed, match=r"instance Recall@1 1.0000 -> 0.8750 \(12.50 points lost") as err:
        run_gate("cand", "int8", gs, ref, threshold=0.5, embed=moved, allow_drop_pts=7.0)
    f = err.value.figures
    assert f["recall_at_1_drop_pts"] == 0.0 and f["verification_accuracy_drop_pts"] == 0.0
    assert f["instance_recall_at_1_fp32"] == 1.0 and f["instance_recall_at_1_drop_pts"] == 12.5
    assert f["standard_error_pts"]["instance_recall_at_1_drop"] == pytest.approx(100 * np.sqrt(1 - 1 / 8) / 8, abs=1e-3)


def test_standard_errors_are_binomial_and_paired() -> None:
    from fashion_match.export.gate import standard_errors_pts

    base = {"r": np.array([True, True, True, False])}
    new = {"r": np.array([True, False, False, True])}  # two lost, one gained
    se = standard_errors_pts(base, new)
    assert se["r"] == pytest.approx(25.0)  # p = 0.5 over 4 queries
    assert se["r_drop"] == pytest.approx(100 * np.sqrt(3 - 1 / 4) / 4, abs=1e-3)
    assert standard_errors_pts(base, base)["r_drop"] == 0.0
