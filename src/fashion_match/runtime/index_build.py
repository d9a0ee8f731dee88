"""Building and extending an index: one writer at a time, resumable, nothing lost or mixed.

Every write holds the index's lock (`fileio.exclusive_lock`), so a second `fm-index build` or
`add` on the same folder is refused with one line instead of interleaving shards. Shards are
written atomically, each recorded with its sha256s in the build plan; a resumed build reuses a
shard only if its files still hash to what was recorded. `index.json` is replaced last, so a
reader sees the old index or the new one, never a mix.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match import __version__
from fashion_match.data.images import ImageSource
from fashion_match.errors import FmError, UsageError
from fashion_match.fileio import check_output_dir, exclusive_lock, sha256_bytes, sha256_file, write_json_atomic
from fashion_match.formats import FP32_ONNX
from fashion_match.runtime.index_format import (
    DTYPES,
    INDEX_MANIFEST,
    INDEX_VERSION,
    PLAN,
    SHARD_ROWS,
    IndexMismatch,
    read_manifest,
    read_meta,
    shard_names,
    write_shard,
)
from fashion_match.runtime.index_sources import Sources, drop_duplicates, entries_of, resolve_sources
from fashion_match.schema import read_json

log = logging.getLogger(__name__)
EmbedFn = Callable[[Sequence[ImageSource]], tuple[np.ndarray, list[int], list[tuple[str, str]]]]


@dataclass
class WriteReport:
    """What one build or add did: rows written, and every input it left out with the reason."""

    added: int = 0
    bad: list[dict[str, str]] = field(default_factory=list)  # unreadable images
    duplicates: list[dict[str, str]] = field(default_factory=list)  # already in the index (or twice in the input)


def _plan_digest(names: Sequence[str]) -> str:
    return sha256_bytes("\n".join(names).encode("utf-8"))


def _resumable(folder: Path, number: int, record: Any) -> bool:
    """A shard left by an interrupted run counts only if both files hash to what the plan recorded."""
    npy, meta = (folder / "shards" / n for n in shard_names(number))
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("rows"), int)
        or not npy.is_file()
        or not meta.is_file()
    ):
        return False
    same = sha256_file(npy) == record.get("sha256") and sha256_file(meta) == record.get("meta_sha256")
    if not same:
        log.warning("%s: changed since it was written; embedding that shard again", npy)
    return same


def build_shards(
    folder: Path,
    src: Sources,
    embed: EmbedFn,
    *,
    first_shard: int,
    dtype: str,
    shard_rows: int = SHARD_ROWS,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Embed `src` into shards numbered from `first_shard`, resuming any already written."""
    from fashion_match.progress import Bar

    plan_path = folder / PLAN
    plan: dict[str, Any] = {
        "digest": _plan_digest(src.names),
        "first_shard": first_shard,
        "shard_rows": shard_rows,
        "dtype": dtype,
    }
    written: dict[str, Any] = {}
    if plan_path.exists():
        old = read_json(plan_path, IndexMismatch, "a build plan", hint=f"delete {plan_path} to start over")
        if not isinstance(old, dict) or {k: old.get(k) for k in plan} != plan:
            raise FmError(
                f"{folder}: an unfinished build of different sources or settings is here; "
                f"delete {plan_path} (and its shards) to start over"
            )
        prior = old.get("written")
        written = prior if isinstance(prior, dict) else {}
    plan["written"] = written
    write_json_atomic(plan_path, plan)
    entries, keys = entries_of(src), src.keys
    shards, skipped = [], []
    n = len(src.sources)
    bar = Bar(n, "embedding gallery", enabled=progress)
    t0, done_new = time.perf_counter(), 0
    for j, start in enumerate(range(0, n, shard_rows)):
        number = first_shard + j
        stop = min(n, start + shard_rows)
        rec: Any = written.get(str(number))
        if _resumable(folder, number, rec):
            npy, meta = shard_names(number)
            skipped += read_meta(folder / "shards" / meta, rec["rows"])[2]  # its bad files stay listed
            shards.append({"file": npy, "meta": meta, **{k: rec[k] for k in ("rows", "sha256", "meta_sha256")}})
            bar.update(stop - start)
            continue
        vecs, ok, bad = _embed_counted(embed, src.sources[start:stop], bar)
        shard = write_shard(
            folder,
            number,
            vecs,
            [entries[start + i] for i in ok],
            [keys[start + i] for i in ok],
            bad,
            dtype,
        )
        shards.append(shard)
        written[str(number)] = {k: shard[k] for k in ("rows", "sha256", "meta_sha256")}
        write_json_atomic(plan_path, plan)  # the record a resumed build trusts
        skipped += [{"path": p, "reason": r} for p, r in bad]
        done_new += stop - start
        rate = done_new / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(rate=f"{rate:.0f} img/s", bad=len(skipped))
    bar.close()
    return shards, skipped


