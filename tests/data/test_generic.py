from __future__ import annotations

from pathlib import Path

import pytest

from fashion_match.data.spec import load_dataset
from fashion_match.errors import BadDataset, UsageError
from tests.conftest import photo


def make_folder(root: Path, layout: dict[str, int]) -> Path:
    for item, n in layout.items():
        (root / item).mkdir(parents=True)
        for i in range(n):
            photo(40, 40, seed=i).save(root / item / f"foto {i}.jpg")
    (root / "README.txt").write_text("ignored")
    return root


def test_folder_leave_one_out(odd_dir: Path) -> None:
    ds = load_dataset(f"folder:{make_folder(odd_dir, {'item a': 3, 'item ß': 2, 'solo': 1})}")
    assert ds.format == "folder" and len(ds.records) == 6 and ds.n_items() == 3
    assert len(ds.protocol.queries) == 5  # the solo item cannot be queried
    assert len(ds.protocol.gallery) == 6 and ds.protocol.exclude_self


def test_folder_with_split_layout(odd_dir: Path) -> None:
    make_folder(odd_dir / "query", {"x": 1, "y": 1})
    make_folder(odd_dir / "gallery", {"x": 2, "y": 1})
    make_folder(odd_dir / "train", {"z": 2})
    ds = load_dataset(f"folder:{odd_dir}")
    assert ds.split_counts() == {"gallery": 3, "query": 2, "train": 2}
    assert len(ds.protocol.queries) == 2 and len(ds.protocol.gallery) == 3 and not ds.protocol.exclude_self


def test_folder_errors(odd_dir: Path) -> None:
    with pytest.raises(BadDataset, match="no images found"):
        load_dataset(f"folder:{odd_dir}")
    (odd_dir / "empty item").mkdir()
    with pytest.raises(BadDataset, match="no images found"):
        load_dataset(f"folder:{odd_dir}")
    with pytest.raises(BadDataset, match="not a directory"):
        load_dataset(f"folder:{odd_dir / 'nowhere'}")


def test_one_spec_syntax_for_every_layout(odd_dir: Path) -> None:
    """A bare folder is folder:DIR; a flat folder's images are items of their own; a bare .csv is csv:FILE;
    an existing path wins over a format name."""
    from fashion_match.data.spec import parse_spec

    flat = odd_dir / "flat"
    flat.mkdir()
    for n in ("a.jpg", "b.png"):
        photo(30, 30).save(flat / n)
    (flat / "sku9").mkdir()
    photo(30, 30).save(flat / "sku9" / "front.jpg")
    for spec in (str(flat), f"folder:{flat}"):
        ds = load_dataset(spec)
        assert [(r.name, r.item_id) for r in ds.records] == [("a.jpg", "a"), ("b.png", "b"), ("sku9/front.jpg", "sku9")]
    (odd_dir / "list.csv").write_text("path,item_id\nflat/a.jpg,A\n")
    assert parse_spec(str(odd_dir / "list.csv")) == ("csv", str(odd_dir / "list.csv"))
    named = odd_dir / "fashion-mnist"
    named.mkdir()
    photo(30, 30).save(named / "x.jpg")
    assert parse_spec(str(named)) == ("folder", str(named))
    assert parse_spec("fashion-mnist") == ("fashion-mnist", None)  # not a path here: the format


def test_csv_with_domains(odd_dir: Path) -> None:
    for n in ("s1.jpg", "c1.jpg", "s2.jpg", "c2.jpg", "t.jpg"):
        photo(30, 30).save(odd_dir / n)
    (odd_dir / "list ü.csv").write_text(
        "path,item_id,split,domain\n"
        "s1.jpg,A,test,shop\nc1.jpg,A,test,consumer\ns2.jpg,B,test,shop\nc2.jpg,B,test,consumer\nt.jpg,C,train,\n"
    )
    ds = load_dataset(f"csv:{odd_dir / 'list ü.csv'}")
    assert ds.split_counts() == {"test": 4, "train": 1}
    assert [ds.records[i].name for i in ds.protocol.queries] == ["c1.jpg", "c2.jpg"]
    assert [ds.records[i].name for i in ds.protocol.gallery] == ["s1.jpg", "s2.jpg"]
    assert Path(ds.records[0].source) == odd_dir / "s1.jpg"


def test_csv_minimal_columns(odd_dir: Path) -> None:
    (odd_dir / "l.csv").write_text("item_id,path\nA,a1.jpg\nA,a2.jpg\nB,b.jpg\n")
    ds = load_dataset(f"csv:{odd_dir / 'l.csv'}")
    assert ds.split_counts() == {"all": 3} and len(ds.protocol.queries) == 2


@pytest.mark.parametrize(
    "text, match",
    [
        ("file,item\na.jpg,A\n", ":1: header must name"),
        ("path,item_id,split\na.jpg,A,train\nb.jpg,B,holdout\n", ":3: unknown split 'holdout'"),
        ("path,item_id,domain\na.jpg,A,street\n", ":2: unknown domain 'street'"),
        ("path,item_id\na.jpg,A,extra\n", ":2: expected 2 fields"),
        ("path,item_id\n,A\n", ":2: path and item_id must not be empty"),
        ("path,item_id,colour\n", ":1: unknown columns"),
        ("path,item_id\n", "no rows"),
    ],
)
def test_csv_malformed(odd_dir: Path, text: str, match: str) -> None:
    (odd_dir / "l.csv").write_text(text)
    with pytest.raises(BadDataset, match=match):
        load_dataset(f"csv:{odd_dir / 'l.csv'}")


def test_spec_errors() -> None:
    with pytest.raises(UsageError, match="no such folder or CSV file, and 'imagenet' is not a format"):
        load_dataset("imagenet:/x")
    with pytest.raises(UsageError, match="needs an argument"):
        load_dataset("folder")
