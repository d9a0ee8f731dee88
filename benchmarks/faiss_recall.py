"""Recall versus latency of the FAISS indexes fm-index builds, against exact search.

    python benchmarks/faiss_recall.py [--n 139709] [--record]

Each FAISS kind is built as `fm-index build --faiss KIND` builds it (the same default parameters,
`runtime.faiss_index.default_params`), then searched at several nprobe / efSearch settings.
Data (synthetic; no gallery of this size exists offline): n x 512 unit vectors (n defaults to
deep-fashion-retrieval's gallery size, 139,709) drawn
around 20,000 random "item" centres, so near neighbours exist as in a real gallery; 1,000
queries are perturbed gallery vectors. Ground truth is exact search (`runtime.search`).
recall@10 = share of the exact top-10 found in the engine's top-10; recall@1 = top-1 agrees.
Timings are per query with all queries in one batch, after build; build time reported apart.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fashion_match.bench.machine import machine_info
from fashion_match.bench.records import add_output_args, output_path
from fashion_match.fileio import write_json_atomic
from fashion_match.runtime.engines import FaissEngine
from fashion_match.runtime.search import topk_exact

ROOT = Path(__file__).resolve().parents[1]


def data(n: int, d: int, n_q: int, centres: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d), dtype=np.float32)
    g = np.empty((n, d), np.float32)
    for s in range(0, n, 100_000):  # in chunks: keeps peak memory near the gallery's own size
        e = min(n, s + 100_000)
        g[s:e] = c[rng.integers(0, centres, e - s)] + 0.6 * rng.standard_normal((e - s, d), dtype=np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = g[rng.choice(n, n_q, replace=False)] + 0.03 * rng.standard_normal((n_q, d), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return g, q


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=139_709)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    add_output_args(ap, "faiss_recall.json (and .md)")
    args = ap.parse_args()
    g, q = data(args.n, args.dim, args.queries, 20_000)
    t = time.perf_counter()
    ex_s, ex_i = topk_exact(q, [g], args.k)
    exact_ms = (time.perf_counter() - t) / args.queries * 1000
    rows = [
        {
            "engine": "exact",
            "params": "",
            "build_s": 0.0,
            "ms_per_query": round(exact_ms, 3),
            "recall_at_1": 1.0,
            "recall_at_10": 1.0,
            "bytes_per_vector": args.dim * 4,
        }
    ]
    print(rows[-1], flush=True)
    sweeps = {
        "ivf-flat": ("nprobe", (1, 4, 16, 64)),
        "ivf-pq": ("nprobe", (1, 4, 16, 64)),
        "hnsw": ("ef_search", (16, 64, 256)),
    }
    for kind, (knob, values) in sweeps.items():
        t = time.perf_counter()
        eng = FaissEngine([g], kind)
        build_s = time.perf_counter() - t
        built = ", ".join(f"{k}={v}" for k, v in eng.params.items() if k != knob)
        p = eng.params
        bpv = (
            p["pq_m"] * p["pq_bits"] // 8 if kind == "ivf-pq" else args.dim * 4 + (2 * 32 * 4 if kind == "hnsw" else 0)
        )
        for value in values:
            eng.set_params(**{knob: value})
            eng.search(q[:10], args.k)
            t = time.perf_counter()
            _, ids = eng.search(q, args.k)
            ms = (time.perf_counter() - t) / args.queries * 1000
            r10 = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ids, ex_i, strict=True)]))
            r1 = float(np.mean(ids[:, 0] == ex_i[:, 0]))
            rows.append(
                {
                    "engine": f"faiss {kind}",
                    "params": f"{built}, {knob}={value}" + (" (the default)" if value == eng.params.get(knob) else ""),
                    "build_s": round(build_s, 1),
                    "ms_per_query": round(ms, 3),
                    "recall_at_1": round(r1, 4),
                    "recall_at_10": round(r10, 4),
                    "bytes_per_vector": bpv,
                }
            )
            print(rows[-1], flush=True)
        del eng
    result = {
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "k": args.k,
        "rows": rows,
        "command": "python benchmarks/faiss_recall.py --record",
        "bytes_per_vector": "ivf-pq: its codes; hnsw: the vector plus about 2 x 32 links of 4 bytes",
        "data": "synthetic: 20,000 random centres, gaussian spread 0.6 per dim, normalised; queries are "
        "gallery vectors plus noise 0.03",
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    out_path = output_path(args, ROOT / "benchmarks/results/faiss_recall.json")
    if out_path:
        write_json_atomic(out_path, result)
    md = [
        "| engine | params | build s | ms/query | recall@1 | recall@10 | bytes/vector |",
        "|---|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r['engine']} | {r['params']} | {r['build_s']} | {r['ms_per_query']} | {r['recall_at_1']} | "
        f"{r['recall_at_10']} | {r['bytes_per_vector']} |"
        for r in rows
    ]
    if out_path:
        out_path.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
