"""The record type every dataset yields, and the retrieval protocol every dataset states."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.data.images import ImageSource
from fashion_match.errors import BadDataset

SPLITS = ("train", "val", "test", "query", "gallery")


def read_annotation(path: Path, expected: str) -> str:
    """The text of an annotation file (a BOM dropped); `BadDataset` saying what was `expected`
    when it is missing or unreadable."""
    if not path.is_file():
        raise BadDataset(f"{path}: missing (expected {expected})")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise BadDataset(f"{path}: cannot read ({e})") from None


@dataclass(frozen=True)
class Record:
    source: ImageSource  # path, bytes, array or lazy callable
    name: str  # stable, human-readable id: a relative path or "fashion-mnist/test/00042"
    item_id: str  # same item_id = same product
    split: str
    category: str | None = None
    domain: str | None = None  # "shop" | "consumer" | None
    bbox: tuple[int, int, int, int] | None = None  # x1, y1, x2, y2 in source pixels
    # attribute name -> value index or tag vector (see data.attributes); arrays: not compared
    attrs: Mapping[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class RetrievalProtocol:
    """Which records are queries and which form the gallery, by index into `records`.

    A query is correct at K when one of the top-K gallery records shares its `match_on` key
    ("item_id" for instance retrieval, "category" for category retrieval). With
    `exclude_self`, a query never retrieves its own record (leave-one-out protocols).
    """

    queries: list[int]
    gallery: list[int]
    match_on: str = "item_id"
    exclude_self: bool = False
    description: str = ""


@dataclass
class Dataset:
    format: str
    root: str
    records: list[Record]
    protocol: RetrievalProtocol
    categories: list[str] = field(default_factory=list)
    notes: str = ""
    attributes: list[Any] = field(default_factory=list)  # data.attributes.Attribute, in label order

    def split_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.split for r in self.records).items()))

    def n_items(self) -> int:
        return len({r.item_id for r in self.records})

    def subset(self, split: str) -> list[Record]:
        return [r for r in self.records if r.split == split]


def retrieval_key(ds: Dataset, spec: str) -> str:
    """The record field the protocol of `ds` matches on; an attribute protocol (per attribute, not
    one key) is refused here: item and category retrieval need item ids or categories."""
    key = ds.protocol.match_on
    if key not in ("item_id", "category"):
        from fashion_match.errors import UsageError

        raise UsageError(
            f"{spec}: its protocol is attribute retrieval (one ranking per attribute), not item or category "
            "retrieval; use a dataset with item ids or categories here"
        )
    return key


def spaced(indices: list[int], n: int | None) -> list[int]:
    """An evenly spaced subset of at most n indices (all of them for None)."""
    if n is None or n >= len(indices):
        return list(indices)
    pick = np.linspace(0, len(indices) - 1, n).round().astype(int)
    return [indices[i] for i in pick]
