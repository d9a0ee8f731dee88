"""The on-disk format of a gallery index, read as untrusted input.

Layout of an index directory:
    index.json             manifest: model id and dim, dtype, shards with rows and sha256s, skipped files
    shards/NNNNN.npy       float32 or float16 (rows, D), L2-normalised; np.load(allow_pickle=False)
    shards/NNNNN.json      per-row ids, absolute paths, item ids and dedupe keys, plus the bad files
                           met while building that shard
    .lock                  held (flock) by the one process writing the index
    .build.json            the plan of an unfinished build, with the sha256s of the shards written so far

Opening checks what is cheap and catches what would make search lie: every field's type, shard
names confined to `shards/`, file sizes against their headers, and every row's norm (a damaged
shard would score above 1). `verify=True` adds the full sha256 of every file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.errors import ManifestMismatch
from fashion_match.fileio import atomic_open, sha256_file, write_json_atomic
from fashion_match.schema import field, read_json, require_object

INDEX_MANIFEST = "index.json"
PLAN = ".build.json"
LOCK = ".lock"
INDEX_VERSION = 1
SHARD_ROWS = 4096
DTYPES = ("float32", "float16")
NORM_TOLERANCE = 1e-2  # on the squared norm: float16 storage rounds unit rows by ~1e-3
_NORM_CHUNK = 16384
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
REBUILD = "rebuild the index (fm-index build)"


class IndexMismatch(ManifestMismatch):
    """An index that belongs to another model, or whose files do not match its manifest."""


@dataclass
class Entry:
    id: str  # stable name: a dataset record name or the file's path relative to the folder indexed
    path: str  # absolute path the image was read from ("" for in-memory sources)
    item_id: str = ""


def read_manifest(folder: Path) -> dict[str, Any]:
    """index.json, with the type of every field the index code reads checked."""
    path = folder / INDEX_MANIFEST
    if not path.is_file():
        hint = " (an unfinished build: re-run fm-index build to resume it)" if (folder / PLAN).exists() else ""
        raise IndexMismatch(f"{path}: missing; not a fashion-match index{hint}")
    man = require_object(
        read_json(path, IndexMismatch, "an index manifest", hint=REBUILD), path, IndexMismatch, "an index manifest"
    )

    def need(obj: dict[str, Any], key: str, kind: str, where: str = "", **kw: Any) -> Any:
        return field(obj, key, kind, f"{path}{where}", IndexMismatch, hint=REBUILD, **kw)

    if man.get("format_version") != INDEX_VERSION:
        raise IndexMismatch(f"{path}: format_version {man.get('format_version')} is not {INDEX_VERSION}; {REBUILD}")
    for key in ("model_id", "model", "backend", "precision", "dtype", "created", "updated"):
        need(man, key, "string")
    need(man, "embedding_dim", "integer", low=1, high=1 << 20)
    if man["dtype"] not in DTYPES:
        raise IndexMismatch(f"{path}: dtype {man['dtype']!r} is not one of {', '.join(DTYPES)}; {REBUILD}")
    need(man, "sources", "list of strings")
    need(man, "faiss", "object", required=False)
    need(
        man, "space", "string", required=False
    )  # an index of one attribute space  # its fields are checked when it is loaded
    for i, s in enumerate(need(man, "skipped", "list of objects")):
        need(s, "path", "string", f" skipped[{i}]")
        need(s, "reason", "string", f" skipped[{i}]")
    for i, sh in enumerate(need(man, "shards", "list of objects")):
        where = f" shards[{i}]"
        for key in ("file", "meta", "sha256"):
            need(sh, key, "string", where)
        need(sh, "meta_sha256", "string", where, required=False)  # absent in indexes of 0.1.0
        need(sh, "rows", "integer", where, low=0)
        shard_path(folder, sh["file"], path)
        shard_path(folder, sh["meta"], path)
    return man


def shard_path(folder: Path, name: str, listed_in: Path) -> Path:
    """folder/shards/name, refusing any name that would reach outside that folder."""
    base = (folder / "shards").resolve()
    target = (base / name).resolve()
    if Path(name).name != name or name.startswith(".") or target.parent != base:
        raise IndexMismatch(f"{listed_in}: shard file {name!r} is not a plain file name inside {base}; {REBUILD}")
    return folder / "shards" / name


def read_meta(path: Path, rows: int) -> tuple[list[Entry], list[str], list[dict[str, str]]]:
    """(entries, dedupe keys, bad files) of one shard's JSON, checked against its row count."""
    hint = f"rebuild the shard: {REBUILD}"
    meta = require_object(
        read_json(path, IndexMismatch, "shard metadata", hint=hint), path, IndexMismatch, "shard metadata"
    )
    lists = {k: field(meta, k, "list of strings", path, IndexMismatch, hint=hint) for k in ("ids", "paths", "items")}
    keys = field(meta, "keys", "list of strings", path, IndexMismatch, hint=hint, required=False)
    if keys is not None:
        lists["keys"] = keys
    bad = field(meta, "bad", "list of objects", path, IndexMismatch, hint=hint)
    for i, b in enumerate(bad):
        for k in ("path", "reason"):
            field(b, k, "string", f"{path} bad[{i}]", IndexMismatch, hint=hint)
    for k, v in lists.items():
        if len(v) != rows:
            raise IndexMismatch(f"{path}: {len(v)} {k} for {rows} rows; {hint}")
    entries = [Entry(i, p, it) for i, p, it in zip(lists["ids"], lists["paths"], lists["items"], strict=True)]
    return entries, keys if keys is not None else [legacy_key(e) for e in entries], bad


