from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fashion_match.cli.data import main
from tests.conftest import photo
from tests.data.test_deepfashion import write_inshop


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ei:
        main(list(args))
    out, err = capsys.readouterr()
    return int(ei.value.code or 0), out, err


KEYS = {"format", "images", "items", "splits", "protocol", "notes", "bad", "attributes"}


def test_json_schema_and_bad_images(odd_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_inshop(odd_dir)
    broken = root / "img/MEN/Denim/id_00000081/01_1_front.jpg"
    broken.write_bytes(broken.read_bytes()[:100])
    (root / "img/WOMEN/Dresses/id_00000002/02_2_side.jpg").unlink()
    code, out, _ = run(capsys, "check", f"deepfashion-inshop:{root}", "--json")
    assert code == 0
    report = json.loads(out)
    assert set(report) == KEYS
    assert report["images"] == 5 and report["items"] == 3
    assert report["splits"] == {"gallery": 2, "query": 1, "train": 2}
    assert report["protocol"] == {"queries": 1, "gallery": 2}
    bad = {Path(b["path"]).name: b["reason"] for b in report["bad"]}
    assert bad == {"01_1_front.jpg": "truncated image", "02_2_side.jpg": "no such file"}
    code, out, err = run(capsys, "check", f"deepfashion-inshop:{root}", "--strict")
    assert code == 2 and "2 images missing or undecodable" in err and len(err.strip().splitlines()) == 1
    assert "bad images: 2" in out


def test_human_summary(odd_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for item in ("a", "b"):
        (odd_dir / item).mkdir()
        for i in range(2):
            photo(20, 20).save(odd_dir / item / f"{i}.png")
    code, out, _ = run(capsys, "check", f"folder:{odd_dir}")
    assert code == 0 and "4 images of 2 items" in out and "all images readable" in out


def test_malformed_partition_is_one_line_exit_2(odd_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_inshop(odd_dir, header="name item status", images=False)
    code, out, err = run(capsys, "check", f"deepfashion-inshop:{root}")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fm-data: error: ") and "list_eval_partition.txt:2:" in lines[0]


def test_unknown_spec_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check", "imagenet:/x")
    assert code == 2 and "'imagenet' is not a format" in err
    # click's usage errors too: one line, the prefix, the option at fault, where to look
    for args, needle in ((["check"], "Missing argument 'SPEC'"), (["check", "fashion-mnist", "--bogus"], "--bogus")):
        code, _, err = run(capsys, *args)
        (line,) = err.strip().splitlines()
        assert code == 2 and line.startswith("fm-data: error: ") and needle in line
        assert line.endswith("(see fm-data --help)")


def test_unexpected_error_hints_debug(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import fashion_match.data.spec as spec

    def boom(_: str) -> None:
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(spec, "load_dataset", boom)
    code, _, err = run(capsys, "check", "fashion-mnist")
    assert code == 2 and err.count("\n") == 1 and "RuntimeError: kaboom second line" in err and "--debug" in err
    code, _, err = run(capsys, "check", "fashion-mnist", "--debug")
    assert code == 2 and "Traceback" in err


def test_console_script_installed() -> None:
    exe = Path(sys.executable).parent / "fm-data"
    assert exe.exists(), "package not installed with its console scripts (pip install -e .)"
    r = subprocess.run([str(exe), "check", "folder:/definitely/missing"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("fm-data: error: ") and "Traceback" not in r.stderr


def test_a_bare_flat_folder_is_a_spec_here_too(odd_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """fm-data, fm-index and fm-train read specs with the one parser: a folder of loose images works."""
    for i in range(3):
        photo(30, 30, seed=i).save(odd_dir / f"p{i}.jpg")
    for spec in (str(odd_dir), f"folder:{odd_dir}"):
        code, out, err = run(capsys, "check", spec, "--json")
        assert code == 0, err
        report = json.loads(out)
        assert report["format"] == "folder" and report["images"] == 3 and report["items"] == 3


def test_export_writes_a_folder_that_reads_back(
    tiny_fmnist: Path, odd_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fm-data export: whole items, the folder:DIR layout, every image decodable, nothing merged."""
    from fashion_match.data.spec import load_dataset

    out = tmp_path / "c2s folder"
    code, text, err = run(capsys, "export", f"fmnist-c2s:{tiny_fmnist}", str(out), "--limit", "5", "--json")
    assert code == 0, err
    rep = json.loads(text)
    assert rep["images"] == 6 and rep["items"] == 3 and rep["bad"] == []  # 3 items of 2 photos: whole items
    back = load_dataset(str(out))
    assert len(back.records) == 6 and back.n_items() == 3
    assert {Path(r.name).parts[0] for r in back.records} == {"train"}  # the first items in dataset order
    names = sorted(Path(r.name).name for r in back.records)
    assert names == [f"{d}_{i:05d}.png" for d in ("consumer", "shop") for i in range(3)]
    code, _, err = run(capsys, "export", f"fmnist-c2s:{tiny_fmnist}", str(out))
    assert code == 2 and "not an empty folder" in err
    # files are copied byte for byte, bad ones listed and left out
    src = odd_dir / "shop"
    (src / "sku1").mkdir(parents=True)
    photo(30, 30).save(src / "sku1" / "a.jpg")
    (src / "sku1" / "b.jpg").write_bytes(b"")
    code, text, err = run(capsys, "export", str(src), str(tmp_path / "copy"))
    assert code == 0 and "skipped" not in err  # copied as they are: an empty file stays an empty file
    assert (tmp_path / "copy" / "all" / "sku1" / "a.jpg").read_bytes() == (src / "sku1" / "a.jpg").read_bytes()
