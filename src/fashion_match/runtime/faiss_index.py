"""FAISS indexes built once, kept inside the index folder and loaded at search time.

`fm-index build/add --faiss KIND` trains and fills a FAISS index over the index's shards and
writes it to `INDEX/faiss/KIND.faiss` (atomically), listed in index.json with its sha256, the
sha256 of the shards it was built from, its parameters and its recall against exact search,
measured once at build time on a leave-one-out sample of the gallery. An add rebuilds it; a FAISS
file whose shards changed, whose hash differs or whose size disagrees is refused, never searched.

FAISS reads its own binary format (no pickle); the file is hashed against index.json before
FAISS parses it, so a damaged file is refused before any FAISS code reads it.

Parameters default from the gallery: IVF lists = 4 sqrt(n), never more than n / 39 (FAISS wants 39
training points per list), 16 of them visited; PQ sub-quantizers = the largest divisor of the
dimension up to 64, with 8 bits each (fewer on small galleries); HNSW: 32 links, efSearch 64.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.errors import MissingDependency, UsageError
from fashion_match.fileio import atomic_open, sha256_file
from fashion_match.runtime.index_format import IndexMismatch
from fashion_match.runtime.search import topk_exact

KINDS = ("ivf-flat", "ivf-pq", "hnsw")
FAISS_DIR = "faiss"
TRAIN_SIZE = 100_000  # vectors a quantizer trains on (a seeded sample of bigger galleries)
RECALL_SAMPLE = 500  # gallery vectors that query the rest once, at build time
RECALL_K = 10
POINTS_PER_CENTROID = 39  # FAISS's own minimum; below it, it warns and clusters badly


def faiss_module() -> Any:
    try:
        import faiss
    except ImportError as e:
        raise MissingDependency("FAISS indexes need faiss: pip install 'fashion-match[faiss]' (faiss-cpu)") from e
    return faiss


def default_params(kind: str, n: int, d: int, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parameters of a `kind` index over n x d vectors: `given` ones win, the rest fit the data."""
    given = {k: v for k, v in (given or {}).items() if v is not None}
    if kind not in KINDS:
        raise UsageError(f"--faiss {kind}: choose one of {', '.join(KINDS)}")
    if kind == "hnsw":
        return {"m": 32, "ef_search": 64} | {k: v for k, v in given.items() if k in ("ef_search",)}
    nlist = int(given.get("nlist") or max(1, min(int(4 * math.sqrt(n)), n // POINTS_PER_CENTROID)))
    if nlist * POINTS_PER_CENTROID > n and "nlist" in given:
        raise UsageError(f"--nlist {nlist}: {n} vectors train at most {max(1, n // POINTS_PER_CENTROID)} lists")
    out: dict[str, Any] = {"nlist": nlist, "nprobe": int(given.get("nprobe") or min(16, nlist))}
    if kind == "ivf-pq":
        m = int(given.get("pq_m") or max(k for k in range(1, 65) if d % k == 0))
        if d % m:
            divisors = [k for k in range(1, min(d, 256) + 1) if d % k == 0]
            raise UsageError(
                f"--pq-m {m}: must divide the embedding dim {d} (e.g. {', '.join(map(str, divisors[-6:]))})"
            )
        bits = 8 if n >= 256 * POINTS_PER_CENTROID else int(math.log2(max(1, n // POINTS_PER_CENTROID)))
        if bits < 4:
            raise UsageError(
                f"--faiss ivf-pq: {n} vectors are too few to train product quantizers; use ivf-flat or exact"
            )
        out |= {"pq_m": m, "pq_bits": bits}
    return out


def make_index(kind: str, d: int, params: dict[str, Any]) -> Any:
    faiss = faiss_module()
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, params["m"], ip)
        index.hnsw.efSearch = params["ef_search"]
        return index
    quantizer = faiss.IndexFlatIP(d)
    if kind == "ivf-flat":
        index = faiss.IndexIVFFlat(quantizer, d, params["nlist"], ip)
    else:
        index = faiss.IndexIVFPQ(quantizer, d, params["nlist"], params["pq_m"], params["pq_bits"], ip)
    index.nprobe = params["nprobe"]  # faiss's Python layer keeps `quantizer` alive with the index
    return index


def train_and_fill(index: Any, x: np.ndarray, seed: int = 0) -> Any:
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = x if len(x) <= TRAIN_SIZE else x[np.sort(rng.choice(len(x), TRAIN_SIZE, replace=False))]
        index.train(sample)
    index.add(x)
    return index


def set_search_params(index: Any, kind: str, nprobe: int | None = None, ef_search: int | None = None) -> None:
    if kind == "hnsw" and ef_search:
        index.hnsw.efSearch = ef_search
    elif kind != "hnsw" and nprobe:
        index.nprobe = nprobe


def shards_digest(shards: list[dict[str, Any]]) -> str:
    """One sha256 over the shards' own sha256s, in order: what a FAISS index was built from."""
    h = hashlib.sha256()
    for sh in shards:
        h.update(sh["sha256"].encode())
    return h.hexdigest()


def leave_one_out_recall(index: Any, x: np.ndarray, k: int = RECALL_K, sample: int = RECALL_SAMPLE) -> dict[str, Any]:
    """Recall of `index` against exact search: evenly spaced gallery vectors query the gallery,
    each one's own row left out of both answers; recall@k = share of the exact top-k found."""
    n = len(x)
    rows = np.unique(np.linspace(0, n - 1, min(sample, n)).astype(np.int64))
    q = x[rows]
    _, exact = topk_exact(q, [x], k + 1)
    _, approx = index.search(np.ascontiguousarray(q), k + 1)

    def others(ids: np.ndarray, own: int) -> list[int]:
        return [int(i) for i in ids if i != own and i >= 0][:k]

    r_k = r_1 = 0.0
    for own, e, a in zip(rows, exact, approx, strict=True):
        e_, a_ = others(e, own), others(a, own)
        if not e_:
            continue
        r_k += len(set(e_) & set(a_)) / len(e_)
        r_1 += float(bool(a_) and a_[0] == e_[0])
    m = max(1, len(rows))
    return {
        f"recall_at_{k}": round(r_k / m, 4),
        "recall_at_1": round(r_1 / m, 4),
        "queries": int(len(rows)),
        "how": "evenly spaced gallery vectors query the rest (their own row left out) against exact search",
    }


def build_faiss(
    folder: Path, man: dict[str, Any], blocks: list[np.ndarray], kind: str, given: dict[str, Any]
) -> dict[str, Any]:
    """Train, fill and write `INDEX/faiss/<kind>.faiss`; returns its index.json entry."""
    from fashion_match.progress import stage

    faiss = faiss_module()
    x = np.ascontiguousarray(np.concatenate([np.asarray(b, np.float32) for b in blocks]))
    n, d = x.shape
    params = default_params(kind, n, d, given)
    t0 = time.perf_counter()
    with stage(f"faiss {kind}: training and adding {n:,} vectors ({params})"):
        index = train_and_fill(make_index(kind, d, params), x)
    build_s = time.perf_counter() - t0
    with stage(f"faiss {kind}: recall against exact search"):
        recall = leave_one_out_recall(index, x)
    name = f"{FAISS_DIR}/{kind}.faiss"
    data = faiss.serialize_index(index)
    with atomic_open(folder / name, "wb") as f:
        f.write(np.asarray(data).tobytes())
    return {
        "kind": kind,
        "file": name,
        "sha256": sha256_file(folder / name),
        "bytes": (folder / name).stat().st_size,
        "rows": int(n),
        "shards_sha256": shards_digest(man["shards"]),
        "params": params,
        "given": {k: v for k, v in given.items() if v is not None},
        "recall": recall,
        "build_s": round(build_s, 2),
        "faiss_version": getattr(faiss, "__version__", "unknown"),
    }


def load_faiss(folder: Path, man: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The FAISS index listed in index.json, checked against its shards, size and hash first."""
    from fashion_match.schema import field

    where = f"{folder / 'index.json'} faiss"
    entry = man.get("faiss")
    if entry is None:
        raise UsageError(
            f"{folder}: has no FAISS index; add one with 'fm-index add {folder} --faiss ivf-flat' (or ivf-pq, hnsw)"
        )
    for key in ("kind", "file", "sha256", "shards_sha256"):
        field(entry, key, "string", where, IndexMismatch)
    field(entry, "rows", "integer", where, IndexMismatch, low=0)
    field(entry, "params", "object", where, IndexMismatch)
    rebuild = f"rebuild it: fm-index add {folder} --faiss {entry['kind']}"
    if entry["kind"] not in KINDS or entry["file"] != f"{FAISS_DIR}/{entry['kind']}.faiss":
        raise IndexMismatch(f"{where}: kind {entry['kind']!r} / file {entry['file']!r} is not one this version writes")
    if entry["shards_sha256"] != shards_digest(man["shards"]):
        raise IndexMismatch(f"{where}: built from other shards than the index holds now; {rebuild}")
    path = folder / entry["file"]
    if not path.is_file() or sha256_file(path) != entry["sha256"]:
        raise IndexMismatch(f"{path}: missing or its sha256 differs from index.json; {rebuild}")
    faiss = faiss_module()
    try:
        index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
    except RuntimeError as e:
        raise IndexMismatch(f"{path}: FAISS cannot read it ({str(e).splitlines()[0][:160]}); {rebuild}") from None
    if index.ntotal != entry["rows"] or index.d != man["embedding_dim"]:
        raise IndexMismatch(f"{path}: holds {index.ntotal} x {index.d}, index.json says {entry['rows']}; {rebuild}")
    return index, entry
