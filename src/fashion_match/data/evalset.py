"""A decoded query/gallery subsample of a dataset protocol: what fm-bench and the export gate measure on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fashion_match.data.images import load_batch
from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.data.records import spaced


@dataclass
class EvalSet:
    """Decoded query and gallery pixels of one dataset, shared by every row."""

    name: str
    description: str
    match_on: str
    q_pixels: np.ndarray
    q_keys: np.ndarray
    g_pixels: np.ndarray
    g_keys: np.ndarray
    skipped: list[str]
    # attribute name -> per-image labels (value indices, or tag rows of 1/0/-1), when the data has them
    q_attrs: dict[str, np.ndarray] = field(default_factory=dict)
    g_attrs: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def instance_level(self) -> bool:
        return self.match_on == "item_id"


def load_eval_set(
    spec: str, preprocess: PreprocessSpec, category: tuple[int, int], instance: tuple[int, int]
) -> EvalSet:
    """The first protocol queries (evenly spaced) and, for item protocols, their own gallery images.

    For item-level protocols the gallery is the queries' own items plus evenly spaced others,
    so every query has its match; the first items are used because threshold calibration
    uses the last ones. (queries, gallery) sizes: `instance` for item protocols, else `category`.
    """
    from fashion_match.data.records import retrieval_key
    from fashion_match.data.spec import load_dataset

    ds = load_dataset(spec)
    key = retrieval_key(ds, spec)
    queries, gallery = instance if key == "item_id" else category
    if key == "item_id":
        q_rows = ds.protocol.queries[:queries]
        wanted = {ds.records[i].item_id for i in q_rows}
        own = [g for g in ds.protocol.gallery if ds.records[g].item_id in wanted]
        rest = [g for g in ds.protocol.gallery if ds.records[g].item_id not in wanted]
        g_rows = own + spaced(rest, max(0, gallery - len(own)))
    else:
        q_rows, g_rows = spaced(ds.protocol.queries, queries), spaced(ds.protocol.gallery, gallery)
    qb = load_batch([ds.records[i].source for i in q_rows], preprocess)
    gb = load_batch([ds.records[i].source for i in g_rows], preprocess)
    q_ok = [q_rows[i] for i in qb.indices]
    g_ok = [g_rows[i] for i in gb.indices]
    return EvalSet(
        name=spec,
        description=f"{ds.protocol.description}; {len(q_ok)} queries x {len(g_ok)} gallery images",
        match_on=key,
        q_pixels=qb.pixels,
        q_keys=np.array([getattr(ds.records[i], key) for i in q_ok]),
        g_pixels=gb.pixels,
        g_keys=np.array([getattr(ds.records[i], key) for i in g_ok]),
        skipped=[str(b) for b in [*qb.bad, *gb.bad]],
        q_attrs=_attr_labels(ds, q_ok),
        g_attrs=_attr_labels(ds, g_ok),
    )


def _attr_labels(ds: Any, rows: list[int]) -> dict[str, np.ndarray]:
    from fashion_match.data.attributes import label_arrays

    return label_arrays([ds.records[i] for i in rows], ds.attributes)
