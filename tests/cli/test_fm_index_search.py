from __future__ import annotations

import json
from pathlib import Path

import pytest

from fashion_match.cli.index import main as fm_index
from fashion_match.cli.search import main as fm_search
from tests.conftest import photo


def run(capsys: pytest.CaptureFixture[str], main, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as ei:
        main(list(args))
    out, err = capsys.readouterr()
    return int(ei.value.code or 0), out, err


@pytest.fixture
def built(odd_dir: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    src = odd_dir / "shop photos"
    for i in range(4):
        (src / f"sku{i}").mkdir(parents=True)
        photo(40, 40, seed=i).save(src / f"sku{i}" / "front.png")
    (src / "sku0" / "empty.jpg").write_bytes(b"")
    idx = odd_dir / "index dir"
    code, out, err = run(
        capsys, fm_index, "build", str(src), "--out", str(idx), "--model", str(tiny_model_dir), "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["images"] == 4 and report["skipped"] == 1
    assert report["skipped_files"][0]["path"].endswith("empty.jpg")
    return src, idx


def test_search_json_batches_queries(
    built: tuple[Path, Path], tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, idx = built
    q = [str(src / "sku1" / "front.png"), str(src / "sku3" / "front.png"), str(src / "missing.png")]
    code, out, err = run(
        capsys, fm_search, *q, "--index", str(idx), "-k", "2", "--json", "--model", str(tiny_model_dir)
    )
    assert code == 0
    res = json.loads(out)
    assert set(res) == {"engine", "k", "threshold", "results", "bad"}
    assert res["threshold"] == 0.5  # the tiny model's
    assert [r["query"] for r in res["results"]] == q[:2]
    assert [r["matches"][0]["id"] for r in res["results"]] == ["sku1/front.png", "sku3/front.png"]
    top = res["results"][0]["matches"][0]
    assert set(top) == {"rank", "id", "path", "item_id", "similarity", "match"}
    assert top["match"] is True and top["path"] == str(src / "sku1" / "front.png")
    assert all(m["match"] == (m["similarity"] >= 0.5) for r in res["results"] for m in r["matches"])
    assert len(res["results"][0]["matches"]) == 2
    assert res["bad"] == [{"path": q[2], "reason": "no such file"}] and "skipped" in err


def test_search_human_and_errors(
    built: tuple[Path, Path], tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, idx = built
    code, out, _ = run(
        capsys,
        fm_search,
        str(src / "sku2" / "front.png"),
        "--index",
        str(idx),
        "-k",
        "1",
        "--model",
        str(tiny_model_dir),
    )
    # rank, similarity, the verdict at the model's threshold and the absolute path
    assert code == 0 and "(match at similarity >= 0.500)" in out
    assert f"1       1.000  match     {src / 'sku2' / 'front.png'}  [item sku2]" in out
    code, _, err = run(capsys, fm_search, str(src / "nope.png"), "--index", str(idx), "--model", str(tiny_model_dir))
    assert code == 2 and "no query image could be read" in err
    # the default model did not build this index
    code, _, err = run(capsys, fm_search, str(src / "sku2" / "front.png"), "--index", str(idx))
    assert code == 2 and err.count("\n") == 1 and "rebuild the index with this model" in err


def test_info_and_add(
    built: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, idx = built
    more = tmp_path / "more"
    more.mkdir()
    photo(20, 20, seed=50).save(more / "x.png")
    code, out, _ = run(capsys, fm_index, "add", str(idx), str(more), "--model", str(tiny_model_dir), "--json")
    assert code == 0 and json.loads(out)["images"] == 5
    code, out, _ = run(capsys, fm_index, "info", str(idx), "--verify", "--json")
    info = json.loads(out)
    assert code == 0 and info["images"] == 5 and info["shards"] == 2
    code, _, err = run(capsys, fm_index, "build", str(src), "--out", str(idx), "--model", str(tiny_model_dir))
    assert code == 2 and "exists; use 'fm-index add'" in err and "--overwrite" in err


def test_add_reports_only_what_it_did(
    built: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, idx = built  # 4 images, 1 skipped (empty.jpg) at build time
    more = tmp_path / "more"
    more.mkdir()
    photo(20, 20, seed=50).save(more / "x.png")
    (more / "bad.png").write_bytes(b"not a png")
    code, out, _ = run(capsys, fm_index, "add", str(idx), str(more), "--model", str(tiny_model_dir), "--json")
    rep = json.loads(out)
    assert code == 0 and rep["images"] == 5 and rep["added"] == 1 and rep["skipped"] == 1
    assert [Path(b["path"]).name for b in rep["skipped_files"]] == ["bad.png"]  # not the build's empty.jpg
    sources = json.loads((idx / "index.json").read_text())["sources"]
    code, out, err = run(capsys, fm_index, "add", str(idx), str(src / "sku1"), "--model", str(tiny_model_dir))
    assert code == 0 and "(0 new in" in out and "1 already in the index" in out
    assert json.loads((idx / "index.json").read_text())["sources"] == sources  # an add of nothing: untouched


def test_info_verify_json_says_what_failed(built: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, idx = built
    code, out, _ = run(capsys, fm_index, "info", str(idx), "--verify", "--json")
    assert code == 0 and json.loads(out)["verified"] is True
    shard = next((idx / "shards").glob("*.npy"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    code, out, err = run(capsys, fm_index, "info", str(idx), "--verify", "--json")
    verdict = json.loads(out)
    assert code == 2 and verdict["verified"] is False and "sha256" in verdict["error"]
    assert err.count("\n") == 1


def test_overwrite_replaces_an_index_only_when_the_new_one_is_whole(
    built: tuple[Path, Path],
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fashion_match.runtime import index_build

    src, idx = built
    other = tmp_path / "other"
    other.mkdir()
    photo(30, 30, seed=9).save(other / "only.png")
    before = (idx / "index.json").read_bytes()

    def crash(*a: object, **k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(index_build, "finish", crash)  # the new index dies before it is whole
    args = ("build", str(other), "--out", str(idx), "--model", str(tiny_model_dir), "--overwrite")
    code, _, err = run(capsys, fm_index, *args)
    assert code == 2 and (idx / "index.json").read_bytes() == before  # the old index is untouched
    monkeypatch.undo()
    code, out, err = run(capsys, fm_index, *args, "--json")
    assert code == 0, err
    assert json.loads(out)["images"] == 1 and json.loads((idx / "index.json").read_text())["sources"] == [str(other)]
    assert sorted(p.name for p in idx.parent.iterdir() if p.name.startswith(".")) == []  # staging cleaned up


def test_results_resolve_from_any_folder(
    built: tuple[Path, Path],
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An index built from a relative folder still names its images by absolute path."""
    src, _ = built
    monkeypatch.chdir(src.parent)
    idx = tmp_path / "rel.idx"
    code, _, err = run(capsys, fm_index, "build", src.name, "--out", str(idx), "--model", str(tiny_model_dir))
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    query = str(src / "sku1" / "front.png")
    code, out, _ = run(capsys, fm_search, query, "--index", str(idx), "--model", str(tiny_model_dir), "--json")
    for m in json.loads(out)["results"][0]["matches"]:
        assert Path(m["path"]).is_absolute() and Path(m["path"]).is_file()
        assert not Path(m["id"]).is_absolute()  # the name relative to the source, for display


def test_grid_and_html_with_a_bad_query(
    built: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from fashion_match.runtime import result_grid as rg

    src, idx = built
    q = [str(src / "sku1" / "front.png"), str(src / "missing.png"), str(src / "sku3" / "front.png")]
    png, page = tmp_path / "out" / "grid.png", tmp_path / "out" / "grid.html"
    args = ("--index", str(idx), "-k", "3", "--model", str(tiny_model_dir), "--grid", str(png), "--html", str(page))
    code, _, err = run(capsys, fm_search, *q, *args)
    assert code == 0, err
    with Image.open(png) as im:  # three rows (the unreadable query's too), a query and 3 hits wide
        w = rg.PAD + 4 * (rg.THUMB + rg.PAD) + rg.PAD
        h = 26 + 3 * (rg.THUMB + rg.CAPTION + rg.PAD + 16) + rg.PAD
        assert im.size == (w, h) and im.format == "PNG"
        # the match frame at the first hit of row 1 is green; row 2 (the bad query) has no hits
        x, y = rg.PAD + rg.THUMB + rg.PAD, 26 + 16
        assert im.getpixel((x - 1, y + 10)) == rg.MATCH
        assert im.getpixel((x - 1, y + rg.THUMB + rg.CAPTION + rg.PAD + 16 + 10)) == (255, 255, 255)
    text = page.read_text(encoding="utf-8")
    assert text.count("<table>") == 3 and "no such file" in text and text.count("data:image/jpeg;base64,") == 3 + 6


def test_grid_marks_hits_of_known_items() -> None:
    from fashion_match.runtime.result_grid import GridRow, _verdicts

    row = GridRow("q.png", "q", item_id="sku1")
    assert _verdicts(row, {"match": True, "item_id": "sku1"}) == ("match", "same item")
    assert _verdicts(row, {"match": False, "item_id": "sku2"}) == ("no match", "other item")
    assert _verdicts(GridRow("q.png", "q"), {"match": True, "item_id": "sku2"}) == ("match", None)


def test_queries_from_a_dataset_spec_carry_their_items(
    tiny_fmnist: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fashion_match.cli.search import spec_queries

    spec = f"fmnist-c2s:{tiny_fmnist}"
    idx = tmp_path / "c2s.idx"
    code, _, err = run(capsys, fm_index, "build", spec, "--out", str(idx), "--model", str(tiny_model_dir))
    assert code == 0, err
    png = tmp_path / "grid.png"
    args = ("--index", str(idx), "--model", str(tiny_model_dir), "--limit", "3", "-k", "2", "--grid", str(png))
    code, out, err = run(capsys, fm_search, "--queries", spec, *args, "--json")
    assert code == 0, err
    names = [r["query"] for r in json.loads(out)["results"]]
    assert len(names) == 3 and all(n.startswith("fmnist-c2s/test/consumer/") for n in names)
    assert png.stat().st_size > 0
    _, labels, items = spec_queries(spec, 3)
    assert labels == names and all(i and i.startswith("c2s-test-") for i in items)  # item ids: marks on
    _, _, items = spec_queries(f"fashion-mnist:{tiny_fmnist}", 3)
    assert items == [None, None, None]  # category retrieval: no same-item marks
    code, _, err = run(capsys, fm_search, "x.png", "--queries", spec, *args)
    assert code == 2 and "one of the two" in err
