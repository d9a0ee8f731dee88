"""A gallery index on disk: embeddings in .npy shards plus JSON, bound to the model that made them.

Layout of an index directory:
    index.json             manifest: model id and dim, dtype, shards with rows and sha256, skipped files
    shards/NNNNN.npy       float32 or float16 (rows, D), L2-normalised; np.load(allow_pickle=False)
    shards/NNNNN.json      per-row ids and paths, plus the bad files met while building that shard

Builds write one shard per chunk of sources, each atomically, and `index.json` last. A killed
build resumes from its `.build.json` plan and the shards already written: the result is the same
as an uninterrupted build. No pickle anywhere.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match import __version__
from fashion_match.data.images import ImageSource, source_name
from fashion_match.errors import FmError, ManifestMismatch, UsageError
from fashion_match.fileio import atomic_open, sha256_bytes, sha256_file, write_json_atomic
from fashion_match.runtime.search import topk_exact

log = logging.getLogger(__name__)
INDEX_MANIFEST = "index.json"
PLAN = ".build.json"
INDEX_VERSION = 1
SHARD_ROWS = 4096
DTYPES = ("float32", "float16")


class IndexMismatch(ManifestMismatch):
    """An index that belongs to another model, or whose files do not match its manifest."""


@dataclass
class Entry:
    id: str  # stable name: a dataset record name or the file path as given
    path: str  # where the image was read from ("" for in-memory sources)
    item_id: str = ""


@dataclass
class SearchResult:
    query: str
    matches: list[dict[str, Any]]  # rank, id, path, item_id, similarity


@dataclass
class Index:
    folder: Path
    manifest: dict[str, Any]
    shards: list[np.ndarray] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)

    # --- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | Path, *, verify: bool = False, mmap: bool = True) -> Index:
        folder = Path(folder)
        path = folder / INDEX_MANIFEST
        if not path.is_file():
            hint = " (an unfinished build: re-run fm-index build to resume it)" if (folder / PLAN).exists() else ""
            raise IndexMismatch(f"{path}: missing; not a fashion-match index{hint}")
        try:
            man = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IndexMismatch(f"{path}: not valid JSON ({e})") from None
        if man.get("format_version") != INDEX_VERSION:
            raise IndexMismatch(f"{path}: format_version {man.get('format_version')} is not {INDEX_VERSION}")
        idx = cls(folder, man)
        dim, dtype = int(man["embedding_dim"]), man["dtype"]
        for sh in man["shards"]:
            npy = folder / "shards" / sh["file"]
            if verify and sha256_file(npy) != sh["sha256"]:
                raise IndexMismatch(f"{npy}: sha256 does not match {INDEX_MANIFEST}; rebuild the index")
            try:
                arr = np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise IndexMismatch(f"{npy}: unreadable shard ({e})") from None
            if arr.shape != (sh["rows"], dim) or str(arr.dtype) != dtype:
                raise IndexMismatch(
                    f"{npy}: holds {arr.shape} {arr.dtype}, manifest says ({sh['rows']}, {dim}) {dtype}; rebuild"
                )
            meta_path = folder / "shards" / sh["meta"]
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise IndexMismatch(f"{meta_path}: unreadable shard metadata ({e}); rebuild the index") from None
            if len(meta["ids"]) != sh["rows"]:
                raise IndexMismatch(f"{folder / 'shards' / sh['meta']}: {len(meta['ids'])} ids for {sh['rows']} rows")
            idx.shards.append(arr)
            idx.entries += [Entry(i, p, it) for i, p, it in zip(meta["ids"], meta["paths"], meta["items"], strict=True)]
        return idx

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    def check_model(self, model_id: str, embedding_dim: int) -> None:
        """Refuse to search with embeddings from another model."""
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
            "skipped": len(m["skipped"]),
            "sources": m["sources"],
            "created": m["created"],
            "updated": m["updated"],
        }

    # --- the Python API ------------------------------------------------------------------------
    @classmethod
    def build(cls, source: str | Path | Sequence[ImageSource], out: str | Path, **kwargs: Any) -> Index:
        """Embed a gallery (a --data spec, a folder of images or a list) into a new index at `out`."""
        return build_index(source, out, **kwargs)

    def add(self, source: str | Path | Sequence[ImageSource], **kwargs: Any) -> Index:
        """Append images; returns the reopened index."""
        return add_to_index(self.folder, source, **kwargs)

    def search(
        self, queries: Sequence[ImageSource], k: int = 10, **kwargs: Any
    ) -> tuple[list[SearchResult], list[tuple[str, str]]]:
        """Embed `queries` as one batch and return their top-k matches (and the unreadable ones)."""
        return search_index(self, queries, k, **kwargs)

    # --- searching -----------------------------------------------------------------------------
    def search_vectors(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        if queries.ndim != 2 or queries.shape[1] != self.embedding_dim:
            raise UsageError(f"queries must be (N, {self.embedding_dim}), got {queries.shape}")
        return topk_exact(queries, self.shards, k)

    def results(self, names: Sequence[str], scores: np.ndarray, ids: np.ndarray) -> list[SearchResult]:
        out = []
        for name, srow, irow in zip(names, scores, ids, strict=True):
            matches = [
                {
                    "rank": r + 1,
                    "id": self.entries[i].id,
                    "path": self.entries[i].path,
                    "item_id": self.entries[i].item_id,
                    "similarity": round(float(s), 6),
                }
                for r, (s, i) in enumerate(zip(srow, irow, strict=True))
                if i >= 0
            ]
            out.append(SearchResult(name, matches))
        return out


# --- building ------------------------------------------------------------------------------------
EmbedFn = Callable[[Sequence[ImageSource]], tuple[np.ndarray, list[int], list[tuple[str, str]]]]


def _plan_digest(names: Sequence[str]) -> str:
    return sha256_bytes("\n".join(names).encode("utf-8"))


def write_shard(
    folder: Path, number: int, vectors: np.ndarray, entries: list[Entry], bad: list[tuple[str, str]], dtype: str
) -> dict[str, Any]:
    shards = folder / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    npy, meta = f"{number:05d}.npy", f"{number:05d}.json"
    with atomic_open(shards / npy, "wb") as f:
        np.save(f, vectors.astype(dtype), allow_pickle=False)
    write_json_atomic(
        shards / meta,
        {
            "ids": [e.id for e in entries],
            "paths": [e.path for e in entries],
            "items": [e.item_id for e in entries],
            "bad": [{"path": p, "reason": r} for p, r in bad],
        },
    )
    return {"file": npy, "meta": meta, "rows": len(entries), "sha256": sha256_file(shards / npy)}


def build_shards(
    folder: Path,
    names: Sequence[str],
    sources: Sequence[ImageSource],
    entries: Sequence[Entry],
    embed: EmbedFn,
    *,
    first_shard: int,
    dtype: str,
    shard_rows: int = SHARD_ROWS,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Embed `sources` into shards numbered from `first_shard`, resuming any already written."""
    from tqdm import tqdm

    plan_path = folder / PLAN
    digest = _plan_digest(names)
    plan = {"digest": digest, "first_shard": first_shard, "shard_rows": shard_rows, "dtype": dtype}
    if plan_path.exists():
        old = json.loads(plan_path.read_text(encoding="utf-8"))
        if old != plan:
            raise FmError(
                f"{folder}: an unfinished build of different sources or settings is here; "
                f"delete {plan_path} (and its shards) to start over"
            )
    else:
        write_json_atomic(plan_path, plan)
    shards, skipped = [], []
    n = len(sources)
    bar = tqdm(total=n, unit="img", desc="embedding gallery", disable=None if progress else True)
    t0, done_new = time.perf_counter(), 0
    for j, start in enumerate(range(0, n, shard_rows)):
        number = first_shard + j
        stop = min(n, start + shard_rows)
        meta_path = folder / "shards" / f"{number:05d}.json"
        npy_path = folder / "shards" / f"{number:05d}.npy"
        if meta_path.exists() and npy_path.exists():  # written by an earlier, interrupted run
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            arr = np.load(npy_path, mmap_mode="r", allow_pickle=False)
            if len(meta["ids"]) == arr.shape[0]:
                shards.append(
                    {
                        "file": npy_path.name,
                        "meta": meta_path.name,
                        "rows": arr.shape[0],
                        "sha256": sha256_file(npy_path),
                    }
                )
                skipped += meta["bad"]
                bar.update(stop - start)
                continue
        vecs, ok, bad = embed(sources[start:stop])
        kept = [entries[start + i] for i in ok]
        shards.append(write_shard(folder, number, vecs, kept, bad, dtype))
        skipped += [{"path": p, "reason": r} for p, r in bad]
        done_new += stop - start
        bar.update(stop - start)
        rate = done_new / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix_str(f"{rate:.0f} img/s, {len(skipped)} bad")
    bar.close()
    return shards, skipped


