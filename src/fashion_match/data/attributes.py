"""Attribute labels: what a dataset says about each image beyond its item.

An `Attribute` is either single-valued (`kind="single"`: one of `values`, FashionAI's collar design,
a category) or a set of yes/no tags (`kind="multi"`: DeepFashion's 1,000 attributes, style tags).
Per record, `Record.attrs[name]` holds:

- single: the value's index, or `UNKNOWN` (-1) when the image is not labelled for it or the label is
  only a "maybe" (FashionAI `m`), so training ignores it and evaluation leaves it out;
- multi: an int8 vector over `values`, 1 present, 0 absent, `UNKNOWN` not annotated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fashion_match.errors import BadDataset

UNKNOWN = -1
KINDS = ("single", "multi")


@dataclass(frozen=True)
class Attribute:
    name: str
    kind: str  # "single" | "multi"
    values: tuple[str, ...]
    types: tuple[str, ...] = ()  # per value, where a dataset groups them (DeepFashion: texture, fabric, ...)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"attribute {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if len(set(self.values)) != len(self.values):
            raise BadDataset(f"attribute {self.name!r}: its values repeat a name")

    def index(self, value: str) -> int:
        try:
            return self.values.index(value)
        except ValueError:
            raise BadDataset(f"attribute {self.name!r}: unknown value {value!r}") from None


def label_arrays(records: Sequence[object], attrs: Sequence[Attribute]) -> dict[str, np.ndarray]:
    """Per attribute, the records' labels as one array: int64 (N,) value indices for a single-valued
    attribute, int8 (N, T) rows of 1/0 for a multi-label one; UNKNOWN where a record has none."""
    out: dict[str, np.ndarray] = {}
    for a in attrs:
        vals = [(getattr(r, "attrs", None) or {}).get(a.name) for r in records]
        if a.kind == "single":
            out[a.name] = np.array([UNKNOWN if v is None else int(v) for v in vals], np.int64)
        else:
            rows = [np.full(len(a.values), UNKNOWN, np.int8) if v is None else np.asarray(v, np.int8) for v in vals]
            out[a.name] = np.stack(rows) if rows else np.zeros((0, len(a.values)), np.int8)
    return out


def positives(records: Sequence[object], attr: Attribute) -> np.ndarray:
    """Per value of a multi-label attribute, how many records have it (1); for a single-valued one,
    how many records take each value. The imbalance every tag head weighs against."""
    counts = np.zeros(len(attr.values), np.int64)
    for r in records:
        v = (getattr(r, "attrs", None) or {}).get(attr.name)
        if v is None:
            continue
        if attr.kind == "multi":
            counts += np.asarray(v) == 1
        elif v != UNKNOWN:
            counts[int(v)] += 1
    return counts


def labelled(records: Sequence[object], attr: Attribute) -> list[int]:
    """Indices of the records that carry a label for `attr` (single: a known value; multi: any 0/1)."""
    out = []
    for i, r in enumerate(records):
        v = (getattr(r, "attrs", None) or {}).get(attr.name)
        if v is None:
            continue
        if (attr.kind == "single" and v != UNKNOWN) or (attr.kind == "multi" and (np.asarray(v) != UNKNOWN).any()):
            out.append(i)
    return out
