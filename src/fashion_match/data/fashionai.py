"""FashionAI attributes (`fashionai:DIR`) and a generic attribute CSV (`attr-csv:FILE`).

FashionAI (Global Challenge 2018, ASEN's attribute-specific retrieval data): `DIR/Annotations/label.csv`,
no header, rows `image_path,attribute_key,label`, the label one character per value of that attribute:
`y` this value, `n` not, `m` maybe. An image's value is its one `y`; a label with `m` marks (and no
single `y`) leaves the image unlabelled for that attribute (`UNKNOWN`: ignored in training, left out
of evaluation). Value names are FashionAI's, as ASEN lists them. The release has no split: a seeded
hash of the image path puts 80 % in train, 10 % in val, 10 % in test (stable across runs and copies).
The protocol is ASEN's: per attribute, test images query the other labelled test images.

Generic CSV: a header `path,<attribute>,...` (optional `item_id`, `split`, `category` columns);
columns whose every value is 0 or 1 are multi-label tags (gathered into one `tags` attribute), the
others single-valued (values sorted by name; an empty cell is unknown).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from fashion_match.data.attributes import UNKNOWN, Attribute
from fashion_match.data.records import SPLITS, Dataset, Record, RetrievalProtocol, read_annotation
from fashion_match.errors import BadDataset

# attribute key -> its values, in the order of the label strings (FashionAI's published order)
FASHIONAI_VALUES: dict[str, tuple[str, ...]] = {
    "skirt_length_labels": ("invisible", "short", "knee", "midi", "ankle", "floor"),
    "coat_length_labels": ("invisible", "high waist", "regular", "long", "micro", "knee", "midi", "ankle-floor"),
    "collar_design_labels": ("invisible", "shirt collar", "peter pan", "puritan collar", "rib collar"),
    "lapel_design_labels": ("invisible", "notched", "collarless", "shawl collar", "plus size shawl"),
    "neck_design_labels": ("invisible", "turtle neck", "ruffle semi-high collar", "low turtle neck", "draped collar"),
    "neckline_design_labels": (
        "invisible",
        "strapless neck",
        "deep v neckline",
        "straight neck",
        "v neckline",
        "square neckline",
        "off shoulder",
        "round neckline",
        "sweat heart neck",
        "one shoulder neckline",
    ),
    "pant_length_labels": ("invisible", "short", "mid", "3/4", "cropped", "full"),
    "sleeve_length_labels": (
        "invisible",
        "sleeveless",
        "cup sleeves",
        "short sleeves",
        "elbow sleeves",
        "3/4 sleeves",
        "wrist length",
        "long sleeves",
        "extra long sleeves",
    ),
}


def hash_split(name: str) -> str:
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big") % 10
    return "test" if h == 0 else "val" if h == 1 else "train"


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    text = read_annotation(path, "a CSV file")
    reader = csv.reader(text.splitlines())
    try:
        return [(reader.line_num, row) for row in reader if row and any(c.strip() for c in row)]
    except csv.Error as e:
        raise BadDataset(f"{path}:{reader.line_num}: not readable as CSV ({e})") from None


def load_fashionai(spec_root: str) -> Dataset:
    root = Path(spec_root).expanduser()
    path = root / "Annotations" / "label.csv"
    attrs = [Attribute(k.removesuffix("_labels"), "single", v) for k, v in FASHIONAI_VALUES.items()]
    slot = {k: i for i, k in enumerate(FASHIONAI_VALUES)}
    by_image: dict[str, dict[str, int]] = {}
    for no, row in _rows(path):
        if len(row) != 3:
            raise BadDataset(f"{path}:{no}: expected image_path,attribute_key,label, found {len(row)} fields")
        image, key, label = (c.strip() for c in row)
        if key not in slot:
            raise BadDataset(f"{path}:{no}: unknown attribute_key {key!r} (known: {', '.join(FASHIONAI_VALUES)})")
        values = FASHIONAI_VALUES[key]
        if len(label) != len(values) or set(label) - set("ynm"):
            raise BadDataset(
                f"{path}:{no}: label {label!r} must be {len(values)} characters of y, n, m (one per {key} value)"
            )
        name = attrs[slot[key]].name
        if name in by_image.setdefault(image, {}):
            raise BadDataset(f"{path}:{no}: {image} is labelled for {key} a second time")
        by_image[image][name] = label.index("y") if label.count("y") == 1 else UNKNOWN
    if not by_image:
        raise BadDataset(f"{path}: no label rows")
    records = []
    for image, labels in by_image.items():
        full = {a.name: labels.get(a.name, UNKNOWN) for a in attrs}
        records.append(Record(str(root / image), image, image, hash_split(image), attrs=full))
    test = [i for i, r in enumerate(records) if r.split == "test"]
    protocol = RetrievalProtocol(
        test,
        test,
        match_on="attrs",
        exclude_self=True,
        description="ASEN attribute retrieval: per attribute, test images query the other test images "
        "labelled for it; relevant = the same value",
    )
    notes = "no split in the release: a hash of the image path puts 80/10/10 % in train/val/test"
    return Dataset("fashionai", str(root), records, protocol, notes=notes, attributes=attrs)


def load_attr_csv(file_s: str) -> Dataset:
    path = Path(file_s).expanduser()
    rows = _rows(path)
    if not rows:
        raise BadDataset(f"{path}: empty; expected a header path,<attribute>,...")
    header = [h.strip() for h in rows[0][1]]
    if not header or header[0] != "path" or len(set(header)) != len(header):
        raise BadDataset(f"{path}:1: header must start with path and name each column once, found {header}")
    fixed = {"item_id", "split", "category"}
    cols = [i for i, h in enumerate(header) if i and h not in fixed]
    if not cols:
        raise BadDataset(f"{path}:1: no attribute columns after path")
    body = rows[1:]
    for no, row in body:
        if len(row) != len(header):
            raise BadDataset(f"{path}:{no}: expected {len(header)} fields, found {len(row)}")
    cells = {i: [row[i].strip() for _, row in body] for i in cols}
    multi = [i for i in cols if cells[i] and all(v in ("0", "1") for v in cells[i])]
    single = [i for i in cols if i not in multi]
    attrs = [Attribute(header[i], "single", tuple(sorted({v for v in cells[i] if v}))) for i in single]
    if multi:
        attrs.append(Attribute("tags", "multi", tuple(header[i] for i in multi)))
    col = {h: i for i, h in enumerate(header)}
    records = []
    for k, (no, row) in enumerate(body):
        split = row[col["split"]].strip() if "split" in col else "all"
        if split not in (*SPLITS, "all"):
            raise BadDataset(f"{path}:{no}: unknown split {split!r} (expected one of {', '.join(SPLITS)})")
        labels: dict[str, object] = {}
        for a, i in zip(attrs, single, strict=False):
            labels[a.name] = a.values.index(cells[i][k]) if cells[i][k] else UNKNOWN
        if multi:
            labels["tags"] = np.array([int(cells[i][k]) for i in multi], np.int8)
        image = row[0].strip()
        item = row[col["item_id"]].strip() if "item_id" in col else image
        category = row[col["category"]].strip() or None if "category" in col else None
        records.append(Record(str(path.parent / image), image, item, split, category, attrs=labels))
    evalset = [i for i, r in enumerate(records) if r.split == "test"] or list(range(len(records)))
    protocol = RetrievalProtocol(
        evalset,
        evalset,
        match_on="attrs",
        exclude_self=True,
        description="attribute retrieval: per attribute, images of the test split (or all) query the others",
    )
    return Dataset("attr-csv", str(path), records, protocol, attributes=attrs)