def model_binding(manifest: Any, backend: str, precision: str, space: str | None = None) -> dict[str, Any]:
    """What binds an index to a model: its fp32 artifact hash (all precisions share it), dim, and
    for an index of an attribute space, that space's name (its vectors live in no other space)."""
    from fashion_match.runtime.tagging import space_output

    fp32 = manifest.artifacts.get(FP32_ONNX, {})
    out = {
        "model_id": fp32.get("sha256") or manifest.short_id(),
        "model": manifest.short_id(),
        "embedding_dim": space_output(manifest)[1] if space else manifest.embedding_dim,
        "backend": backend,
        "precision": precision,
    }
    return out | ({"space": space} if space else {})


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


PROGRESS_ROWS = 256  # a shard is embedded in pieces this size, so progress moves within it


def _embed_counted(
    embed: EmbedFn, sources: Sequence[ImageSource], bar: Any
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """`embed(sources)`, a piece at a time, counting each piece on `bar`."""
    vecs, ok, bad = [], [], []
    for s in range(0, len(sources), PROGRESS_ROWS):
        v, o, b = embed(sources[s : s + PROGRESS_ROWS])
        vecs.append(v)
        ok += [s + i for i in o]
        bad += b
        bar.update(min(PROGRESS_ROWS, len(sources) - s))
    return np.concatenate(vecs) if vecs else np.zeros((0, 0), np.float32), ok, bad


def _embedder(matcher: Any) -> EmbedFn:
    def embed(sources: Sequence[ImageSource]) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
        e = matcher.embed(sources)
        return e.vectors, e.indices, [(b.name, b.reason) for b in e.bad]

    return embed


def _matcher(matcher: Any, model: str | Path | None, backend: str, precision: str) -> tuple[Any, bool]:
    """(matcher, whether we opened it and must close it)."""
    if matcher is not None:
        return matcher, False
    from fashion_match.runtime.matcher import Matcher

    return Matcher(model, backend=backend, precision=precision), True


def _refuse_existing(folder: Path) -> None:
    if (folder / INDEX_MANIFEST).exists():
        raise UsageError(f"{folder}: exists; use 'fm-index add' to extend it or --overwrite to replace it")


def _attach_faiss(folder: Path, kind: str, given: dict[str, Any], idx: Any = None) -> Any:
    """Build the FAISS index over the index's shards and list it in index.json (under the lock);
    returns the index (`idx`, when the caller has it open already) with that manifest."""
    from fashion_match.runtime.faiss_index import build_faiss
    from fashion_match.runtime.index import Index

    idx = idx if idx is not None else Index.open(folder)
    if len(idx) == 0:
        raise UsageError(f"{folder}: an empty index has nothing to build a FAISS index over")
    man = dict(idx.manifest)
    man["faiss"] = build_faiss(folder, man, idx.shards, kind, given)
    write_json_atomic(folder / INDEX_MANIFEST, man)
    idx.manifest = man
    return idx


def _overwrite(folder: Path, build: Any) -> Any:
    """Build the new index beside the old one (resumable, like any build), then swap it in: the old
    index stays whole, and locked against adds, until the new one is complete."""
    staging = folder.parent / f".{folder.name}.new"
    retired = folder.parent / f".{folder.name}.old"
    with exclusive_lock(folder, "index"):
        if (staging / INDEX_MANIFEST).exists():  # whole but never swapped in: of unknown sources
            shutil.rmtree(staging)
        report = build(staging).report
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(folder, retired)
        os.replace(staging, folder)
    shutil.rmtree(retired, ignore_errors=True)
    from fashion_match.runtime.index import Index

    idx = Index.open(folder)
    idx.report = report
    return idx


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
    overwrite: bool = False,
    faiss: str | None = None,
    faiss_params: dict[str, Any] | None = None,
) -> Any:
    """Embed a gallery into a new index at `out`; returns the opened `Index` (with `.report`).
    An index already at `out` is refused, or with `overwrite` replaced once the new one is whole."""
    from fashion_match.runtime.index import Index

    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    folder = Path(out)
    if overwrite and (folder / INDEX_MANIFEST).exists():
        kw = {"matcher": matcher, "model": model, "backend": backend, "precision": precision, "dtype": dtype}
        kw |= {"faiss": faiss, "faiss_params": faiss_params}
        return _overwrite(folder, lambda to: build_index(source, to, shard_rows=shard_rows, progress=progress, **kw))
    _refuse_existing(folder)
    src = resolve_sources(source)
    check_output_dir(folder, "index (--out)")
    with exclusive_lock(folder, "index"):
        _refuse_existing(folder)  # another build may have finished while we were starting
        m, opened = _matcher(matcher, model, backend, precision)
        try:
            binding = model_binding(m.manifest, m.info.backend, m.info.precision, m.space)
            shards, skipped = build_shards(
                folder, src, _embedder(m), first_shard=0, dtype=dtype, shard_rows=shard_rows, progress=progress
            )
        finally:
            if opened:
                m.close()
        finish(folder, binding, shards, skipped, dtype, [src.description], None)
        idx = _attach_faiss(folder, faiss, faiss_params or {}) if faiss else Index.open(folder)
    idx.report = WriteReport(sum(s["rows"] for s in shards), skipped, [])
    return idx


