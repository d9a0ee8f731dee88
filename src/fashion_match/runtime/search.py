"""Exact top-k by inner product: GEMM plus partial selection, chunked so memory stays bounded.

Embeddings are L2-normalised, so inner product is cosine similarity. Results are exact and
deterministic: higher similarity first, ties broken by the lower gallery index — the same
order as a full stable sort (`topk_naive`), which the tests compare against.

Selection costs as much as the GEMM if done naively (a partition of every row of every
block). Instead each query keeps its k-th best score as a running threshold: a later block
only contributes entries strictly above it (later entries have higher indices, so they lose
ties), and per-segment maxima raise that threshold before any entry is gathered (see
`_select_block`), so even the first block costs one pass plus a gather of k segments.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

QUERY_CHUNK = 1024  # queries per GEMM: the gallery streams from memory once per 1,024 queries (64 MiB of scores)
GALLERY_BLOCK = 16384


def topk_naive(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: full similarity matrix, full stable sort. Slow; for tests and checks."""
    sims = queries.astype(np.float32) @ gallery.astype(np.float32).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order.astype(np.int64)


def merge_topk(
    best_s: np.ndarray, best_i: np.ndarray, rows: np.ndarray, scores: np.ndarray, idx: np.ndarray, k: int
) -> None:
    """Merge candidates (rows, scores, idx) into the per-row top-k lists, in place."""
    if not len(rows):
        return
    touched = np.unique(rows)
    old_r = np.repeat(touched, k)
    all_r = np.concatenate([old_r, rows])
    all_s = np.concatenate([best_s[touched].ravel(), scores])
    all_i = np.concatenate([best_i[touched].ravel(), idx])
    # empty slots hold (-inf, huge index) and sort last; order: row, then -score, then index
    order = np.lexsort((all_i, -all_s, all_r))
    all_r, all_s, all_i = all_r[order], all_s[order], all_i[order]
    starts = np.searchsorted(all_r, touched)
    take = (starts[:, None] + np.arange(k)[None, :]).ravel()
    best_s[touched] = all_s[take].reshape(-1, k)
    best_i[touched] = all_i[take].reshape(-1, k)


SEGMENTS = 512  # segments per block row; column c belongs to segment c % SEGMENTS (interleaved)


def _select_block(sims: np.ndarray, offset: int, best_s: np.ndarray, best_i: np.ndarray, k: int) -> None:
    """Fold one block of scores (rows = queries, cols = gallery offset..) into the top-k lists.

    One pass over the block computes per-segment maxima. The k-th largest segment maximum is a
    lower bound of the block's k-th best score (the k maxima are k entries at least that high), so
    it raises each row's threshold before any entry is looked at: only the few segments whose
    maximum clears the raised threshold are gathered, never a partition of whole rows. Entries equal
    to the old threshold lose to the kept ones (higher index); entries equal to a raised one may not,
    so those are kept: `x >= raised and x > old` keeps exactly the entries that can still be in the top k.

    Segments are interleaved (every SEGMENTS-th column): the maxima are then an elementwise maximum
    of contiguous rows, which numpy runs at memory speed even for 512 narrow segments, where a
    reduction over 32-wide contiguous runs is several times slower. Many narrow segments keep the
    gather small: about k of them clear the raised threshold, each W = n_cols / SEGMENTS entries.
    """
    n_rows, n_cols = sims.shape
    thr = best_s[:, k - 1]
    n_seg = min(SEGMENTS, n_cols)
    width = n_cols // n_seg
    body = n_seg * width
    parts_r: list[np.ndarray] = []
    parts_c: list[np.ndarray] = []
    segs = sims[:, :body].reshape(n_rows, width, n_seg)  # a view: only the last axis is split
    segmax = segs.max(axis=1)
    raised = thr
    if n_seg >= k:
        raised = np.maximum(thr, np.partition(segmax, n_seg - k, axis=1)[:, n_seg - k])
    seg_r, seg_s = np.nonzero((segmax >= raised[:, None]) & (segmax > thr[:, None]))
    if len(seg_r):
        vals = segs[seg_r, :, seg_s]  # (segments, width): each segment's entries
        a, b = np.nonzero((vals >= raised[seg_r, None]) & (vals > thr[seg_r, None]))
        parts_r.append(seg_r[a])
        parts_c.append(b * n_seg + seg_s[a])
    if body < n_cols:
        tail = sims[:, body:]
        r, c = np.nonzero((tail >= raised[:, None]) & (tail > thr[:, None]))
        parts_r.append(r)
        parts_c.append(c + body)
    if parts_r:
        rows, cols = np.concatenate(parts_r), np.concatenate(parts_c)
        merge_topk(best_s, best_i, rows, sims[rows, cols], cols.astype(np.int64) + offset, k)


def topk_exact(
    queries: np.ndarray,
    blocks: Sequence[np.ndarray],
    k: int,
    *,
    query_chunk: int = QUERY_CHUNK,
    gallery_block: int = GALLERY_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, indices) of each query over the gallery given as consecutive row blocks.

    `blocks` may be memory-mapped shards; indices count rows across all blocks. Rows beyond the
    gallery size hold score -inf and index -1.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    n_q = len(q)
    out_s = np.full((n_q, k), -np.inf, np.float32)
    out_i = np.full((n_q, k), -1, np.int64)
    if n_q == 0 or k <= 0:
        return out_s, out_i
    # split shards into cache-sized blocks, keeping global offsets
    pieces: list[tuple[int, np.ndarray]] = []
    offset = 0
    for b in blocks:
        for s in range(0, len(b), gallery_block):
            pieces.append((offset + s, b[s : s + gallery_block]))
        offset += len(b)
    sentinel = np.iinfo(np.int64).max
    for q0 in range(0, n_q, query_chunk):
        qc = q[q0 : q0 + query_chunk]
        best_s = np.full((len(qc), k), -np.inf, np.float32)
        best_i = np.full((len(qc), k), sentinel, np.int64)
        buf = np.empty((len(qc), min(gallery_block, max((len(p) for _, p in pieces), default=1))), np.float32)
        for off, piece in pieces:
            g = piece if piece.dtype == np.float32 else piece.astype(np.float32)
            sims = np.matmul(qc, g.T, out=buf[:, : len(g)])
            _select_block(sims, off, best_s, best_i, k)
        best_i[best_i == sentinel] = -1
        out_s[q0 : q0 + len(qc)] = best_s
        out_i[q0 : q0 + len(qc)] = best_i
    return out_s, out_i
