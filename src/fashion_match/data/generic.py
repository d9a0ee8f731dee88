"""User datasets: `folder:DIR` (DIR/<item_id>/<images>) and `csv:FILE` (path,item_id[,split][,domain])."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from fashion_match.data.records import SPLITS, Dataset, Record, RetrievalProtocol, read_annotation
from fashion_match.errors import BadDataset

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
DOMAINS = ("shop", "consumer")


def _image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path, *, recursive: bool = True) -> list[Path]:
    """Every path in `folder` (and below it, when `recursive`) named like an image, sorted; hidden
    files and folders left out. The one folder walker of the project.

    Not filtered by type on purpose: a directory named `x.jpg`, a broken or looping symlink, a
    FIFO all come back, so the decoder lists each one with its reason instead of it vanishing.
    Linked folders are followed once (a link back up the tree is not a loop forever).
    """
    if not recursive:
        return sorted(p for p in folder.iterdir() if _image_name(p.name))
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        try:
            st = os.stat(top)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(top) / name for name in (*files, *dirs) if _image_name(name)]
    return sorted(found)


def protocol_from_splits(records: list[Record]) -> RetrievalProtocol:
    """The evaluation protocol a user's dataset implies, most explicit first:

    1. `query` and `gallery` splits: queries rank the gallery (In-shop style);
    2. `consumer`/`shop` domains in the eval split (test, else val, else everything):
       consumer photos rank shop photos (Consumer-to-shop style);
    3. otherwise leave-one-out over the eval split: every image of an item with 2+ images
       queries all the others (the CUB/SOP metric-learning protocol).
    """
    splits = {r.split for r in records}
    if "query" in splits and "gallery" in splits:
        return RetrievalProtocol(
            [i for i, r in enumerate(records) if r.split == "query"],
            [i for i, r in enumerate(records) if r.split == "gallery"],
            description="query split ranks the gallery split",
        )
    eval_split = next((s for s in ("test", "val") if s in splits), None)
    idx = [i for i, r in enumerate(records) if eval_split is None or r.split == eval_split]
    where = f"the {eval_split} split" if eval_split else "all images"
    domains = {records[i].domain for i in idx}
    if {"consumer", "shop"} <= domains:
        return RetrievalProtocol(
            [i for i in idx if records[i].domain == "consumer"],
            [i for i in idx if records[i].domain == "shop"],
            description=f"consumer photos rank shop photos within {where}",
        )
    counts: dict[str, int] = {}
    for i in idx:
        counts[records[i].item_id] = counts.get(records[i].item_id, 0) + 1
    return RetrievalProtocol(
        [i for i in idx if counts[records[i].item_id] >= 2],
        idx,
        exclude_self=True,
        description=f"leave-one-out within {where}: each image of an item with 2+ images queries the rest",
    )


def load_folder(root_s: str) -> Dataset:
    """A folder of images: DIR/<item_id>/<images> (any depth: an image's item is its folder's name),
    images directly in DIR (each its own item, named by its file stem), or either layout under
    split folders (DIR/train, DIR/query, DIR/gallery, ...)."""
    root = Path(root_s).expanduser()
    if not root.is_dir():
        raise BadDataset(f"{root}: not a directory (expected a folder of images, or DIR/<item_id>/<images>)")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_layout = bool(subdirs) and all(p.name in SPLITS for p in subdirs)
    tops = [(p.name, p) for p in subdirs] if split_layout else [("all", root)]
    records: list[Record] = []
    for split, top in tops:
        for f in image_files(top):
            records.append(Record(f, str(f.relative_to(root)), folder_item(f, top), split))
    if not records:
        raise BadDataset(f"{root}: no images found (suffixes {', '.join(sorted(IMAGE_SUFFIXES))})")
    return Dataset("folder", str(root), records, protocol_from_splits(records))


def folder_item(path: Path, top: Path) -> str:
    """The item an image in a folder dataset shows: its folder's name, or its stem at the top."""
    return path.parent.name if path.parent != top else path.stem


def load_csv(file_s: str) -> Dataset:
    path = Path(file_s).expanduser()
    text = read_annotation(path, "a CSV file with columns path,item_id[,split][,domain]")
    reader = csv.reader(text.splitlines())
    try:
        return _csv_dataset(path, reader)
    except csv.Error as e:  # a NUL byte, a field over the csv module's limit, a broken quote
        raise BadDataset(f"{path}:{reader.line_num}: not readable as CSV ({e})") from None


def _csv_dataset(path: Path, reader: Any) -> Dataset:
    header = [h.strip() for h in next(reader, [])]
    if "path" not in header or "item_id" not in header:
        raise BadDataset(
            f"{path}:1: header must name columns path and item_id (optional: split, domain), found {header}"
        )
    unknown = set(header) - {"path", "item_id", "split", "domain", "category"}
    if unknown:
        raise BadDataset(f"{path}:1: unknown columns {sorted(unknown)}")
    col = {h: i for i, h in enumerate(header)}
    records: list[Record] = []
    for no, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise BadDataset(f"{path}:{no}: expected {len(header)} fields, found {len(row)}")
        if any("\x00" in c for c in row):
            raise BadDataset(f"{path}:{no}: a NUL byte in the row (a binary file, or a damaged CSV)")
        val = {h: row[i].strip() for h, i in col.items()}
        rel, item = val["path"], val["item_id"]
        split, domain = val.get("split") or "all", val.get("domain") or None
        if not rel or not item:
            raise BadDataset(f"{path}:{no}: path and item_id must not be empty")
        if split != "all" and split not in SPLITS:
            raise BadDataset(f"{path}:{no}: unknown split {split!r} (expected one of {', '.join(SPLITS)})")
        if domain is not None and domain not in DOMAINS:
            raise BadDataset(f"{path}:{no}: unknown domain {domain!r} (expected shop or consumer)")
        src = Path(rel) if Path(rel).is_absolute() else path.parent / rel
        records.append(Record(src, rel, item, split, val.get("category") or None, domain))
    if not records:
        raise BadDataset(f"{path}: no rows after the header")
    return Dataset("csv", str(path), records, protocol_from_splits(records))