def legacy_key(e: Entry) -> str:
    """The dedupe key of a row written before keys were stored: its path made absolute, else its id."""
    return path_key(e.path) if e.path else f"id:{e.id}"


def path_key(path: str | os.PathLike[str]) -> str:
    return "path:" + os.path.abspath(os.fspath(path))


def open_shard(path: Path, rows: int, dim: int, dtype: str, *, mmap: bool = True) -> np.ndarray:
    """A shard's array after the cheap checks: header, exact file size, finite unit-norm rows."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in _HEADER_READERS:
                raise ValueError(f".npy format version {version} is not one np.save writes for a plain array")
            shape, fortran, dt = _HEADER_READERS[version](f)  # the header only: a dict literal, no pickle
            offset = f.tell()
        size = path.stat().st_size
    except FileNotFoundError:
        raise IndexMismatch(f"{path}: listed in {INDEX_MANIFEST} but missing; {REBUILD}") from None
    except (OSError, ValueError, EOFError, SyntaxError) as e:
        raise IndexMismatch(
            f"{path}: not a shard (.npy header unreadable: {' '.join(str(e).split())[:100]}); {REBUILD}"
        ) from None
    if tuple(shape) != (rows, dim) or str(dt) != dtype or fortran:
        raise IndexMismatch(
            f"{path}: holds {tuple(shape)} {dt}, {INDEX_MANIFEST} says ({rows}, {dim}) {dtype}; {REBUILD}"
        )
    want = offset + rows * dim * np.dtype(dtype).itemsize
    if size != want:
        raise IndexMismatch(f"{path}: {size:,} bytes, its header implies {want:,} (truncated or padded); {REBUILD}")
    try:
        arr = np.load(path, mmap_mode="r" if mmap and rows else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise IndexMismatch(f"{path}: unreadable shard ({e}); {REBUILD}") from None
    check_norms(arr, path)
    return arr


def check_norms(arr: np.ndarray, path: Path) -> None:
    """Every row finite with norm 1: a flipped byte that would score above 1 is caught here."""
    for start in range(0, len(arr), _NORM_CHUNK):
        block = np.asarray(arr[start : start + _NORM_CHUNK], dtype=np.float32)
        with np.errstate(all="ignore"):
            sq = np.einsum("ij,ij->i", block, block)
        bad = np.nonzero(~(np.abs(sq - 1.0) <= NORM_TOLERANCE))[0]  # NaN fails the comparison too
        if len(bad):
            r = int(bad[0])
            norm = math.sqrt(sq[r]) if np.isfinite(sq[r]) and sq[r] >= 0 else float("nan")
            raise IndexMismatch(
                f"{path}: row {start + r} has norm {norm:.4g}, not 1 (damaged shard, {len(bad)} such rows "
                f"in this block); {REBUILD}"
            )


def verify_shard(folder: Path, sh: dict[str, Any]) -> None:
    """The full check: sha256 of the shard's array and (where recorded) of its metadata."""
    for name, want in ((sh["file"], sh["sha256"]), (sh["meta"], sh.get("meta_sha256"))):
        path = shard_path(folder, name, folder / INDEX_MANIFEST)
        if want is not None and (not path.is_file() or sha256_file(path) != want):
            raise IndexMismatch(f"{path}: sha256 does not match {INDEX_MANIFEST}; {REBUILD}")


def shard_names(number: int) -> tuple[str, str]:
    return f"{number:05d}.npy", f"{number:05d}.json"


def write_shard(
    folder: Path,
    number: int,
    vectors: np.ndarray,
    entries: list[Entry],
    keys: list[str],
    bad: list[tuple[str, str]],
    dtype: str,
) -> dict[str, Any]:
    """Write one shard's two files atomically; returns its index.json entry with both sha256s."""
    shards = folder / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    npy, meta = shard_names(number)
    with atomic_open(shards / npy, "wb") as f:
        np.save(f, vectors.astype(dtype), allow_pickle=False)
    write_json_atomic(
        shards / meta,
        {
            "ids": [e.id for e in entries],
            "paths": [e.path for e in entries],
            "items": [e.item_id for e in entries],
            "keys": keys,
            "bad": [{"path": p, "reason": r} for p, r in bad],
        },
    )
    return shard_entry(folder, number, len(entries))


def shard_entry(folder: Path, number: int, rows: int) -> dict[str, Any]:
    npy, meta = shard_names(number)
    return {
        "file": npy,
        "meta": meta,
        "rows": rows,
        "sha256": sha256_file(folder / "shards" / npy),
        "meta_sha256": sha256_file(folder / "shards" / meta),
    }
