"""Search engines behind one interface: `search(queries, k) -> (scores, indices)`.

- `exact`: numpy/BLAS GEMM + partial selection on the CPU (`runtime.search`); the default.
- `exact-gpu`: the same algorithm with the gallery resident on a CUDA GPU (CuPy).
- `faiss`: the approximate FAISS index (IVF-Flat, IVF-PQ or HNSW) an index folder keeps for galleries
  past what exact search serves in time (`runtime.faiss_index`); its recall against exact search
  is measured when it is built, and in benchmarks/faiss_recall.py.
All return scores as inner products of L2-normalised vectors (cosine) and -1 for missing slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from fashion_match.errors import BackendUnavailable, MissingDependency, UsageError
from fashion_match.runtime.search import merge_topk, topk_exact

ENGINES = ("exact", "exact-gpu", "faiss")  # faiss: the FAISS index kept in the index folder


class Engine(Protocol):
    name: str

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


class ExactEngine:
    name = "exact"

    def __init__(self, blocks: Sequence[np.ndarray]) -> None:
        # float16 shards are widened once here: BLAS has no half-precision GEMM on CPU
        self.blocks = [b if b.dtype == np.float32 else np.asarray(b, np.float32) for b in blocks]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return topk_exact(queries, self.blocks, k)


class CupyEngine:
    """Exact search with the gallery on the GPU: cuBLAS GEMM per block, top-k on the device,
    only (queries x k) candidates cross to the host. Ties at the k-th score are resolved on the
    host from the full row, so results equal the CPU engine's wherever the scores themselves are
    equal (cuBLAS and the CPU BLAS may round a sum differently in the last bit). A float16 gallery
    stays half-size on the device and is widened block by block: queries are never rounded to
    float16 and the GEMM runs in float32, as on the CPU."""

    name = "exact-gpu"

    def __init__(self, blocks: Sequence[np.ndarray], device: int = 0, block_rows: int = 262144) -> None:
        try:
            import cupy as cp
        except ImportError as e:
            raise MissingDependency("exact-gpu needs CuPy: pip install cupy-cuda12x (or cupy-cuda13x)") from e
        try:
            if cp.cuda.runtime.getDeviceCount() < 1:
                raise BackendUnavailable("exact-gpu: no CUDA GPU visible")
        except cp.cuda.runtime.CUDARuntimeError as e:
            raise BackendUnavailable(f"exact-gpu: CUDA is not usable here ({e})") from None
        self.cp = cp
        with cp.cuda.Device(device):
            host = np.concatenate([np.asarray(b) for b in blocks]) if blocks else np.zeros((0, 1), np.float32)
            dt = cp.float16 if host.dtype == np.float16 else cp.float32
            self.gallery = cp.asarray(host, dtype=dt)
        self.device, self.block_rows = device, block_rows

    def search(self, queries: np.ndarray, k: int, query_chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        cp = self.cp
        n_q, n_g = len(queries), self.gallery.shape[0]
        out_s = np.full((n_q, k), -np.inf, np.float32)
        out_i = np.full((n_q, k), -1, np.int64)
        if n_q == 0 or n_g == 0:
            return out_s, out_i
        sentinel = np.iinfo(np.int64).max
        with cp.cuda.Device(self.device):
            for q0 in range(0, n_q, query_chunk):
                q = cp.asarray(queries[q0 : q0 + query_chunk], dtype=cp.float32)
                best_s = np.full((len(q), k), -np.inf, np.float32)
                best_i = np.full((len(q), k), sentinel, np.int64)
                for g0 in range(0, n_g, self.block_rows):
                    sims = q @ self.gallery[g0 : g0 + self.block_rows].astype(cp.float32, copy=False).T
                    kk = min(k, sims.shape[1])
                    part = cp.argpartition(-sims, kk - 1, axis=1)[:, :kk]
                    vals = cp.take_along_axis(sims, part, axis=1)
                    kth = vals.min(axis=1)
                    ties = cp.count_nonzero(sims >= kth[:, None], axis=1)
                    vals_h, part_h = cp.asnumpy(vals), cp.asnumpy(part)
                    kth_h, ties_h = cp.asnumpy(kth), cp.asnumpy(ties)
                    rows = np.repeat(np.arange(len(q)), kk)
                    cols = part_h.ravel()
                    scores = vals_h.ravel()
                    # rows whose k-th score is tied beyond k: take every tied entry from the device
                    for r in np.nonzero(ties_h > kk)[0]:
                        extra = cp.asnumpy(cp.nonzero(sims[r] >= kth_h[r])[0])
                        keep = rows != r
                        rows = np.concatenate([rows[keep], np.full(len(extra), r)])
                        cols = np.concatenate([cols[keep], extra])
                        scores = np.concatenate([scores[keep], cp.asnumpy(sims[r, extra])])
                    merge_topk(best_s, best_i, rows, scores.astype(np.float32), cols.astype(np.int64) + g0, k)
                best_i[best_i == sentinel] = -1
                out_s[q0 : q0 + len(q)], out_i[q0 : q0 + len(q)] = best_s, best_i
        return out_s, out_i


class FaissEngine:
    """A FAISS index over inner product: the one an index folder keeps (`from_index`, what
    fm-search uses), or one trained here on the blocks given (benchmarks, tests)."""

    def __init__(
        self,
        blocks: Sequence[np.ndarray],
        kind: str = "ivf-flat",
        *,
        nlist: int | None = None,
        nprobe: int | None = None,
        pq_m: int | None = None,
        ef_search: int | None = None,
    ) -> None:
        from fashion_match.runtime import faiss_index as fx

        x = np.ascontiguousarray(np.concatenate([np.asarray(b, np.float32) for b in blocks]))
        given = {"nlist": nlist, "nprobe": nprobe, "pq_m": pq_m, "ef_search": ef_search}
        self.params = fx.default_params(kind, len(x), x.shape[1], given)
        self.index = fx.train_and_fill(fx.make_index(kind, x.shape[1], self.params), x)
        self.kind, self.name = kind, f"faiss-{kind}"

    @classmethod
    def from_index(cls, index: Any, kind: str, params: dict[str, Any]) -> FaissEngine:
        eng = cls.__new__(cls)
        eng.index, eng.kind, eng.name, eng.params = index, kind, f"faiss-{kind}", dict(params)
        return eng

    def set_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        from fashion_match.runtime.faiss_index import set_search_params

        set_search_params(self.index, self.kind, nprobe, ef_search)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        return scores.astype(np.float32), ids.astype(np.int64)


def make_engine(name: str, blocks: Sequence[np.ndarray], **params: Any) -> Engine:
    """An in-memory engine over `blocks` (the persisted FAISS index is `Index.engine("faiss")`)."""
    if name == "exact":
        return ExactEngine(blocks)
    if name == "exact-gpu":
        return CupyEngine(blocks, **params)
    if name.startswith("faiss-") and name.removeprefix("faiss-") in ("ivf-flat", "ivf-pq", "hnsw"):
        return FaissEngine(blocks, name.removeprefix("faiss-"), **params)
    raise UsageError(f"--engine {name}: choose one of {', '.join(ENGINES)}")
