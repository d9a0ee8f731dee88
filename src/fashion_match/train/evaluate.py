"""Evaluation on a dataset's retrieval protocol, with exactly the runtime's preprocessing."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fashion_match.data.images import iter_batches
from fashion_match.data.records import Dataset, Record, retrieval_key, spaced
from fashion_match.metrics import retrieval_report, topk_accuracy
from fashion_match.models.embedding import EmbeddingModel
from fashion_match.train.augment import eval_batch


@torch.no_grad()
def embed_records(
    model: EmbeddingModel, records: list[Record], device: torch.device, batch_size: int = 128
) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """(embeddings, category logits or None, indices of the records that decoded)."""
    model.eval()
    embs, logits, kept = [], [], []
    for b in iter_batches([r.source for r in records], model.preprocess, batch_size, bboxes=[r.bbox for r in records]):
        if not b.indices:
            continue
        x = eval_batch(b.pixels, model.preprocess).to(device)
        e, lg = model.forward_with_logits(x)
        embs.append(e.float().cpu().numpy())
        if lg is not None:
            logits.append(lg.float().cpu().numpy())
        kept += b.indices
    d = model.embedding_dim
    return (
        np.concatenate(embs) if embs else np.zeros((0, d), np.float32),
        np.concatenate(logits) if logits else None,
        kept,
    )


def eval_indices(ds: Dataset, queries: int | None, gallery: int | None) -> tuple[list[int], list[int]]:
    return spaced(ds.protocol.queries, queries), spaced(ds.protocol.gallery, gallery)


def evaluate(
    model: EmbeddingModel,
    ds: Dataset,
    device: torch.device,
    *,
    queries: int | None = None,
    gallery: int | None = None,
    categories: list[str] | None = None,
) -> dict[str, Any]:
    """Embed the protocol's queries and gallery with `model` (runtime preprocessing) and score them."""
    q_idx, g_idx = eval_indices(ds, queries, gallery)
    q_emb, q_logits, q_ok = embed_records(model, [ds.records[i] for i in q_idx], device)
    g_emb, _, g_ok = embed_records(model, [ds.records[i] for i in g_idx], device)
    return score(
        ds,
        [q_idx[i] for i in q_ok],
        q_emb,
        q_logits,
        [g_idx[i] for i in g_ok],
        g_emb,
        categories,
        subsampled=bool(queries or gallery),
    )


def score(
    ds: Dataset,
    q_rec: list[int],
    q_emb: np.ndarray,
    q_logits: np.ndarray | None,
    g_rec: list[int],
    g_emb: np.ndarray,
    categories: list[str] | None,
    subsampled: bool = False,
) -> dict[str, Any]:
    """Metrics for embeddings of records `q_rec` (queries) and `g_rec` (gallery), by record index."""
    p = ds.protocol
    key = retrieval_key(ds, ds.format)
    qk = np.array([getattr(ds.records[i], key) for i in q_rec], dtype=object)
    gk = np.array([getattr(ds.records[i], key) for i in g_rec], dtype=object)
    q_ids = np.array(q_rec) if p.exclude_self else None
    g_ids = np.array(g_rec) if p.exclude_self else None
    report = retrieval_report(q_emb, qk, g_emb, gk, q_ids=q_ids, g_ids=g_ids)
    report["protocol"] = p.description + (" (subsampled)" if subsampled else "")
    if q_logits is not None and categories:
        code = {c: n for n, c in enumerate(categories)}
        lab = np.array([code.get(ds.records[i].category or "", -1) for i in q_rec])
        ok = lab >= 0
        if ok.any():
            report.update({f"category_{k}": v for k, v in topk_accuracy(q_logits[ok], lab[ok]).items()})
    return report
