"""`fm-data check`: count what a dataset lists and find every missing or undecodable image."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fashion_match.data.images import decode_image, default_workers
from fashion_match.data.records import Dataset, Record
from fashion_match.errors import BadImage


def _probe(rec: Record) -> tuple[str, str] | None:
    # Arrays and lazy sources are made by our own code and checked by its tests; files are not.
    if not isinstance(rec.source, (str, os.PathLike)):
        return None
    try:
        decode_image(rec.source, min_side=32, name=rec.name)  # draft decoding keeps this fast
    except BadImage as e:
        return (os.fspath(rec.source), e.reason)
    return None


def check_dataset(ds: Dataset, *, workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    from fashion_match.progress import Bar

    bad = []
    with (
        ThreadPoolExecutor(workers or default_workers()) as pool,
        Bar(len(ds.records), "checking images", enabled=progress) as bar,
    ):
        for r in pool.map(_probe, ds.records, chunksize=64):
            bar.update()
            if r is not None:
                bad.append(r)
    return {
        "format": ds.format,
        "images": len(ds.records),
        "items": ds.n_items(),
        "splits": ds.split_counts(),
        "protocol": {"queries": len(ds.protocol.queries), "gallery": len(ds.protocol.gallery)},
        "notes": ds.notes,  # e.g. which DeepFashion image layout was found
        "bad": [{"path": p, "reason": why} for p, why in bad],
        "attributes": [attribute_summary(ds, a) for a in ds.attributes],
    }


def attribute_summary(ds: Dataset, attr: Any) -> dict[str, Any]:
    """How many images carry each attribute and how skewed its values are: the imbalance a tag
    head has to weigh against."""
    from fashion_match.data.attributes import labelled, positives

    counts = positives(ds.records, attr)
    nonzero = counts[counts > 0]
    return {
        "name": attr.name,
        "kind": attr.kind,
        "values": len(attr.values),
        "labelled_images": len(labelled(ds.records, attr)),
        "positives": {v: int(c) for v, c in zip(attr.values, counts, strict=True)},
        "most_to_least": round(float(nonzero.max() / nonzero.min()), 1) if len(nonzero) else None,
        "never_positive": int((counts == 0).sum()),
    }
