"""What an index is built from: a dataset spec's gallery, a folder, or a list of images, each with
the key that tells it apart across adds (its absolute path, else a hash of its bytes)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fashion_match.data.images import ImageSource, source_name
from fashion_match.fileio import sha256_bytes
from fashion_match.runtime.index_format import Entry, path_key

# how an index lists a dataset spec it took the gallery of
GALLERY_SUFFIX = " (gallery)"


@dataclass
class Sources:
    names: list[str]
    sources: list[ImageSource]
    items: list[str]
    description: str
    keys: list[str] = field(default_factory=list)  # per source, see source_key; computed once

    def __post_init__(self) -> None:
        if not self.keys:  # hashing in-memory images is not free: done here, once per source list
            self.keys = [source_key(s, n) for s, n in zip(self.sources, self.names, strict=True)]


def source_key(src: ImageSource, name: str) -> str:
    """What identifies an image across adds: its absolute path, else a hash of its bytes."""
    if isinstance(src, str | os.PathLike):
        return path_key(src)
    if isinstance(src, bytes | bytearray):
        return "sha256:" + sha256_bytes(bytes(src))
    if isinstance(src, np.ndarray):
        h = hashlib.sha256(f"{src.dtype}{src.shape}".encode())
        h.update(np.ascontiguousarray(src).tobytes())
        return "sha256:" + h.hexdigest()
    return f"id:{name}"  # a lazily made image: its dataset name is all there is


def resolve_sources(source: str | Path | Sequence[ImageSource]) -> Sources:
    """The images of a --data spec's gallery, a folder (searched recursively), or a list."""
    from fashion_match.data.spec import load_dataset, parse_spec

    if isinstance(source, str | Path):
        text = str(source)
        ds = load_dataset(text)  # the one spec parser: a folder, a CSV file, FORMAT[:ARG]
        if parse_spec(text)[0] == "folder":  # every image of a folder, not one protocol's gallery
            recs, what = ds.records, str(Path(ds.root).resolve())
        else:
            recs, what = [ds.records[i] for i in ds.protocol.gallery], f"{text}{GALLERY_SUFFIX}"
        return Sources([r.name for r in recs], [r.source for r in recs], [r.item_id for r in recs], what)
    srcs = list(source)
    return Sources([source_name(s) for s in srcs], srcs, ["" for _ in srcs], f"{len(srcs)} images")


def entries_of(src: Sources) -> list[Entry]:
    return [
        Entry(n, os.path.abspath(os.fspath(s)) if isinstance(s, str | os.PathLike) else "", it)
        for n, s, it in zip(src.names, src.sources, src.items, strict=True)
    ]


def drop_duplicates(src: Sources, have: set[str]) -> tuple[Sources, list[dict[str, str]]]:
    """Leave out the images already in the index, listing each one."""
    keep, dups = [], []
    for i, key in enumerate(src.keys):
        if key in have:
            shown = key.removeprefix("path:") if key.startswith("path:") else src.names[i]
            dups.append({"path": shown, "reason": "already in the index"})
        else:
            keep.append(i)
    picked = Sources(
        [src.names[i] for i in keep],
        [src.sources[i] for i in keep],
        [src.items[i] for i in keep],
        src.description,
        [src.keys[i] for i in keep],
    )
    return picked, dups
