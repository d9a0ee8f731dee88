"""What the served models compute, request by request, with no Triton in sight (tested directly).

Triton's dynamic batcher hands each function a list of requests; every request holds a batch of
encoded images (bytes: JPEG, PNG, ... never a path), so one call decodes every image of every
request together on a thread pool and runs the model once. A bad image is that image's error: its
row gets an `error` string (empty when fine) and zeros, and every other row its answer; Triton
would fail the whole merged batch on an exception, the other clients' requests with it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.data.images import load_batch

Request = Mapping[str, np.ndarray]
MAX_IMAGE_BYTES = 16 * 1024 * 1024  # an encoded photo from a shop's site is far below this
MAX_PIXELS = 40_000_000  # decoded-size guard on top of the resize guard of data.images
MAX_K = 100


def _blobs(arr: np.ndarray) -> list[Any]:
    return [row[0] if isinstance(row, np.ndarray | list) else row for row in arr.reshape(len(arr), -1)]


_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n")


def unwrap(blob: bytes) -> bytes:
    """An image's bytes as sent: raw (binary protocol, tritonclient) or base64 text (the KServe v2
    JSON protocol carries BYTES as strings, so curl sends `base64 -w0 photo.jpg`). No encoded image
    format starts with a base64 character, so the two cannot be confused."""
    if blob[:1] and blob[0] in _B64:
        import base64
        import binascii

        try:
            return base64.b64decode(b"".join(blob.split()), validate=True)
        except (binascii.Error, ValueError):
            return blob  # not base64 either: the decoder says what it is not
    return blob


@dataclass
class Decoded:
    pixels: np.ndarray  # (n_ok, S, S, 3) uint8
    ok: list[int]  # the image positions each row of pixels belongs to
    errors: dict[int, str]  # image position -> why it was not decoded


class Service:
    """The served state: a Matcher, the decoding pool and, with an index, the resident index."""

    def __init__(
        self,
        matcher: Any,
        *,
        index: str | Path | None = None,
        engine: str = "exact",
        workers: int = 4,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.matcher, self.max_image_bytes, self.max_pixels = matcher, max_image_bytes, max_pixels
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fm-decode")
        self.index = ResidentIndex(index, matcher, engine) if index is not None else None
        self.dim = matcher.dim
        from fashion_match.runtime.tagging import output_dims

        self.dims = output_dims(matcher.manifest)  # every graph output's shape, read once

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    # --- decoding, shared by every model ------------------------------------------------------
    def decode(self, blobs: Sequence[Any]) -> Decoded:
        errors: dict[int, str] = {}
        todo: list[int] = []
        for i, b in enumerate(blobs):
            if not isinstance(b, bytes | np.bytes_):
                errors[i] = f"image {i}: not bytes ({type(b).__name__}); send the encoded file's bytes"
            elif not len(b):
                errors[i] = f"image {i}: empty"
            elif len(b) > self.max_image_bytes * 4 // 3 + 4:  # before base64 decoding
                errors[i] = f"image {i}: {len(b):,} bytes, over the {self.max_image_bytes:,}-byte limit"
            else:
                todo.append(i)
        raw = {i: unwrap(bytes(blobs[i])) for i in todo}
        for i in [i for i in todo if len(raw[i]) > self.max_image_bytes]:
            errors[i] = f"image {i}: {len(raw[i]):,} bytes, over the {self.max_image_bytes:,}-byte limit"
        todo = [i for i in todo if i not in errors]
        batch = load_batch(
            [raw[i] for i in todo],
            self.matcher.manifest.preprocess,
            max_pixels=self.max_pixels,
            pool=self.pool,
        )
        ok = [todo[i] for i in batch.indices]
        decoded = set(batch.indices)
        failed = [todo[i] for i in range(len(todo)) if i not in decoded]
        for pos, bad in zip(failed, batch.bad, strict=True):  # both in input order
            errors[pos] = f"image {pos}: {bad.reason}"
        return Decoded(batch.pixels, ok, errors)

    def _outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        be = self.matcher.backend
        if not len(pixels):
            return {}
        return be.outputs(pixels) if be.reads_outputs and len(self.dims) > 1 else {"embedding": be.embed(pixels)}

    # --- the served models --------------------------------------------------------------------
    def embed(self, requests: Sequence[Request]) -> list[dict[str, np.ndarray]]:
        """fm_embed: per image its item embedding (and the model's tag and space outputs)."""
        sizes = [len(r["image"]) for r in requests]
        blobs = [b for r in requests for b in _blobs(r["image"])]
        d = self.decode(blobs)
        got = self._outputs(d.pixels)
        full = {n: np.zeros((len(blobs), *d), np.float32) for n, d in self.dims.items()}
        for n, arr in got.items():
            full[n][d.ok] = arr
        return _split(full | {"error": _errors(len(blobs), d.errors)}, sizes)

    def match(self, requests: Sequence[Request]) -> list[dict[str, np.ndarray]]:
        """fm_match: per pair (image_a, image_b) the similarity, threshold and verdict."""
        sizes = [len(r["image_a"]) for r in requests]
        a = [b for r in requests for b in _blobs(r["image_a"])]
        b = [b for r in requests for b in _blobs(r["image_b"])]
        if [len(r["image_b"]) for r in requests] != sizes:
            raise ValueError("image_a and image_b differ in batch size")  # Triton rejects this before us
        d = self.decode(a + b)
        emb = np.zeros((len(a) + len(b), self.dim), np.float32)
        if d.ok:
            emb[d.ok] = self.matcher.backend.embed(d.pixels)
        sims = np.sum(emb[: len(a)] * emb[len(a) :], axis=1)
        errors = {i: d.errors.get(i) or d.errors.get(i + len(a)) or "" for i in range(len(a))}
        errors = {i: e for i, e in errors.items() if e}
        sims[list(errors)] = 0.0
        t = float(self.matcher.threshold)
        out = {
            "similarity": sims.reshape(-1, 1).astype(np.float32),
            "threshold": np.full((len(a), 1), t, np.float32),
            "match": (sims >= t).reshape(-1, 1) & ~np.isin(np.arange(len(a)), list(errors)).reshape(-1, 1),
            "error": _errors(len(a), errors),
        }
        return _split(out, sizes)

    def tag(self, requests: Sequence[Request]) -> list[dict[str, np.ndarray]]:
        """fm_tag: per image its attribute values and tags with probabilities, as JSON (fm-tag --json's)."""
        import json

        from fashion_match.runtime.tagging import TAGS_OUTPUT, read_tags, tag_blocks

        blocks = tag_blocks(self.matcher.manifest)
        sizes = [len(r["image"]) for r in requests]
        tops = [int(np.asarray(r["top"]).reshape(-1)[0]) if "top" in r else 3 for r in requests]
        blobs = [b for r in requests for b in _blobs(r["image"])]
        d = self.decode(blobs)
        probs = self._outputs(d.pixels).get(TAGS_OUTPUT)
        text = np.full((len(blobs), 1), b"", dtype=object)
        pos_top = [t for t, n in zip(tops, sizes, strict=True) for _ in range(n)]
        for row, pos in enumerate(d.ok):
            assert probs is not None
            tags = read_tags(probs[row : row + 1], blocks, top=max(1, min(pos_top[pos], 50)))[0]
            text[pos, 0] = json.dumps(tags, allow_nan=False).encode()
        return _split({"tags": text, "error": _errors(len(blobs), d.errors)}, sizes)

    def search(self, requests: Sequence[Request]) -> list[dict[str, np.ndarray]]:
        """fm_search: per image the top-k gallery ids, item ids and similarities from the resident index."""
        if self.index is None:
            raise RuntimeError("fm_search is bound only with an index")
        snap = self.index.current()  # one index for the whole batch: never answers from two
        out = []
        blobs_per = [_blobs(r["image"]) for r in requests]
        d = self.decode([b for bs in blobs_per for b in bs])
        emb = np.zeros((sum(map(len, blobs_per)), snap.searcher.dim), np.float32)
        if d.ok:
            emb[d.ok] = snap.searcher.query_form(snap.searcher.embed_pixels(d.pixels))
        start = 0
        for r, bs in zip(requests, blobs_per, strict=True):
            n = len(bs)
            k_req = int(np.asarray(r["k"]).reshape(-1)[0]) if "k" in r else 10
            k = max(1, min(MAX_K, k_req, len(snap.index)))
            scores, ids = snap.engine.search(emb[start : start + n], k)
            errs = {i - start: e for i, e in d.errors.items() if start <= i < start + n}
            out.append(snap.rows(scores, ids, errs, snap.searcher.threshold, k_req))
            start += n
        return out


class ResidentIndex:
    """The served index, swapped whole when `fm-index add` (or build --overwrite) rewrites it: a
    request uses the snapshot it started with, so answers never come from a mix of two."""

    def __init__(self, folder: str | Path, matcher: Any, engine: str) -> None:
        self.folder, self.matcher, self.engine = Path(folder), matcher, engine
        self._lock = threading.Lock()
        self._searchers: dict[str | None, Any] = {None: matcher}
        self._snap = self._load()

    def _searcher(self, space: str | None) -> Any:
        """The matcher for the index's space: the item matcher, or one reading that space (its own
        session: an index of another space after a rebuild is served without a restart)."""
        if space not in self._searchers:
            from fashion_match.runtime.matcher import Matcher

            m = self.matcher
            self._searchers[space] = Matcher(
                m.manifest.folder, backend=m.info.backend, precision=m.info.precision, device=m.device, space=space
            )
        return self._searchers[space]

    def _stamp(self) -> tuple[int, int]:
        from fashion_match.runtime.index_format import INDEX_MANIFEST

        st = (self.folder / INDEX_MANIFEST).stat()
        return st.st_mtime_ns, st.st_ino  # index.json is replaced last and atomically by every writer

    def _load(self) -> Snapshot:
        from fashion_match.runtime.index import Index
        from fashion_match.runtime.index_build import model_binding

        stamp = self._stamp()
        idx = Index.open(self.folder)
        m = self._searcher(idx.manifest.get("space"))
        binding = model_binding(m.manifest, m.info.backend, m.info.precision, m.space)
        idx.check_model(binding["model_id"], binding["embedding_dim"], binding.get("space"))
        return Snapshot(idx, idx.engine(self.engine), m, stamp)

    def current(self) -> Snapshot:
        """The index as it is now on disk (reloaded when its index.json changed)."""
        try:
            stamp = self._stamp()
        except OSError:
            return self._snap  # mid-swap or removed: keep serving what is loaded
        if stamp != self._snap.stamp:
            with self._lock:
                if stamp != self._snap.stamp:
                    self._snap = self._load()
        return self._snap


@dataclass
class Snapshot:
    index: Any
    engine: Any
    searcher: Any  # the Matcher whose vectors this index holds
    stamp: tuple[int, int]

    def rows(
        self, scores: np.ndarray, ids: np.ndarray, errors: dict[int, str], threshold: float, k_req: int
    ) -> dict[str, np.ndarray]:
        n, k = ids.shape
        gid = np.full((n, k), b"", dtype=object)
        item = np.full((n, k), b"", dtype=object)
        # unit rows and unit queries: only rounding passes 1
        sc = np.where(ids >= 0, np.clip(scores, -1.0, 1.0), -2.0).astype(np.float32)
        for i in range(n):
            for j in range(k):
                if ids[i, j] >= 0 and i not in errors:
                    e = self.index.entries[ids[i, j]]
                    gid[i, j], item[i, j] = e.id.encode(), str(e.item_id or "").encode()
        for i in errors:
            sc[i] = -2.0
        if not 1 <= k_req <= MAX_K:
            errors = {i: f"k={k_req}: give 1..{MAX_K}" for i in range(n)}
        return {
            "ids": gid,
            "item_ids": item,
            "scores": sc,
            "threshold": np.full((n, 1), threshold, np.float32),
            "error": _errors(n, errors),
        }


def _errors(n: int, errors: dict[int, str]) -> np.ndarray:
    return np.array([[errors.get(i, "").encode()] for i in range(n)], dtype=object).reshape(n, 1)


def _split(out: dict[str, np.ndarray], sizes: list[int]) -> list[dict[str, np.ndarray]]:
    bounds = np.cumsum([0, *sizes])
    return [{k: v[s:e] for k, v in out.items()} for s, e in zip(bounds[:-1], bounds[1:], strict=True)]
