"""DeepFashion Category and Attribute Prediction Benchmark, read exactly as published.

`deepfashion-attr:DIR` reads `Anno/list_category_cloth.txt`, `Anno/list_category_img.txt`,
`Anno/list_attr_cloth.txt`, `Anno/list_attr_img.txt`, `Anno/list_bbox.txt` (optional) and
`Eval/list_eval_partition.txt`: each with its count line and header line, fields separated by runs
of spaces, category labels 1-based, attribute values 1 / -1 (0 in some copies: absent). When
`DIR/Anno_fine/` exists it reads that release instead: `{train,val,test}.txt` (image paths),
`_cate.txt` (1-based category per line), `_attr.txt` (0/1 per attribute), `_bbox.txt` (optional),
no count or header lines, names in `Anno_fine/list_category_cloth.txt` and `list_attr_cloth.txt`.
Any deviation is a `BadDataset` naming the file and line.

Records carry `attrs["category"]` (single-valued) and `attrs["attributes"]` (the multi-label tags);
the protocol is category retrieval, test images ranking the train images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fashion_match.data.attributes import Attribute
from fashion_match.data.deepfashion import _root, image_prefix, read_list_file
from fashion_match.data.records import Dataset, Record, RetrievalProtocol, read_annotation
from fashion_match.errors import BadDataset

CATEGORY_TYPES = {"1": "upper-body", "2": "lower-body", "3": "full-body"}
ATTRIBUTE_TYPES = {"1": "texture", "2": "fabric", "3": "shape", "4": "part", "5": "style", "6": "fit"}
SPLITS = ("train", "val", "test")


def _names(path: Path, header: list[str], types: dict[str, str]) -> tuple[list[str], list[str]]:
    """(names, types) of a `*_cloth.txt` list: the type is the last field, the name all before it
    (attribute names contain spaces)."""
    names, kinds = [], []
    for no, f in read_list_file(path, header, width=None):
        if len(f) < 2 or f[-1] not in types:
            raise BadDataset(
                f"{path}:{no}: expected NAME TYPE with TYPE one of {', '.join(types)}, found {' '.join(f)!r}"
            )
        names.append(" ".join(f[:-1]))
        kinds.append(types[f[-1]])
    if len(set(names)) != len(names):
        raise BadDataset(f"{path}: a name appears twice")
    return names, kinds


def _category(path: Path, no: int, text: str, n: int) -> int:
    try:
        label = int(text)
    except ValueError:
        label = 0
    if not 1 <= label <= n:
        raise BadDataset(f"{path}:{no}: category label {text!r} is not in 1..{n} (labels are 1-based)")
    return label - 1


def _tags(path: Path, no: int, fields: list[str], n: int, present: str = "1") -> np.ndarray:
    if len(fields) != n:
        raise BadDataset(f"{path}:{no}: expected {n} attribute values, found {len(fields)}")
    bad = next((v for v in fields if v not in ("1", "-1", "0")), None)
    if bad is not None:
        raise BadDataset(f"{path}:{no}: attribute value {bad!r} is not 1, -1 or 0")
    return (np.asarray(fields) == present).astype(np.int8)


def load_attr_benchmark(spec_root: str) -> Dataset:
    root = _root(spec_root)
    if (root / "Anno_fine").is_dir():
        return _load_fine(root)
    anno = root / "Anno"
    cats, cat_types = _names(anno / "list_category_cloth.txt", ["category_name", "category_type"], CATEGORY_TYPES)
    attrs, attr_types = _names(anno / "list_attr_cloth.txt", ["attribute_name", "attribute_type"], ATTRIBUTE_TYPES)
    cat_path = anno / "list_category_img.txt"
    category = {
        f[0]: _category(cat_path, no, f[1], len(cats))
        for no, f in read_list_file(cat_path, ["image_name", "category_label"])
    }
    attr_path = anno / "list_attr_img.txt"
    tags = {
        f[0]: _tags(attr_path, no, f[1:], len(attrs))
        for no, f in read_list_file(attr_path, ["image_name", "attribute_labels"], width=None)
    }
    boxes = _boxes(anno / "list_bbox.txt")
    part = root / "Eval" / "list_eval_partition.txt"
    base, note = image_prefix(root)
    records = []
    for no, (name, status) in read_list_file(part, ["image_name", "evaluation_status"]):
        if status not in SPLITS:
            raise BadDataset(f"{part}:{no}: unknown evaluation_status {status!r} (expected train, val or test)")
        if name not in category or name not in tags:
            missing = "list_category_img.txt" if name not in category else "list_attr_img.txt"
            raise BadDataset(f"{part}:{no}: {name} is not in Anno/{missing}")
        records.append(_record(base, name, status, cats, category[name], tags[name], boxes.get(name)))
    return _dataset("deepfashion-attr", root, records, cats, cat_types, attrs, attr_types, note)


def _boxes(path: Path, header: list[str] | None = None) -> dict[str, tuple[int, int, int, int]]:
    if not path.exists():
        return {}
    out = {}
    for no, f in read_list_file(path, header or ["image_name", "x_1", "y_1", "x_2", "y_2"]):
        out[f[0]] = _box(path, no, f[1:])
    return out


def _box(path: Path, no: int, f: list[str]) -> tuple[int, int, int, int]:
    try:
        x1, y1, x2, y2 = (int(v) for v in f)
    except ValueError:
        raise BadDataset(f"{path}:{no}: bbox coordinates must be 4 integers, found {' '.join(f)!r}") from None
    return x1, y1, x2, y2


def _record(
    base: Path,
    name: str,
    split: str,
    cats: list[str],
    cat: int,
    tags: np.ndarray,
    box: tuple[int, int, int, int] | None,
) -> Record:
    return Record(
        str(base / name),
        name,
        name,  # no item ids in this benchmark: each image is its own item
        split,
        cats[cat],
        bbox=box,
        attrs={"category": cat, "attributes": tags},
    )


def _dataset(
    fmt: str,
    root: Path,
    records: list[Record],
    cats: list[str],
    cat_types: list[str],
    attrs: list[str],
    attr_types: list[str],
    note: str,
) -> Dataset:
    test = [i for i, r in enumerate(records) if r.split == "test"]
    train = [i for i, r in enumerate(records) if r.split == "train"]
    protocol = RetrievalProtocol(
        test,
        train,
        match_on="category",
        description="category retrieval: test images rank the train images; a hit shares the category",
    )
    return Dataset(
        fmt,
        str(root),
        records,
        protocol,
        categories=cats,
        notes=note,
        attributes=[
            Attribute("category", "single", tuple(cats), tuple(cat_types)),
            Attribute("attributes", "multi", tuple(attrs), tuple(attr_types)),
        ],
    )


def _plain_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of an Anno_fine file: no count or header line; blank lines ignored."""
    text = read_annotation(path, "an Anno_fine list file of the fine-grained DeepFashion release")
    return [(no, line.split()) for no, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _load_fine(root: Path) -> Dataset:
    fine = root / "Anno_fine"
    cat_list = fine / "list_category_cloth.txt"
    if not cat_list.exists():
        cat_list = root / "Anno" / "list_category_cloth.txt"
    cats, cat_types = _names(cat_list, ["category_name", "category_type"], CATEGORY_TYPES)
    attrs, attr_types = _names(fine / "list_attr_cloth.txt", ["attribute_name", "attribute_type"], ATTRIBUTE_TYPES)
    base, note = image_prefix(root)
    records = []
    for split in SPLITS:
        names = _plain_lines(fine / f"{split}.txt")
        cat_rows = _plain_lines(fine / f"{split}_cate.txt")
        attr_rows = _plain_lines(fine / f"{split}_attr.txt")
        box_path = fine / f"{split}_bbox.txt"
        box_rows = _plain_lines(box_path) if box_path.exists() else None
        for what, rows in (("_cate", cat_rows), ("_attr", attr_rows), ("_bbox", box_rows)):
            if rows is not None and len(rows) != len(names):
                raise BadDataset(
                    f"{fine / f'{split}{what}.txt'}: {len(rows)} rows, but {split}.txt lists {len(names)} images"
                )
        for k, (no, f) in enumerate(names):
            if len(f) != 1:
                raise BadDataset(f"{fine / f'{split}.txt'}:{no}: expected one image path, found {len(f)} fields")
            cno, cf = cat_rows[k]
            if len(cf) != 1:
                raise BadDataset(
                    f"{fine / f'{split}_cate.txt'}:{cno}: expected one category label, found {len(cf)} fields"
                )
            cat = _category(fine / f"{split}_cate.txt", cno, cf[0], len(cats))
            ano, af = attr_rows[k]
            if any(v not in ("0", "1") for v in af):
                raise BadDataset(f"{fine / f'{split}_attr.txt'}:{ano}: attribute values must be 0 or 1")
            tags = _tags(fine / f"{split}_attr.txt", ano, af, len(attrs))
            box = _box(box_path, box_rows[k][0], box_rows[k][1]) if box_rows is not None else None
            records.append(_record(base, f[0], split, cats, cat, tags, box))
    return _dataset("deepfashion-attr (Anno_fine)", root, records, cats, cat_types, attrs, attr_types, note)
