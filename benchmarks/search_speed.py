"""Exact batched search against a seed-style naive search, on the seed's gallery size.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/search_speed.py --json [--out FILE | --record]

Gallery: 139,709 x 512 float32 unit vectors (deep-fashion-retrieval's gallery size), queries:
1,000 gallery rows with noise added, all searched as one batch for the top 10. Vectors are
synthetic (random, normalised): search time depends on sizes, not content. Naive: what the seed
repository does per query — Euclidean distance to every gallery row, then a full argsort —
timed on the first `--naive-queries` queries and reported per query. `exact` is true when our
top-10 equals the naive ranking for those queries (on unit vectors Euclidean order is cosine
order). Float16 storage is measured too: recall@k of a float16-rounded gallery against float32's
answer. FAISS's `IndexFlatIP` (when faiss is installed) is timed in the same run on the same vectors,
with whether its top-10 lists equal ours. "GEMM alone" is our search's own blocked GEMM (same blocks,
same buffer) with no selection; one unblocked `q @ g.T` is recorded beside it. Ours, FAISS and the
GEMMs are timed in interleaved rounds (`--repeats`), each call after a short pause (both libraries'
thread pools spin-wait after a call), and the ratio to FAISS is also given per round, since a shared
machine's speed drifts between rounds. The BLAS kernel in use is recorded: on this workplace
OPENBLAS_CORETYPE is preset to Haswell, which slows GEMM; the command above unsets it for this
process only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from fashion_match.bench.machine import machine_info
from fashion_match.bench.records import add_output_args, output_path
from fashion_match.fileio import write_json_atomic
from fashion_match.runtime.search import GALLERY_BLOCK, QUERY_CHUNK, topk_exact

ROOT = Path(__file__).resolve().parents[1]


def blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [
        {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")} for i in threadpool_info()
    ]


def naive_search(q: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    dist = np.linalg.norm(gallery - q[None, :], axis=1)
    return np.argsort(dist)[:k]


def faiss_flat(g: np.ndarray) -> tuple[object, str, int] | None:
    """FAISS `IndexFlatIP` over the same vectors (None when faiss is not installed)."""
    try:
        import faiss
    except ImportError:
        return None
    index = faiss.IndexFlatIP(g.shape[1])
    index.add(g)
    return index, faiss.__version__, faiss.omp_get_max_threads()


def blocked_gemm(q: np.ndarray, g: np.ndarray) -> None:
    """The GEMM our search runs, block for block into the same buffer, without any selection."""
    buf = np.empty((min(QUERY_CHUNK, len(q)), min(GALLERY_BLOCK, len(g))), np.float32)
    for s in range(0, len(q), QUERY_CHUNK):
        qc = q[s : s + QUERY_CHUNK]
        for b in range(0, len(g), GALLERY_BLOCK):
            blk = g[b : b + GALLERY_BLOCK]
            np.matmul(qc, blk.T, out=buf[: len(qc), : len(blk)])


# OpenBLAS's and FAISS's OpenMP threads spin-wait after a call: a pause keeps one's spinning out of
# the other's time
PAUSE_S = 0.3


def timed(f) -> float:  # noqa: ANN001 - a benchmark helper
    time.sleep(PAUSE_S)
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gallery", type=int, default=139_709)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=9, help="interleaved rounds")
    ap.add_argument("--naive-queries", type=int, default=20)
    add_output_args(ap, "search_speed.json")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    g = rng.standard_normal((args.gallery, args.dim), dtype=np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = g[rng.choice(args.gallery, args.queries, replace=False)] + 0.05 * rng.standard_normal(
        (args.queries, args.dim), dtype=np.float32
    )
    q /= np.linalg.norm(q, axis=1, keepdims=True)

    flat = faiss_flat(g)
    topk_exact(q[:QUERY_CHUNK], [g], args.k)  # warm-up: page in the gallery, spin up BLAS threads
    if flat:
        flat[0].search(q[:QUERY_CHUNK], args.k)
    # interleaved rounds: each round times ours, FAISS and the bare GEMMs back to back, so a slow
    # moment of a shared machine lands on all of them and the per-round ratios stay comparable
    times, faiss_times, gemm, full_gemm, fi = [], [], [], [], None
    for _ in range(args.repeats):
        times.append(timed(lambda: topk_exact(q, [g], args.k)))
        if flat:
            time.sleep(PAUSE_S)
            t = time.perf_counter()
            _, fi = flat[0].search(q, args.k)
            faiss_times.append(time.perf_counter() - t)
        gemm.append(timed(lambda: blocked_gemm(q, g)))
        full_gemm.append(timed(lambda: q @ g.T))
    scores, ids = topk_exact(q, [g], args.k)
    per_q = 1000 / args.queries
    ms_per_query = statistics.median(times) * per_q
    gemm_ms = statistics.median(gemm) * per_q
    faiss_row = None
    if flat:
        ratios = [a / b for a, b in zip(times, faiss_times, strict=True)]
        faiss_row = {
            "version": flat[1],
            "threads": flat[2],
            "ms_per_query": round(statistics.median(faiss_times) * per_q, 4),
            "runs_ms_per_query": [round(x * per_q, 4) for x in faiss_times],
            "identical_top_k": bool(np.array_equal(fi, ids)),
            "identical_rows": float(np.mean(np.all(fi == ids, axis=1))),
            "ours_over_faiss_per_round": [round(x, 3) for x in ratios],
            "ours_over_faiss_median_of_rounds": round(statistics.median(ratios), 3),
        }

    t = time.perf_counter()
    naive = [naive_search(q[i], g, args.k) for i in range(args.naive_queries)]
    naive_ms = (time.perf_counter() - t) / args.naive_queries * 1000
    exact = all(np.array_equal(naive[i], ids[i]) for i in range(args.naive_queries))

    # float16 storage: the same search over float16-rounded gallery vectors, against float32's answer
    _, ids16 = topk_exact(q, [g.astype(np.float16).astype(np.float32)], args.k)
    f16_recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ids16, ids, strict=True)]))
    f16_top1 = float(np.mean(ids16[:, 0] == ids[:, 0]))

    result = {
        "ms_per_query": round(ms_per_query, 4),
        "speedup_vs_naive": round(naive_ms / ms_per_query, 1),
        "exact": bool(exact),
        "naive_ms_per_query": round(naive_ms, 3),
        "gemm_only_ms_per_query": round(gemm_ms, 4),
        "float16_recall_at_k_vs_float32": round(f16_recall, 5),
        "float16_top1_agreement": round(f16_top1, 5),
        "runs_ms_per_query": [round(x * per_q, 4) for x in times],
        "vs_gemm": round(ms_per_query / gemm_ms, 3),
        "faiss_flat_ip": faiss_row,
        "vs_faiss": round(ms_per_query / faiss_row["ms_per_query"], 3) if faiss_row else None,
        "gemm_runs_ms_per_query": [round(x * per_q, 4) for x in gemm],
        "full_gemm_ms_per_query": round(statistics.median(full_gemm) * per_q, 4),
        "rounds": args.repeats,
        "gallery": args.gallery,
        "dim": args.dim,
        "queries": args.queries,
        "k": args.k,
        "query_chunk": QUERY_CHUNK,
        "gallery_block": GALLERY_BLOCK,
        "naive_queries_timed": args.naive_queries,
        "blas": blas_info(),
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    out_path = output_path(args, ROOT / "benchmarks/results/search_speed.json")
    if out_path:
        write_json_atomic(out_path, result)
    if not args.json:
        print(
            f"exact top-{args.k}: {ms_per_query:.3f} ms/query (GEMM alone {gemm_ms:.3f}); naive {naive_ms:.1f} "
            f"ms/query; speedup {result['speedup_vs_naive']}x; exact={exact}" + (f" -> {out_path}" if out_path else "")
        )
    keys = (
        "ms_per_query",
        "speedup_vs_naive",
        "exact",
        "naive_ms_per_query",
        "gemm_only_ms_per_query",
        "float16_recall_at_k_vs_float32",
        "float16_top1_agreement",
        "vs_gemm",
        "vs_faiss",
    )
    print(json.dumps({k: result[k] for k in keys}))


if __name__ == "__main__":
    main()
