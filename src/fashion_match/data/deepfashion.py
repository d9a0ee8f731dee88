"""DeepFashion In-shop and Consumer-to-shop, read exactly as the official files are written.

Each list file starts with a row-count line and a header line; fields are separated by runs of
spaces. Any deviation is a `BadDataset` naming the file and line number.
"""

from __future__ import annotations

from pathlib import Path

from fashion_match.data.records import Dataset, Record, RetrievalProtocol, read_annotation
from fashion_match.errors import BadDataset

INSHOP_PARTITION_HEADER = ["image_name", "item_id", "evaluation_status"]
INSHOP_BBOX_HEADER = ["image_name", "clothes_type", "pose_type", "x_1", "y_1", "x_2", "y_2"]
C2S_PARTITION_HEADER = ["image_pair_name_1", "image_pair_name_2", "item_id", "evaluation_status"]
C2S_BBOX_HEADER = ["image_name", "clothes_type", "source_type", "x_1", "y_1", "x_2", "y_2"]
INSHOP_STATUSES = ("train", "query", "gallery")
C2S_STATUSES = ("train", "val", "test")
CLOTHES_TYPES = {"1": "upper-body", "2": "lower-body", "3": "full-body"}


def read_list_file(path: Path, header: list[str], *, width: int | None = -1) -> list[tuple[int, list[str]]]:
    """Rows of an official list file as (line number, fields); checks the count line, the header
    and that every row has `width` fields (default: as many as the header; None: any number)."""
    text = read_annotation(path, "the official DeepFashion list file")
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise BadDataset(f"{path}:1: empty file; expected the number of rows on line 1")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise BadDataset(f"{path}:1: expected the number of rows, found {lines[0].strip()[:60]!r}") from None
    if len(lines) < 2 or lines[1].split() != header:
        found = lines[1].strip()[:80] if len(lines) > 1 else "end of file"
        raise BadDataset(f"{path}:2: expected header {' '.join(header)!r}, found {found!r}")
    want = len(header) if width == -1 else width
    rows: list[tuple[int, list[str]]] = []
    for no, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue  # trailing blank lines
        if want is not None and len(fields) != want:
            raise BadDataset(f"{path}:{no}: expected {want} fields ({' '.join(header)}), found {len(fields)}")
        rows.append((no, fields))
    if len(rows) != count:
        raise BadDataset(f"{path}:1: says {count} rows but the file has {len(rows)}")
    return rows


def _check_status(path: Path, no: int, status: str, allowed: tuple[str, ...]) -> None:
    if status not in allowed:
        raise BadDataset(f"{path}:{no}: unknown evaluation_status {status!r} (expected one of {', '.join(allowed)})")


def _read_bboxes(path: Path, header: list[str]) -> dict[str, tuple[str, str, tuple[int, int, int, int]]]:
    """image_name -> (clothes_type, pose_or_source, bbox). The bbox file is optional."""
    if not path.exists():
        return {}
    out = {}
    for no, f in read_list_file(path, header):
        try:
            box = (int(f[3]), int(f[4]), int(f[5]), int(f[6]))
        except ValueError:
            raise BadDataset(f"{path}:{no}: bbox coordinates must be integers, found {' '.join(f[3:])!r}") from None
        out[f[0]] = (f[1], f[2], box)
    return out


def _root(spec_root: str) -> Path:
    root = Path(spec_root).expanduser()
    if not root.is_dir():
        raise BadDataset(f"{root}: not a directory (expected the DeepFashion benchmark root with Eval/ and Img/)")
    return root


def image_prefix(root: Path) -> tuple[Path, str]:
    """Where the list files' `img/...` paths start, and a note saying which layout was found.

    As released, each benchmark unpacks its images to ROOT/Img/img/... and the lists are relative
    to Img/ (OpenMMLab's loaders use data_prefix='Img'); some users unpack to ROOT/img/... instead.
    """
    for prefix, layout in ((root / "Img", "Img/img/ (as released)"), (root, "img/")):
        if (prefix / "img").is_dir():
            return prefix, f"images under {layout}"
    raise BadDataset(
        f"{root}: no image folder; looked for {root / 'Img' / 'img'} (the release's layout) and {root / 'img'}"
    )


