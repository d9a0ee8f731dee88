from __future__ import annotations

import sys

import numpy as np
import pytest

from fashion_match.runtime.engines import ExactEngine, FaissEngine, make_engine
from fashion_match.runtime.search import topk_exact, topk_naive


def _split(g: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    cuts = sorted(rng.integers(0, len(g) + 1, 3))
    return [g[: cuts[0]], g[cuts[0] : cuts[1]], g[cuts[1] : cuts[2]], g[cuts[2] :]]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("ties", [False, True])
def test_topk_equals_full_sort(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(1, 5000)), int(rng.integers(1, 24))
    nq, k = int(rng.integers(1, 40)), int(rng.integers(1, 30))
    if ties:  # few distinct values: many equal scores, broken by lower gallery index
        g = rng.integers(-1, 2, (n, d)).astype(np.float32)
        q = rng.integers(-1, 2, (nq, d)).astype(np.float32)
    else:
        g = rng.standard_normal((n, d)).astype(np.float32)
        q = rng.standard_normal((nq, d)).astype(np.float32)
    s, i = topk_exact(
        q, _split(g, rng), k, query_chunk=int(rng.integers(1, 50)), gallery_block=int(rng.integers(1, 3000))
    )
    kk = min(k, n)
    ref_s, ref_i = topk_naive(q, g, kk)
    np.testing.assert_array_equal(i[:, :kk], ref_i)
    np.testing.assert_allclose(s[:, :kk], ref_s, rtol=1e-5, atol=1e-5)
    assert (i[:, kk:] == -1).all() and np.isneginf(s[:, kk:]).all()


def test_all_equal_scores_keep_gallery_order() -> None:
    g = np.ones((3000, 4), np.float32)
    s, i = topk_exact(np.ones((2, 4), np.float32), [g[:1000], g[1000:]], 5, gallery_block=700)
    assert i.tolist() == [[0, 1, 2, 3, 4]] * 2 and (s == 4).all()


def test_large_block_path_with_segments() -> None:
    rng = np.random.default_rng(7)
    g = rng.standard_normal((40_000, 32)).astype(np.float32)
    q = rng.standard_normal((300, 32)).astype(np.float32)
    _, i = topk_exact(q, [g], 10)  # default chunk and block sizes: the segment-max path
    np.testing.assert_array_equal(i, topk_naive(q, g, 10)[1])


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_raised_thresholds_keep_ties_in_gallery_order(k: int) -> None:
    """Many segments per block (the k-th segment maximum raises each threshold) on tie-heavy scores:
    entries equal to a raised threshold may still belong to the top k and must not be dropped."""
    rng = np.random.default_rng(k)
    g = rng.integers(-1, 2, (50_000, 4)).astype(np.float32)
    q = rng.integers(-1, 2, (64, 4)).astype(np.float32)
    s, i = topk_exact(q, [g[:20_000], g[20_000:]], k)
    ref_s, ref_i = topk_naive(q, g, k)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(s, ref_s)


def test_empty_inputs() -> None:
    s, i = topk_exact(np.zeros((0, 4), np.float32), [np.ones((5, 4), np.float32)], 3)
    assert s.shape == (0, 3)
    s, i = topk_exact(np.ones((2, 4), np.float32), [], 3)
    assert (i == -1).all()


def test_float16_blocks_are_searched_exactly() -> None:
    rng = np.random.default_rng(1)
    g16 = rng.standard_normal((500, 16)).astype(np.float16)
    q = rng.standard_normal((7, 16)).astype(np.float32)
    _, i = ExactEngine([g16]).search(q, 5)
    np.testing.assert_array_equal(i, topk_naive(q, g16.astype(np.float32), 5)[1])


def test_faiss_ivf_flat_exhaustive_equals_exact() -> None:
    rng = np.random.default_rng(2)
    g = rng.standard_normal((3000, 32)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = g[:50] + 0.05 * rng.standard_normal((50, 32)).astype(np.float32)
    eng = FaissEngine([g[:1000], g[1000:]], "ivf-flat", nlist=16, nprobe=16)  # visits every list: exhaustive
    s, i = eng.search(q, 10)
    ref_s, ref_i = topk_naive(q, g, 10)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(s, ref_s, atol=1e-5)


def test_faiss_ivf_pq_finds_the_obvious_neighbour() -> None:
    rng = np.random.default_rng(3)
    g = rng.standard_normal((5000, 32)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    eng = make_engine("faiss-ivf-pq", [g], nlist=8, nprobe=8, pq_m=8)
    _, i = eng.search(g[:100], 1)
    assert (i[:, 0] == np.arange(100)).mean() > 0.9  # compressed codes: near-exact, not exact


@pytest.mark.gpu
def test_gpu_engine_equals_cpu() -> None:
    pytest.importorskip("cupy", reason="exact-gpu needs CuPy")
    rng = np.random.default_rng(4)
    g = rng.integers(-1, 2, (20_000, 16)).astype(np.float32)  # tie-heavy
    q = rng.integers(-1, 2, (64, 16)).astype(np.float32)
    s, i = make_engine("exact-gpu", [g[:7000], g[7000:]], block_rows=4096).search(q, 10)
    np.testing.assert_array_equal(i, topk_naive(q, g, 10)[1])


@pytest.mark.gpu
def test_gpu_engine_float16_gallery_scores_equal_cpu() -> None:
    """float16 shards: both engines widen the gallery and keep the queries float32. Rounding the
    queries to float16 instead moves these scores by up to 6e-3 (checked on the CPU engine)."""
    pytest.importorskip("cupy", reason="exact-gpu needs CuPy")
    rng = np.random.default_rng(5)
    g = rng.standard_normal((9000, 64)).astype(np.float16)
    q = rng.standard_normal((50, 64)).astype(np.float32)
    s, _ = make_engine("exact-gpu", [g[:5000], g[5000:]], block_rows=4096).search(q, 10)
    ref_s, _ = make_engine("exact", [g[:5000], g[5000:]]).search(q, 10)
    # ranked scores, not indices: GPU and CPU GEMMs may order a near-tie (1e-6 apart) differently
    np.testing.assert_allclose(s, ref_s, rtol=0, atol=1e-4)


def _numpy_as_cupy():  # type: ignore[no-untyped-def]
    """Just the CuPy surface CupyEngine uses, backed by numpy: its blocking and merging run on CPU."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    runtime = SimpleNamespace(getDeviceCount=lambda: 1, CUDARuntimeError=RuntimeError)
    return SimpleNamespace(
        cuda=SimpleNamespace(runtime=runtime, Device=lambda _d: nullcontext()),
        float16=np.float16,
        float32=np.float32,
        asarray=lambda a, dtype=None: np.asarray(a, dtype=dtype),
        asnumpy=np.asarray,
        argpartition=np.argpartition,
        take_along_axis=np.take_along_axis,
        count_nonzero=np.count_nonzero,
        nonzero=np.nonzero,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("ties", [False, True])
def test_gpu_engine_blocking_on_cpu(monkeypatch: pytest.MonkeyPatch, dtype: type, ties: bool) -> None:
    """Everything of exact-gpu but the device calls: several gallery blocks and query chunks, ties
    at the k-th score, float16 storage; results equal the full stable sort."""
    from fashion_match.runtime.engines import CupyEngine

    monkeypatch.setitem(sys.modules, "cupy", _numpy_as_cupy())
    rng = np.random.default_rng(1)
    g = (rng.integers(-1, 2, (700, 6)) if ties else rng.standard_normal((700, 6))).astype(dtype)
    q = (rng.integers(-1, 2, (37, 6)) if ties else rng.standard_normal((37, 6))).astype(np.float32)
    engine = CupyEngine([g[:300], g[300:]], block_rows=128)
    s, i = engine.search(q, 9, query_chunk=10)
    ref_s, ref_i = topk_naive(q, g.astype(np.float32), 9)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(s, ref_s, rtol=1e-6, atol=1e-6)
