"""A gallery index: embeddings in .npy shards plus JSON, bound to the model that made them.

`index_format` says what is on disk and how it is checked; `index_build` writes it (one writer
at a time, resumable); this module opens and searches it. No pickle anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.data.images import ImageSource, source_name
from fashion_match.errors import UsageError
from fashion_match.runtime.index_build import WriteReport, add_to_index, build_index, model_binding
from fashion_match.runtime.index_format import (
    INDEX_MANIFEST,
    Entry,
    IndexMismatch,
    open_shard,
    read_manifest,
    read_meta,
    shard_path,
    verify_shard,
)
from fashion_match.runtime.search import topk_exact

# One public API: the Index class (index_build holds the implementation of build and add).
__all__ = ["Entry", "Index", "IndexMismatch", "SearchResult", "WriteReport"]


@dataclass
class SearchResult:
    query: str
    matches: list[dict[str, Any]]  # rank, id, path, item_id, similarity[, match]
    position: int = -1  # which of the queries it answers


@dataclass
class Index:
    folder: Path
    manifest: dict[str, Any]
    shards: list[np.ndarray] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # per row: what identifies the image (see index_build)
    report: WriteReport | None = None  # what the build or add that returned this index did

    # --- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | Path, *, verify: bool = False, mmap: bool = True) -> Index:
        """Open and check an index: every field typed, every shard's size and row norms (cheap);
        with `verify`, the sha256 of every file too."""
        folder = Path(folder)
        man = read_manifest(folder)
        idx = cls(folder, man)
        listed_in = folder / INDEX_MANIFEST
        for sh in man["shards"]:
            if verify:
                verify_shard(folder, sh)
            arr = open_shard(
                shard_path(folder, sh["file"], listed_in), sh["rows"], man["embedding_dim"], man["dtype"], mmap=mmap
            )
            entries, keys, _ = read_meta(shard_path(folder, sh["meta"], listed_in), sh["rows"])
            idx.shards.append(arr)
            idx.entries += entries
            idx.keys += keys
        return idx

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    def check_model(self, model_id: str, embedding_dim: int, space: str | None = None) -> None:
        """Refuse to search with embeddings from another model, or from another of its spaces."""
        # which space first: the dims of two spaces differ, and that message would mislead
        mine = self.manifest.get("space")
        if mine != space:
            held = f"the {mine} attribute space" if mine else "item embeddings"
            asked = f"the {space} space" if space else "item embeddings"
            hint = f"fm-index build ... --attribute {space}" if space else "fm-index build without --attribute"
            raise IndexMismatch(f"{self.folder}: holds {held}, not {asked}; build one with {hint}")
        if self.manifest["model_id"] != model_id or self.embedding_dim != embedding_dim:
            raise IndexMismatch(
                f"{self.folder}: built with model {self.manifest['model_id']} ({self.embedding_dim}-d), "
                f"but the model in use is {model_id} ({embedding_dim}-d); rebuild the index with this model"
            )

    def info(self) -> dict[str, Any]:
        m = self.manifest
        size = sum((self.folder / "shards" / s["file"]).stat().st_size for s in m["shards"])
        return {
            "index": str(self.folder),
            "images": len(self),
            "embedding_dim": self.embedding_dim,
            "dtype": m["dtype"],
            "model_id": m["model_id"],
            "model": m["model"],
            "backend": m["backend"],
            "precision": m["precision"],
            "shards": len(m["shards"]),
            "bytes": size,
            "space": m.get("space"),
            "faiss": {k: m["faiss"][k] for k in ("kind", "params", "recall", "bytes")} if m.get("faiss") else None,
            "skipped": len(m["skipped"]),
            "sources": m["sources"],
            "created": m["created"],
            "updated": m["updated"],
        }

    # --- the Python API: build, add, search --------------------------------------------------
    @classmethod
    def build(cls, source: str | Path | Sequence[ImageSource], out: str | Path, **kwargs: Any) -> Index:
        """Embed a gallery (a --data spec, a folder of images or a list) into a new index at `out`."""
        return build_index(source, out, **kwargs)

    def add(self, source: str | Path | Sequence[ImageSource], **kwargs: Any) -> Index:
        """Append images; returns the reopened index."""
        return add_to_index(self.folder, source, **kwargs)

    def search(
        self,
        queries: Sequence[ImageSource],
        k: int = 10,
        *,
        matcher: Any = None,
        model: str | Path | None = None,
        backend: str = "auto",
        precision: str = "fp32",
        engine: str = "exact",
        engine_params: dict[str, Any] | None = None,
    ) -> tuple[list[SearchResult], list[tuple[str, str]]]:
        """Embed `queries` as one batch and search them together with `engine` (see runtime.engines);
        returns their top-k matches and the queries that could not be read."""
        if matcher is None:
            from fashion_match.runtime.matcher import Matcher

            with Matcher(model, backend=backend, precision=precision) as m:
                return self.search(queries, k, matcher=m, engine=engine, engine_params=engine_params)
        binding = model_binding(matcher.manifest, matcher.info.backend, matcher.info.precision, matcher.space)
        self.check_model(binding["model_id"], binding["embedding_dim"], binding.get("space"))
        eng = self.engine(engine, **(engine_params or {}))  # before embedding: a missing FAISS index fails fast
        e = matcher.embed(queries)
        scores, ids = eng.search(matcher.query_form(e.vectors), k)
        names = [source_name(queries[i]) for i in e.indices]
        results = self.results(names, scores, ids, threshold=matcher.threshold)
        for r, i in zip(results, e.indices, strict=True):
            r.position = i
        return results, [(b.name, b.reason) for b in e.bad]

    # --- searching -----------------------------------------------------------------------------
    def engine(self, name: str = "exact", *, nprobe: int | None = None, ef_search: int | None = None) -> Any:
        """A search engine over this index: exact (CPU), exact-gpu, or the FAISS index it keeps
        (loaded and checked, never rebuilt here), with its search-time knobs set."""
        from fashion_match.runtime.engines import FaissEngine, make_engine

        if name != "faiss":
            return make_engine(name, self.shards)
        from fashion_match.runtime.faiss_index import load_faiss

        index, entry = load_faiss(self.folder, self.manifest)
        eng = FaissEngine.from_index(index, entry["kind"], entry["params"])
        eng.set_params(nprobe=nprobe, ef_search=ef_search)
        return eng

    def search_vectors(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        if queries.ndim != 2 or queries.shape[1] != self.embedding_dim:
            raise UsageError(f"queries must be (N, {self.embedding_dim}), got {queries.shape}")
        return topk_exact(queries, self.shards, k)

    def results(
        self, names: Sequence[str], scores: np.ndarray, ids: np.ndarray, *, threshold: float | None = None
    ) -> list[SearchResult]:
        """Top-k rows as matches: rank, id (the name relative to the source), absolute path, item id,
        similarity and, given the model's threshold, whether it is a match."""
        out = []
        for name, srow, irow in zip(names, scores, ids, strict=True):
            matches = []
            for r, (s, i) in enumerate(zip(srow, irow, strict=True)):
                if i < 0:
                    continue
                # unit rows (checked on open) and unit queries: only rounding can pass 1
                sim = round(min(1.0, max(-1.0, float(s))), 6)
                e = self.entries[i]
                m: dict[str, Any] = {"rank": r + 1, "id": e.id, "path": e.path, "item_id": e.item_id, "similarity": sim}
                if threshold is not None:
                    m["match"] = bool(sim >= threshold)
                matches.append(m)
            out.append(SearchResult(name, matches))
        return out
