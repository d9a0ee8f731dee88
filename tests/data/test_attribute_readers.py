"""Attribute datasets read exactly as published: DeepFashion Category and Attribute Prediction
(Anno/ and Anno_fine/), FashionAI's label.csv and a generic attribute CSV; malformed lines name file:line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashion_match.data.attributes import UNKNOWN, labelled, positives
from fashion_match.data.spec import load_dataset
from fashion_match.errors import BadDataset, UsageError

CATS = [("Anorak", 1), ("Blouse", 1), ("Jeans", 2), ("Dress", 3)]
ATTRS = [("a-line", 3), ("floral print", 1), ("abstract chevron print", 1), ("denim", 2), ("boho", 5)]
IMAGES = [
    ("img/Sheer_Pleated-Front_Blouse/img_00000001.jpg", 2, "1 -1 -1 -1 1", "train"),
    ("img/Sheer_Pleated-Front_Blouse/img_00000002.jpg", 2, "-1 1 -1 -1 -1", "train"),
    ("img/Classic_Skinny_Jeans/img_00000001.jpg", 3, "-1 -1 -1 1 -1", "val"),
    ("img/Floral_Maxi_Dress/img_00000001.jpg", 4, "1 1 0 -1 1", "test"),
]


def _pad(a: str, width: int = 60) -> str:
    return a + " " * max(1, width - len(a))  # the official files align columns with runs of spaces


def write_attr_benchmark(root: Path, *, images=IMAGES, attr_header: str = "attribute_name  attribute_type") -> Path:
    (root / "Anno").mkdir(parents=True)
    (root / "Eval").mkdir()
    (root / "img").mkdir()
    anno = root / "Anno"
    (anno / "list_category_cloth.txt").write_text(
        "\n".join([str(len(CATS)), "category_name  category_type", *(f"{_pad(n, 20)}{t}" for n, t in CATS)]) + "\n"
    )
    (anno / "list_attr_cloth.txt").write_text(
        "\n".join([str(len(ATTRS)), attr_header, *(f"{_pad(n, 40)}{t}" for n, t in ATTRS)]) + "\n"
    )
    rows = [str(len(images)), "image_name  category_label", *(f"{_pad(p)}{c}" for p, c, _, _ in images)]
    (anno / "list_category_img.txt").write_text("\n".join(rows) + "\n")
    rows = [str(len(images)), "image_name  attribute_labels", *(f"{_pad(p)}{v}" for p, _, v, _ in images)]
    (anno / "list_attr_img.txt").write_text("\n".join(rows) + "\n")
    rows = [str(len(images)), "image_name  x_1  y_1  x_2  y_2", *(f"{_pad(p)}10 20 150 220" for p, *_ in images)]
    (anno / "list_bbox.txt").write_text("\n".join(rows) + "\n")
    rows = [str(len(images)), "image_name  evaluation_status", *(f"{_pad(p)}{s}" for p, _, _, s in images)]
    (root / "Eval" / "list_eval_partition.txt").write_text("\n".join(rows) + "\n")
    return root


def test_category_and_attribute_benchmark(tmp_path: Path) -> None:
    ds = load_dataset(f"deepfashion-attr:{write_attr_benchmark(tmp_path / 'cap')}")
    cat, tags = ds.attributes
    assert cat.name == "category" and cat.kind == "single" and cat.values == ("Anorak", "Blouse", "Jeans", "Dress")
    assert cat.types == ("upper-body", "upper-body", "lower-body", "full-body")
    assert tags.kind == "multi" and tags.values[2] == "abstract chevron print"  # names with spaces survive
    assert tags.types == ("shape", "texture", "texture", "fabric", "style")
    r = ds.records[0]
    assert r.category == "Blouse" and r.attrs["category"] == 1  # 1-based in the file
    np.testing.assert_array_equal(r.attrs["attributes"], [1, 0, 0, 0, 1])
    np.testing.assert_array_equal(ds.records[3].attrs["attributes"], [1, 1, 0, 0, 1])  # 0: absent, as -1
    assert r.bbox == (10, 20, 150, 220) and Path(str(r.source)).parts[-3] == "img"
    assert ds.split_counts() == {"test": 1, "train": 2, "val": 1}
    assert positives(ds.records, tags).tolist() == [2, 2, 0, 1, 2]
    assert positives(ds.records, cat).tolist() == [0, 2, 1, 1]
    assert ds.protocol.match_on == "category" and len(labelled(ds.records, tags)) == 4


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda i: [(i[0][0], 5, *i[0][2:]), *i[1:]], "list_category_img.txt:3: category label '5' is not in 1..4"),
        (lambda i: [(i[0][0], 0, *i[0][2:]), *i[1:]], "labels are 1-based"),
        (lambda i: [(i[0][0], 2, "1 -1 -1", "train"), *i[1:]], "list_attr_img.txt:3: expected 5 attribute values"),
        (lambda i: [(i[0][0], 2, "1 -1 2 -1 1", "train"), *i[1:]], "list_attr_img.txt:3: attribute value '2'"),
        (
            lambda i: [(i[0][0], 2, "1 -1 -1 -1 1", "holdout"), *i[1:]],
            "list_eval_partition.txt:3: unknown evaluation_status",
        ),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, change, needle: str) -> None:  # noqa: ANN001
    root = write_attr_benchmark(tmp_path / "cap", images=change(IMAGES))
    with pytest.raises(BadDataset, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(f"deepfashion-attr:{root}")


def test_a_wrong_header_or_type_is_refused(tmp_path: Path) -> None:
    root = write_attr_benchmark(tmp_path / "a", attr_header="attribute  type")
    with pytest.raises(BadDataset, match="list_attr_cloth.txt:2: expected header"):
        load_dataset(f"deepfashion-attr:{root}")
    root = write_attr_benchmark(tmp_path / "b")
    text = (root / "Anno" / "list_attr_cloth.txt").read_text().replace("boho" + " " * 36 + "5", "boho" + " " * 36 + "9")
    (root / "Anno" / "list_attr_cloth.txt").write_text(text)
    with pytest.raises(BadDataset, match=r"list_attr_cloth.txt:7: expected NAME TYPE"):
        load_dataset(f"deepfashion-attr:{root}")


def write_fine(root: Path, *, attr_rows: list[str] | None = None) -> Path:
    write_attr_benchmark(root)
    fine = root / "Anno_fine"
    fine.mkdir()
    names = [("texture_a", 1), ("sleeve long", 4), ("fit loose", 6)]
    (fine / "list_attr_cloth.txt").write_text(
        "\n".join([str(len(names)), "attribute_name  attribute_type", *(f"{_pad(n, 30)}{t}" for n, t in names)]) + "\n"
    )
    per_split = {"train": IMAGES[:2], "val": IMAGES[2:3], "test": IMAGES[3:]}
    for split, imgs in per_split.items():
        (fine / f"{split}.txt").write_text("".join(f"{p}\n" for p, *_ in imgs))
        (fine / f"{split}_cate.txt").write_text("".join(f"{c}\n" for _, c, _, _ in imgs))
        rows = attr_rows if (attr_rows and split == "train") else ["1 0 1" for _ in imgs]
        (fine / f"{split}_attr.txt").write_text("".join(f"{r}\n" for r in rows))
        (fine / f"{split}_bbox.txt").write_text("".join("1 2 30 40\n" for _ in imgs))
    return root


def test_fine_grained_release(tmp_path: Path) -> None:
    ds = load_dataset(f"deepfashion-attr:{write_fine(tmp_path / 'f')}")
    assert ds.format == "deepfashion-attr (Anno_fine)"
    assert ds.attributes[1].values == ("texture_a", "sleeve long", "fit loose") and ds.attributes[1].types[2] == "fit"
    assert [r.split for r in ds.records] == ["train", "train", "val", "test"]
    assert ds.records[2].category == "Jeans" and ds.records[2].bbox == (1, 2, 30, 40)
    np.testing.assert_array_equal(ds.records[0].attrs["attributes"], [1, 0, 1])
    with pytest.raises(BadDataset, match=r"train_attr.txt:2: attribute values must be 0 or 1"):
        load_dataset(f"deepfashion-attr:{write_fine(tmp_path / 'g', attr_rows=['1 0 1', '1 -1 0'])}")
    with pytest.raises(BadDataset, match=r"train_attr.txt: 1 rows, but train.txt lists 2 images"):
        load_dataset(f"deepfashion-attr:{write_fine(tmp_path / 'h', attr_rows=['1 0 1'])}")


def write_fashionai(root: Path, rows: list[str]) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "label.csv").write_text("\n".join(rows) + "\n")
    return root


FAI = [
    "Images/collar_design_labels/0a0b6f.jpg,collar_design_labels,nnynn",
    "Images/collar_design_labels/1b2c3d.jpg,collar_design_labels,nnmyn",
    "Images/collar_design_labels/2c3d4e.jpg,collar_design_labels,nmnmn",
    "Images/sleeve_length_labels/3d4e5f.jpg,sleeve_length_labels,nnnnnnnny",
    "Images/collar_design_labels/3d4e5f.jpg,collar_design_labels,ynnnn",
]


def test_fashionai_labels(tmp_path: Path) -> None:
    ds = load_dataset(f"fashionai:{write_fashionai(tmp_path / 'fa', FAI)}")
    names = [a.name for a in ds.attributes]
    assert len(names) == 8 and sum(len(a.values) for a in ds.attributes) == 54  # 8 attributes, 54 values
    by = {r.name: r for r in ds.records}
    assert by["Images/collar_design_labels/0a0b6f.jpg"].attrs["collar_design"] == 2  # its one y
    assert by["Images/collar_design_labels/1b2c3d.jpg"].attrs["collar_design"] == 3  # y beside an m: the y
    assert by["Images/collar_design_labels/2c3d4e.jpg"].attrs["collar_design"] == UNKNOWN  # maybe only: ignored
    assert by["Images/collar_design_labels/0a0b6f.jpg"].attrs["sleeve_length"] == UNKNOWN  # not labelled for it
    one = by["Images/sleeve_length_labels/3d4e5f.jpg"]
    assert one.attrs["sleeve_length"] == 8 and one.attrs["collar_design"] == UNKNOWN  # two rows, two images
    assert {r.split for r in ds.records} <= {"train", "val", "test"}
    again = load_dataset(f"fashionai:{tmp_path / 'fa'}")
    assert [r.split for r in again.records] == [r.split for r in ds.records]  # the hash split is stable


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("Images/x.jpg,collar_design_labels,nnyn", "label.csv:6: label 'nnyn' must be 5 characters"),
        ("Images/x.jpg,collar_design_labels,nnxnn", "must be 5 characters of y, n, m"),
        ("Images/x.jpg,hat_labels,yn", "label.csv:6: unknown attribute_key 'hat_labels'"),
        ("Images/x.jpg,collar_design_labels", "label.csv:6: expected image_path,attribute_key,label"),
        (FAI[0], "label.csv:6: Images/collar_design_labels/0a0b6f.jpg is labelled for collar_design_labels a second"),
    ],
)
def test_fashionai_malformed_rows(tmp_path: Path, row: str, needle: str) -> None:
    root = write_fashionai(tmp_path / "fa", [*FAI, row])
    with pytest.raises(BadDataset, match=needle.replace("(", r"\(")):
        load_dataset(f"fashionai:{root}")


def test_generic_attribute_csv(tmp_path: Path) -> None:
    (tmp_path / "attrs.csv").write_text(
        "path,colour,pattern,monochrome,bright,split\n"
        "a.jpg,red,plain,1,1,train\nb.jpg,blue,,0,1,train\nc.jpg,red,stripes,1,0,test\n"
    )
    ds = load_dataset(f"attr-csv:{tmp_path / 'attrs.csv'}")
    colour, pattern, tags = ds.attributes
    assert colour.values == ("blue", "red") and pattern.values == ("plain", "stripes")
    assert tags.kind == "multi" and tags.values == ("monochrome", "bright")
    assert ds.records[1].attrs["pattern"] == UNKNOWN and ds.records[0].attrs["colour"] == 1
    np.testing.assert_array_equal(ds.records[2].attrs["tags"], [1, 0])
    (tmp_path / "bad.csv").write_text("path,colour\na.jpg,red,extra\n")
    with pytest.raises(BadDataset, match=r"bad.csv:2: expected 2 fields"):
        load_dataset(f"attr-csv:{tmp_path / 'bad.csv'}")


def test_item_retrieval_on_an_attribute_protocol_is_refused(tmp_path: Path) -> None:
    from fashion_match.data.evalset import load_eval_set
    from fashion_match.data.preprocess import PreprocessSpec

    root = write_fashionai(tmp_path / "fa", FAI)
    with pytest.raises(UsageError, match="attribute retrieval"):
        load_eval_set(f"fashionai:{root}", PreprocessSpec(size=32), (2, 2), (2, 2))


def test_fm_data_check_reports_the_imbalance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from fashion_match.cli.data import main
    from tests.conftest import run_cli

    root = write_attr_benchmark(tmp_path / "cap")
    code, out, _ = run_cli(capsys, main, "check", f"deepfashion-attr:{root}", "--json")
    assert code == 0
    tags = json.loads(out)["attributes"][1]
    assert tags["name"] == "attributes" and tags["labelled_images"] == 4 and tags["never_positive"] == 1
    assert tags["positives"]["a-line"] == 2 and tags["most_to_least"] == 2.0
