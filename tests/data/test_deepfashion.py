from __future__ import annotations

from pathlib import Path

import pytest

from fashion_match.data.spec import load_dataset
from fashion_match.errors import BadDataset
from tests.conftest import photo

INSHOP_ROWS = [
    ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train"),
    ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "train"),
    ("img/MEN/Denim/id_00000080/01_1_front.jpg", "id_00000080", "query"),
    ("img/MEN/Denim/id_00000080/01_2_side.jpg", "id_00000080", "gallery"),
    ("img/MEN/Denim/id_00000081/01_1_front.jpg", "id_00000081", "gallery"),
]


def write_inshop(
    root: Path,
    rows=INSHOP_ROWS,
    header="image_name item_id evaluation_status",
    count=None,
    bbox: bool = True,
    images: bool = True,
    released: bool = False,
) -> Path:
    """An In-shop root; `released` puts the images under Img/img/ as the official archive does."""
    (root / "Eval").mkdir(parents=True, exist_ok=True)
    lines = [str(len(rows) if count is None else count), header]
    # the official files align columns with runs of spaces
    lines += [f"{a}{' ' * (50 - len(a))}{b}   {c}" for a, b, c in rows]
    (root / "Eval" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    if bbox:
        (root / "Anno").mkdir(exist_ok=True)
        b = [str(len(rows)), "image_name  clothes_type  pose_type  x_1  y_1  x_2  y_2"]
        b += [f"{r[0]}    1    1    10   20   200   240" for r in rows]
        (root / "Anno" / "list_bbox_inshop.txt").write_text("\n".join(b) + "\n")
    if images:
        for i, r in enumerate(rows):
            p = root / ("Img" if released else "") / r[0]
            p.parent.mkdir(parents=True, exist_ok=True)
            photo(256, 256, seed=i).save(p)
    return root


C2S_ROWS = [
    (
        "img/TOPS/Summer_Wear/id_00000001/comsumer_01.jpg",
        "img/TOPS/Summer_Wear/id_00000001/shop_01.jpg",
        "id_00000001",
        "train",
    ),
    (
        "img/TOPS/Summer_Wear/id_00000001/comsumer_02.jpg",
        "img/TOPS/Summer_Wear/id_00000001/shop_01.jpg",
        "id_00000001",
        "train",
    ),
    (
        "img/DRESSES/Dress/id_00000007/comsumer_01.jpg",
        "img/DRESSES/Dress/id_00000007/shop_01.jpg",
        "id_00000007",
        "val",
    ),
    (
        "img/DRESSES/Dress/id_00000009/comsumer_01.jpg",
        "img/DRESSES/Dress/id_00000009/shop_01.jpg",
        "id_00000009",
        "test",
    ),
    (
        "img/DRESSES/Dress/id_00000009/comsumer_02.jpg",
        "img/DRESSES/Dress/id_00000009/shop_02.jpg",
        "id_00000009",
        "test",
    ),
]


def write_c2s(
    root: Path,
    rows=C2S_ROWS,
    header="image_pair_name_1 image_pair_name_2 item_id evaluation_status",
    released: bool = False,
) -> Path:
    (root / "Eval").mkdir(parents=True, exist_ok=True)
    lines = [str(len(rows)), header] + ["  ".join(r) for r in rows]
    (root / "Eval" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    for r in rows:
        for name in r[:2]:
            p = root / ("Img" if released else "") / name
            if not p.exists():
                p.parent.mkdir(parents=True, exist_ok=True)
                photo(300, 200).save(p)
    return root


def test_inshop_reads_official_format(odd_dir: Path) -> None:
    ds = load_dataset(f"deepfashion-inshop:{write_inshop(odd_dir)}")
    assert ds.format == "deepfashion-inshop"
    assert ds.split_counts() == {"gallery": 2, "query": 1, "train": 2}
    assert ds.n_items() == 3
    q = [ds.records[i] for i in ds.protocol.queries]
    g = [ds.records[i] for i in ds.protocol.gallery]
    assert [r.name for r in q] == ["img/MEN/Denim/id_00000080/01_1_front.jpg"]
    assert {r.item_id for r in g} == {"id_00000080", "id_00000081"}
    assert ds.records[0].bbox == (10, 20, 200, 240)
    assert ds.records[0].category == "WOMEN/Dresses"
    assert Path(ds.records[0].source).is_file()


def test_inshop_bbox_file_optional(odd_dir: Path) -> None:
    ds = load_dataset(f"deepfashion-inshop:{write_inshop(odd_dir, bbox=False)}")
    assert all(r.bbox is None for r in ds.records)


@pytest.mark.parametrize(
    "kwargs, where, what",
    [
        ({"header": "image item status"}, ":2:", "expected header"),
        ({"count": 7}, ":1:", "says 7 rows"),
        ({"count": "five"}, ":1:", "number of rows"),
        ({"rows": INSHOP_ROWS[:2] + [("img/a.jpg", "id_1", "valid")]}, ":5:", "unknown evaluation_status 'valid'"),
        ({"rows": INSHOP_ROWS[:1] + [("img/a.jpg", "id_1 extra", "train")]}, ":4:", "expected 3 fields"),
    ],
)
def test_inshop_malformed_partition(odd_dir: Path, kwargs: dict, where: str, what: str) -> None:
    root = write_inshop(odd_dir, images=False, bbox=False, **kwargs)
    with pytest.raises(BadDataset) as ei:
        load_dataset(f"deepfashion-inshop:{root}")
    msg = str(ei.value)
    assert f"list_eval_partition.txt{where}" in msg and what in msg


def test_inshop_missing_files(odd_dir: Path) -> None:
    with pytest.raises(BadDataset, match="list_eval_partition.txt: missing"):
        load_dataset(f"deepfashion-inshop:{odd_dir}")
    with pytest.raises(BadDataset, match="not a directory"):
        load_dataset(f"deepfashion-inshop:{odd_dir / 'nope'}")


def test_bbox_file_malformed(odd_dir: Path) -> None:
    root = write_inshop(odd_dir, images=False)
    bb = root / "Anno" / "list_bbox_inshop.txt"
    bb.write_text(bb.read_text().replace("10   20", "ten   20", 1))
    with pytest.raises(BadDataset, match=r"list_bbox_inshop.txt:3: bbox coordinates"):
        load_dataset(f"deepfashion-inshop:{root}")


def test_c2s_reads_official_format(odd_dir: Path) -> None:
    ds = load_dataset(f"deepfashion-c2s:{write_c2s(odd_dir)}")
    assert ds.format == "deepfashion-c2s"
    # unique images: 4 consumer + ... shops (shop_01 of item 1 listed twice)
    names = [r.name for r in ds.records]
    assert len(names) == len(set(names)) == 9
    consumers = [r for r in ds.records if r.domain == "consumer"]
    assert all("comsumer" in r.name for r in consumers) and len(consumers) == 5
    q = {ds.records[i].name for i in ds.protocol.queries}
    g = {ds.records[i].name for i in ds.protocol.gallery}
    assert q == {C2S_ROWS[3][0], C2S_ROWS[4][0]}  # consumer photos of test
    assert g == {C2S_ROWS[2][1], C2S_ROWS[3][1], C2S_ROWS[4][1]}  # shop photos of val + test
    assert ds.split_counts() == {"test": 4, "train": 3, "val": 2}


def test_c2s_malformed(odd_dir: Path) -> None:
    root = write_c2s(odd_dir, rows=C2S_ROWS[:2] + [(C2S_ROWS[2][0], C2S_ROWS[2][1], "id_00000007", "query")])
    with pytest.raises(BadDataset, match=r"list_eval_partition.txt:5: unknown evaluation_status 'query'"):
        load_dataset(f"deepfashion-c2s:{root}")
    root2 = odd_dir / "second"
    write_c2s(root2, header="image_name item_id evaluation_status")
    with pytest.raises(BadDataset, match=r":2: expected header"):
        load_dataset(f"deepfashion-c2s:{root2}")


def test_c2s_conflicting_item(odd_dir: Path) -> None:
    rows = C2S_ROWS[:1] + [(C2S_ROWS[0][0], C2S_ROWS[2][1], "id_00000007", "val")]
    with pytest.raises(BadDataset, match=r":4: .*appears before"):
        load_dataset(f"deepfashion-c2s:{write_c2s(odd_dir, rows=rows)}")


@pytest.mark.parametrize("released", [True, False])
def test_both_image_layouts_are_found(odd_dir: Path, released: bool) -> None:
    from fashion_match.data.check import check_dataset

    inshop = load_dataset(f"deepfashion-inshop:{write_inshop(odd_dir / 'inshop', released=released)}")
    c2s = load_dataset(f"deepfashion-c2s:{write_c2s(odd_dir / 'c2s', released=released)}")
    for ds in (inshop, c2s):
        report = check_dataset(ds, progress=False)
        assert report["bad"] == [] and report["notes"] == ds.notes  # every listed image is found, and where
        assert ("Img/img/ (as released)" if released else "images under img/") in ds.notes
        assert all(("/Img/img/" in str(r.source)) == released for r in ds.records)


def test_no_image_folder_says_what_was_looked_for(odd_dir: Path) -> None:
    root = write_inshop(odd_dir, images=False)
    with pytest.raises(BadDataset, match=r"no image folder; looked for .*Img/img \(the release's layout\) and .*/img"):
        load_dataset(f"deepfashion-inshop:{root}")


def test_inshop_image_listed_twice_is_refused_with_its_line(odd_dir: Path) -> None:
    rows = INSHOP_ROWS + [(INSHOP_ROWS[1][0], "id_00000099", "gallery")]
    root = write_inshop(odd_dir, rows=rows)
    with pytest.raises(
        BadDataset, match=r"list_eval_partition.txt:8: .*02_2_side.jpg is listed again \(first on line 4\)"
    ):
        load_dataset(f"deepfashion-inshop:{root}")