def model_binding(manifest: Any, backend: str, precision: str) -> dict[str, Any]:
    """What binds an index to a model: its fp32 artifact hash (all precisions share it) and dim."""
    fp32 = manifest.artifacts.get("model.onnx", {})
    return {
        "model_id": fp32.get("sha256") or manifest.short_id(),
        "model": manifest.short_id(),
        "embedding_dim": manifest.embedding_dim,
        "backend": backend,
        "precision": precision,
    }


def finish(
    folder: Path,
    binding: dict[str, Any],
    shards: list[dict[str, Any]],
    skipped: list[dict[str, str]],
    dtype: str,
    sources: list[str],
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    man = {
        "format_version": INDEX_VERSION,
        "package_version": __version__,
        **binding,
        "dtype": dtype,
        "created": previous["created"] if previous else now,
        "updated": now,
        "sources": (previous["sources"] if previous else []) + sources,
        "shards": (previous["shards"] if previous else []) + shards,
        "skipped": (previous["skipped"] if previous else []) + skipped,
    }
    write_json_atomic(folder / INDEX_MANIFEST, man)
    (folder / PLAN).unlink(missing_ok=True)
    return man


def entries_for(names: Sequence[str], sources: Sequence[ImageSource], items: Sequence[str]) -> list[Entry]:
    return [
        Entry(n, os.fspath(s) if isinstance(s, str | os.PathLike) else "", it)
        for n, s, it in zip(names, sources, items, strict=True)
    ]


def default_names(sources: Sequence[ImageSource]) -> list[str]:
    return [source_name(s) for s in sources]


# --- the Python API: Index.build / Index.add / Index.search ----------------------------------------
def resolve_sources(source: str | Path | Sequence[ImageSource]) -> tuple[list[str], list[ImageSource], list[str], str]:
    """(names, sources, item_ids, description) for a --data spec, a folder of images, or a list."""
    from fashion_match.data.generic import IMAGE_SUFFIXES
    from fashion_match.data.spec import FORMAT_NAMES, load_dataset

    if isinstance(source, str | Path):
        text = str(source)
        if text.partition(":")[0] in FORMAT_NAMES and not Path(text).exists():
            ds = load_dataset(text)
            recs = [ds.records[i] for i in ds.protocol.gallery]
            return [r.name for r in recs], [r.source for r in recs], [r.item_id for r in recs], f"{text} (gallery)"
        folder = Path(source)
        if folder.is_dir():
            files = sorted(
                p
                for p in folder.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            )
            if not files:
                raise UsageError(f"{folder}: no images found")
            names = [str(p.relative_to(folder)) for p in files]
            items = [p.parent.name if p.parent != folder else p.stem for p in files]
            return names, list(files), items, str(folder)
        raise UsageError(f"{source}: neither a dataset spec nor a folder of images")
    srcs = list(source)
    names = default_names(srcs)
    return names, srcs, ["" for _ in srcs], f"{len(srcs)} images"


def _embedder(matcher: Any) -> EmbedFn:
    def embed(sources: Sequence[ImageSource]) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
        e = matcher.embed(sources)
        return e.vectors, e.indices, [(b.name, b.reason) for b in e.bad]

    return embed


def _open_matcher(matcher: Any, model: str | Path | None, backend: str, precision: str) -> Any:
    if matcher is not None:
        return matcher
    from fashion_match.runtime.matcher import Matcher

    return Matcher(model, backend=backend, precision=precision)


def build_index(
    source: str | Path | Sequence[ImageSource],
    out: str | Path,
    *,
    matcher: Any = None,
    model: str | Path | None = None,
    backend: str = "auto",
    precision: str = "fp32",
    dtype: str = "float32",
    shard_rows: int = SHARD_ROWS,
    progress: bool = True,
) -> Index:
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    folder = Path(out)
    if (folder / INDEX_MANIFEST).exists():
        raise UsageError(f"{folder}: an index is already there; use 'fm-index add' or choose another --out")
    names, sources, items, desc = resolve_sources(source)
    m = _open_matcher(matcher, model, backend, precision)
    folder.mkdir(parents=True, exist_ok=True)
    binding = model_binding(m.manifest, m.info.backend, m.info.precision)
    shards, skipped = build_shards(
        folder,
        names,
        sources,
        entries_for(names, sources, items),
        _embedder(m),
        first_shard=0,
        dtype=dtype,
        shard_rows=shard_rows,
        progress=progress,
    )
    finish(folder, binding, shards, skipped, dtype, [desc], None)
    return Index.open(folder)


def add_to_index(
    index: str | Path,
    source: str | Path | Sequence[ImageSource],
    *,
    matcher: Any = None,
    model: str | Path | None = None,
    backend: str = "auto",
    precision: str = "fp32",
    progress: bool = True,
) -> Index:
    idx = Index.open(index)
    m = _open_matcher(matcher, model, backend, precision)
    binding = model_binding(m.manifest, m.info.backend, m.info.precision)
    idx.check_model(binding["model_id"], binding["embedding_dim"])
    names, sources, items, desc = resolve_sources(source)
    have = {e.id for e in idx.entries}
    keep = [i for i, n in enumerate(names) if n not in have]
    if len(keep) < len(names):
        log.warning("%d of %d images are already in the index and were skipped", len(names) - len(keep), len(names))
    names, sources, items = [names[i] for i in keep], [sources[i] for i in keep], [items[i] for i in keep]
    shards, skipped = build_shards(
        idx.folder,
        names,
        sources,
        entries_for(names, sources, items),
        _embedder(m),
        first_shard=len(idx.manifest["shards"]),
        dtype=idx.manifest["dtype"],
        progress=progress,
    )
    finish(
        idx.folder,
        {k: idx.manifest[k] for k in ("model_id", "model", "embedding_dim", "backend", "precision")},
        shards,
        skipped,
        idx.manifest["dtype"],
        [desc],
        idx.manifest,
    )
    return Index.open(idx.folder)


def search_index(
    index: Index,
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
    """Embed all queries as one batch and search them together with `engine` (see
    runtime.engines); returns results and the queries that could not be read."""
    from fashion_match.runtime.engines import make_engine

    m = _open_matcher(matcher, model, backend, precision)
    try:
        binding = model_binding(m.manifest, m.info.backend, m.info.precision)
        index.check_model(binding["model_id"], binding["embedding_dim"])
        e = m.embed(queries)
    finally:
        if matcher is None:  # opened here: close it here
            m.close()
    scores, ids = make_engine(engine, index.shards, **(engine_params or {})).search(e.vectors, k)
    names = [source_name(queries[i]) for i in e.indices]
    return index.results(names, scores, ids), [(b.name, b.reason) for b in e.bad]