def add_to_index(
    index: str | Path,
    source: str | Path | Sequence[ImageSource],
    *,
    matcher: Any = None,
    model: str | Path | None = None,
    backend: str = "auto",
    precision: str = "fp32",
    progress: bool = True,
    faiss: str | None = None,
    faiss_params: dict[str, Any] | None = None,
) -> Any:
    """Append images not yet in the index (by absolute path or content hash); returns the reopened
    `Index`. A FAISS index it keeps is rebuilt over the new shards; `faiss` adds (or replaces) one."""
    from fashion_match.runtime.index import Index

    folder = Path(index)
    read_manifest(folder)  # a clear "not an index" before taking a lock in a folder that is none
    with exclusive_lock(folder, "index"):
        idx = Index.open(folder)  # under the lock: the state no other writer can change now
        m, opened = _matcher(matcher, model, backend, precision)
        try:
            binding = model_binding(m.manifest, m.info.backend, m.info.precision, m.space)
            idx.check_model(binding["model_id"], binding["embedding_dim"], binding.get("space"))
            src, dups = drop_duplicates(resolve_sources(source), set(idx.keys))
            if dups:
                log.info(
                    "%d of %d images are already in the index and were skipped", len(dups), len(dups) + len(src.names)
                )
            if not src.names:
                if faiss:  # nothing new, but a FAISS index asked for: sources and shards stay as they are
                    idx = _attach_faiss(folder, faiss, faiss_params or {}, idx)
                idx.report = WriteReport(0, [], dups)
                return idx  # nothing new: the shards are not touched
            man = idx.manifest
            shards, skipped = build_shards(
                folder,
                src,
                _embedder(m),
                first_shard=len(man["shards"]),
                dtype=man["dtype"],
                progress=progress,
            )
        finally:
            if opened:
                m.close()
        keep = [k for k in ("model_id", "model", "embedding_dim", "backend", "precision", "space") if k in man]
        finish(folder, {k: man[k] for k in keep}, shards, skipped, man["dtype"], [src.description], man)
        old_faiss = man.get("faiss") or {}
        if faiss or old_faiss:  # a FAISS index of the old shards would be stale: rebuild it now
            kind = faiss or str(old_faiss.get("kind"))
            new = _attach_faiss(folder, kind, (faiss_params or {}) if faiss else dict(old_faiss.get("given") or {}))
        else:
            new = Index.open(folder)
    new.report = WriteReport(sum(s["rows"] for s in shards), skipped, dups)
    return new
