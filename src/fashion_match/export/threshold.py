"""Calibrate the match threshold of an exported model on held-out labelled pairs.

Rule: maximum balanced accuracy over all (query, gallery) pairs of a dataset's protocol —
positives share the match key, negatives do not. The default data is the held-out end of the
`fmnist-c2s` test split (consumer photo vs shop photo), which training never sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.data.images import iter_batches
from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.data.records import Dataset, retrieval_key
from fashion_match.errors import ExportError
from fashion_match.export.onnx_cpu import onnx_embedder
from fashion_match.metrics import calibrate_threshold

DEFAULT_DATA = "fmnist-c2s"
DEFAULT_ITEMS = 1000


def held_out_pairs(ds: Dataset, items: int) -> tuple[list[int], list[int]]:
    """The last `items` protocol queries and the gallery records that share their keys.

    Taking the *end* of the protocol keeps calibration away from the first items, which the
    examples and the quick benchmarks use.
    """
    key = retrieval_key(ds, ds.format)
    queries = ds.protocol.queries[-items:]
    wanted = {getattr(ds.records[q], key) for q in queries}
    gallery = [g for g in ds.protocol.gallery if getattr(ds.records[g], key) in wanted]
    return queries, gallery


def embed_onnx(onnx_path: Path, sources: list[Any], spec: PreprocessSpec, batch_size: int = 64) -> np.ndarray:
    embed = onnx_embedder(onnx_path)
    out = []
    for b in iter_batches(sources, spec, batch_size):
        if b.bad:
            raise ExportError(f"calibration image unreadable: {b.bad[0]}")
        out.append(embed(b.pixels))
    return np.concatenate(out).astype(np.float32)


def calibrate_onnx(onnx_path: Path, spec: PreprocessSpec, data: str = DEFAULT_DATA, items: int = DEFAULT_ITEMS) -> dict:
    from fashion_match.data.spec import load_dataset

    ds = load_dataset(data)
    q_idx, g_idx = held_out_pairs(ds, items)
    if not q_idx or not g_idx:
        raise ExportError(f"calibration data {data!r} has no query/gallery pairs")
    q = embed_onnx(onnx_path, [ds.records[i].source for i in q_idx], spec)
    g = embed_onnx(onnx_path, [ds.records[i].source for i in g_idx], spec)
    key = retrieval_key(ds, data)
    same = (
        np.array([getattr(ds.records[i], key) for i in q_idx])[:, None]
        == np.array([getattr(ds.records[i], key) for i in g_idx])[None, :]
    )
    not_self = np.array(q_idx)[:, None] != np.array(g_idx)[None, :]
    sims = q @ g.T
    result = calibrate_threshold(sims[same & not_self], sims[~same & not_self])
    result.update(
        {
            "data": data,
            "queries": len(q_idx),
            "gallery": len(g_idx),
            "pairs": f"the last {len(q_idx)} protocol queries x gallery images of the same items",
        }
    )
    return result
