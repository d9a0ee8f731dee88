"""Evaluation on a dataset's retrieval protocol, with exactly the runtime's preprocessing."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fashion_match.data.images import iter_batches
from fashion_match.data.records import Dataset, Record
from fashion_match.metrics import retrieval_report, topk_accuracy
from fashion_match.models.embedding import EmbeddingModel
from fashion_match.train.augment import eval_batch


def spaced(indices: list[int], n: int | None) -> list[int]:
    """An evenly spaced subset of at most n indices (all of them for None)."""
    if n is None or n >= len(indices):
        return list(indices)
    pick = np.linspace(0, len(indices) - 1, n).round().astype(int)
    return [indices[i] for i in pick]


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


def evaluate(
    model: EmbeddingModel,
    ds: Dataset,
    device: torch.device,
    *,
    queries: int | None = None,
    gallery: int | None = None,
    categories: list[str] | None = None,
) -> dict[str, Any]:
    p = ds.protocol
    q_idx, g_idx = spaced(p.queries, queries), spaced(p.gallery, gallery)
    q_recs, g_recs = [ds.records[i] for i in q_idx], [ds.records[i] for i in g_idx]
    q_emb, q_logits, q_ok = embed_records(model, q_recs, device)
    g_emb, _, g_ok = embed_records(model, g_recs, device)
    key = p.match_on
    qk = np.array([getattr(q_recs[i], key) for i in q_ok], dtype=object)
    gk = np.array([getattr(g_recs[i], key) for i in g_ok], dtype=object)
    q_ids = np.array([q_idx[i] for i in q_ok]) if p.exclude_self else None
    g_ids = np.array([g_idx[i] for i in g_ok]) if p.exclude_self else None
    report = retrieval_report(q_emb, qk, g_emb, gk, q_ids=q_ids, g_ids=g_ids)
    report["protocol"] = p.description + (" (subsampled)" if queries or gallery else "")
    if q_logits is not None and categories:
        code = {c: n for n, c in enumerate(categories)}
        lab = np.array([code.get(q_recs[i].category or "", -1) for i in q_ok])
        ok = lab >= 0
        if ok.any():
            report.update({f"category_{k}": v for k, v in topk_accuracy(q_logits[ok], lab[ok]).items()})
    return report
