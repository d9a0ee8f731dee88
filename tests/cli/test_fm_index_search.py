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
    assert set(res) == {"engine", "k", "results", "bad"}
    assert [r["query"] for r in res["results"]] == q[:2]
    assert [r["matches"][0]["id"] for r in res["results"]] == ["sku1/front.png", "sku3/front.png"]
    assert set(res["results"][0]["matches"][0]) == {"rank", "id", "path", "item_id", "similarity"}
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
    assert code == 0 and "1.000  sku2/front.png  [sku2]" in out
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
    assert code == 2 and "already there" in err