def load_inshop(root_s: str) -> Dataset:
    root = _root(root_s)
    part = root / "Eval" / "list_eval_partition.txt"
    rows = read_list_file(part, INSHOP_PARTITION_HEADER)
    first_line: dict[str, int] = {}
    for no, (name, _, status) in rows:  # the whole list is checked before any folder is looked at
        _check_status(part, no, status, INSHOP_STATUSES)
        if name in first_line:  # the official list names each image once; a repeat is a damaged copy
            raise BadDataset(f"{part}:{no}: {name} is listed again (first on line {first_line[name]})")
        first_line[name] = no
    boxes = _read_bboxes(root / "Anno" / "list_bbox_inshop.txt", INSHOP_BBOX_HEADER)
    prefix, layout = image_prefix(root)
    records: list[Record] = []
    for _, (name, item, status) in rows:
        clothes, _, box = boxes.get(name, (None, None, None))
        records.append(
            Record(
                source=prefix / name,
                name=name,
                item_id=item,
                split=status,
                category=_category_from_path(name) or CLOTHES_TYPES.get(clothes or ""),
                domain="shop",
                bbox=box,
            )
        )
    protocol = RetrievalProtocol(
        queries=[i for i, r in enumerate(records) if r.split == "query"],
        gallery=[i for i, r in enumerate(records) if r.split == "gallery"],
        match_on="item_id",
        description="In-shop: each query ranks the whole gallery; a hit shares the item_id",
    )
    notes = f"{layout}; bbox file: {'yes' if boxes else 'no'}"
    return Dataset("deepfashion-inshop", str(root), records, protocol, notes=notes)


def load_c2s(root_s: str) -> Dataset:
    root = _root(root_s)
    part = root / "Eval" / "list_eval_partition.txt"
    rows = read_list_file(part, C2S_PARTITION_HEADER)
    boxes = _read_bboxes(root / "Anno" / "list_bbox_consumer2shop.txt", C2S_BBOX_HEADER)
    for no, (*_, status) in rows:  # the whole list is checked before any folder is looked at
        _check_status(part, no, status, C2S_STATUSES)
    prefix, layout = image_prefix(root)
    seen: dict[str, Record] = {}
    for no, (consumer, shop, item, status) in rows:
        for name, domain in ((consumer, "consumer"), (shop, "shop")):
            prev = seen.get(name)
            if prev is not None:
                if prev.item_id != item or prev.split != status:
                    raise BadDataset(
                        f"{part}:{no}: {name} appears before with item {prev.item_id}/{prev.split}, "
                        f"here with {item}/{status}"
                    )
                continue
            clothes, _, box = boxes.get(name, (None, None, None))
            seen[name] = Record(
                source=prefix / name,
                name=name,
                item_id=item,
                split=status,
                category=_category_from_path(name) or CLOTHES_TYPES.get(clothes or ""),
                domain=domain,
                bbox=box,
            )
    records = list(seen.values())
    protocol = RetrievalProtocol(
        queries=[i for i, r in enumerate(records) if r.split == "test" and r.domain == "consumer"],
        gallery=[i for i, r in enumerate(records) if r.split in ("val", "test") and r.domain == "shop"],
        match_on="item_id",
        description="Consumer-to-shop: test consumer photos rank all val+test shop photos",
    )
    notes = f"{layout}; bbox file: {'yes' if boxes else 'no'}"
    return Dataset("deepfashion-c2s", str(root), records, protocol, notes=notes)


def _category_from_path(name: str) -> str | None:
    """img/WOMEN/Dresses/id_x/.. -> "WOMEN/Dresses"; img/TOPS/Summer_Wear/.. -> "TOPS/Summer_Wear"."""
    parts = name.split("/")
    return "/".join(parts[1:3]) if len(parts) >= 5 and parts[0] == "img" else None
