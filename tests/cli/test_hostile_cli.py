"""The one-line contract under bad input: a named file, a reason, exit 2, and the good work kept."""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fashion_match.cli.bench import main as fm_bench
from fashion_match.cli.common import echo_json
from fashion_match.cli.data import main as fm_data
from fashion_match.cli.export import main as fm_export
from fashion_match.cli.index import main as fm_index
from fashion_match.cli.search import main as fm_search
from fashion_match.errors import ManifestMismatch, UsageError
from fashion_match.formats import FP32_ONNX, WEIGHTS
from fashion_match.runtime import Matcher, load_manifest
from fashion_match.runtime.index import Index
from fashion_match.runtime.matcher import check_threshold
from tests.conftest import REPO, photo, run_cli
from tests.data.test_hostile_images import _mutated_tiff

FM_MATCH = Path(sys.executable).parent / "fm-match"
PAIR = [str(REPO / "examples/sample/01-pullover/consumer.jpg"), str(REPO / "examples/sample/01-pullover/shop.png")]


@pytest.fixture
def shop_with_bad_tiff(odd_dir: Path) -> Path:
    src = odd_dir / "shop"
    for i in range(50):
        (src / f"sku{i:02d}").mkdir(parents=True)
        photo(32, 32, seed=i).save(src / f"sku{i:02d}" / "front.png")
    (src / "sku07" / "flipped.tiff").write_bytes(_mutated_tiff())
    return src


def test_one_malformed_tiff_costs_one_image(
    shop_with_bad_tiff: Path, odd_dir: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, idx, model = shop_with_bad_tiff, odd_dir / "idx", ("--model", str(tiny_model_dir))
    code, out, err = run_cli(capsys, fm_index, "build", str(src), "--out", str(idx), *model, "--json")
    rep = json.loads(out)
    assert (
        code == 0
        and rep["images"] == 50
        and [s["path"] for s in rep["skipped_files"]] == [str(src / "sku07" / "flipped.tiff")]
    )
    good, bad = str(src / "sku03" / "front.png"), str(src / "sku07" / "flipped.tiff")
    code, out, err = run_cli(capsys, fm_search, good, bad, "--index", str(idx), *model, "--json")
    res = json.loads(out)
    assert code == 0 and [r["query"] for r in res["results"]] == [good] and res["bad"][0]["path"] == bad
    assert err.count("\n") == 1 and "flipped.tiff: corrupt image" in err
    code, out, err = run_cli(capsys, fm_data, "check", f"folder:{src}", "--json")
    assert code == 0 and [b["path"] for b in json.loads(out)["bad"]] == [bad]


def test_fm_match_names_the_malformed_file(shop_with_bad_tiff: Path, tiny_model_dir: Path) -> None:
    bad = str(shop_with_bad_tiff / "sku07" / "flipped.tiff")
    r = subprocess.run([str(FM_MATCH), PAIR[0], bad], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"fm-match: error: {bad}: corrupt image") and "unexpected" not in r.stderr


def test_odd_files_in_a_gallery_are_listed_not_dropped(
    odd_dir: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = odd_dir / "shop"
    (src / "a").mkdir(parents=True)
    photo(32, 32).save(src / "a" / "front.png")
    (src / "a" / "folder.jpg").mkdir()  # a directory with an image's name
    (src / "a" / "loop.jpg").symlink_to(src / "a" / "loop.jpg")
    os.mkfifo(src / "a" / "pipe.png")
    code, out, _ = run_cli(
        capsys, fm_index, "build", str(src), "--out", str(odd_dir / "idx"), "--model", str(tiny_model_dir), "--json"
    )
    rep = json.loads(out)
    reasons = {Path(s["path"]).name: s["reason"] for s in rep["skipped_files"]}
    assert code == 0 and rep["images"] == 1
    assert reasons["folder.jpg"].startswith("is a directory") and reasons["pipe.png"].startswith("not a regular file")
    assert "symbolic links" in reasons["loop.jpg"]


def test_nan_thresholds_are_refused() -> None:
    r = subprocess.run([str(FM_MATCH), *PAIR, "--threshold", "nan"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--threshold" in r.stderr and r.stderr.count("\n") == 1
    for bad in (math.nan, math.inf, 5.0, True, "0.5"):
        with pytest.raises(UsageError, match="finite number between -1 and 1"):
            check_threshold(bad)
    assert check_threshold(-1) == -1.0


def _edit(folder: Path, fn) -> None:  # type: ignore[no-untyped-def]
    p = folder / "manifest.json"
    data = json.loads(p.read_text())
    fn(data)
    p.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda d: d.update(threshold=math.nan), "NaN is not valid JSON"),  # json.dumps writes NaN
        (lambda d: d.update(threshold=math.inf), "Infinity is not valid JSON"),
        (lambda d: d.update(threshold=5.0), "'threshold' is 5.0, outside -1.0..1.0"),
        (lambda d: d.update(threshold=True), "'threshold' must be number, found true/false"),
        (lambda d: d.update(preprocess="center crop"), "'preprocess' must be object, found a string"),
        (lambda d: d["artifacts"][FP32_ONNX].update(made_from=FP32_ONNX), "'made_from' must be object"),
        (lambda d: d["artifacts"][FP32_ONNX].update(sha256=None), "'sha256' must be string, found null"),
        (lambda d: d.update(artifacts={"../model.onnx": {}}), "a file name inside the model directory"),
        (lambda d: d.update(embedding_dim=1.5), "'embedding_dim' must be integer"),
    ],
)
def test_manifest_fields_are_typed(model_copy: Path, edit, needle: str) -> None:  # type: ignore[no-untyped-def]
    _edit(model_copy, edit)
    with pytest.raises(ManifestMismatch) as ei:
        load_manifest(model_copy)
    assert "manifest.json" in str(ei.value) and needle in str(ei.value)


@pytest.mark.parametrize("text", ["[" * 200_000, "[]", '{"format_version": Infinity}'])
def test_manifest_that_is_not_json_of_ours(model_copy: Path, text: str) -> None:
    (model_copy / "manifest.json").write_text(text)
    with pytest.raises(ManifestMismatch, match="manifest.json"):
        load_manifest(model_copy)


def test_json_output_is_strict(capsys: pytest.CaptureFixture[str]) -> None:
    echo_json({"similarity": 0.5})
    assert json.loads(capsys.readouterr().out) == {"similarity": 0.5}
    with pytest.raises(ValueError, match="not JSON compliant"):
        echo_json({"similarity": math.nan})


def test_disk_full_names_the_file_and_keeps_nothing_half_written(
    odd_dir: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = odd_dir / "shop"
    (src / "a").mkdir(parents=True)
    photo(32, 32).save(src / "a" / "front.png")

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    idx = odd_dir / "idx"
    code, out, err = run_cli(capsys, fm_index, "build", str(src), "--out", str(idx), "--model", str(tiny_model_dir))
    assert code == 2 and err.count("\n") == 1 and "disk full (No space left on device)" in err and str(idx) in err
    assert not list(idx.rglob("*.tmp")) and not (idx / "index.json").exists()


@pytest.mark.parametrize("where", ["file", "/proc/fm-test", "/sys/fm-test"])
def test_outputs_that_cannot_be_written_are_refused_first(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    out = tmp_path / "a file" if where == "file" else Path(where)
    if where == "file":
        out.write_text("not a folder")
    why = "exists and is not a directory" if where == "file" else "cannot write the"
    code, _, err = run_cli(
        capsys, fm_index, "build", str(REPO / "examples/sample"), "--out", str(out), "--model", str(tiny_model_dir)
    )
    assert code == 2 and err.count("\n") == 1 and f"{out}: {why}" in err and "unexpected" not in err
    code, _, err = run_cli(capsys, fm_export, str(tiny_model_dir), "--out", str(out), "--fp16")
    assert code == 2 and err.count("\n") == 1 and f"{out}: {why}" in err and "unexpected" not in err


def test_fm_bench_without_matplotlib_says_so_before_benchmarking(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fashion_match.bench.runner as runner

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # "import matplotlib" now raises ImportError
    monkeypatch.setattr(runner, "run_bench", lambda *a, **k: pytest.fail("benchmarked before the check"))
    code, _, err = run_cli(capsys, fm_bench, "--model", str(tiny_model_dir), "--out", str(tmp_path / "rep"), "--quick")
    assert code == 2 and err.count("\n") == 1 and "pip install 'fashion-match[bench]'" in err


def test_an_add_of_nothing_new_does_not_touch_the_index(odd_dir: Path, tiny_model_dir: Path) -> None:
    src = odd_dir / "shop"
    (src / "a").mkdir(parents=True)
    photo(32, 32).save(src / "a" / "front.png")
    with Matcher(tiny_model_dir) as m:
        Index.build(src, odd_dir / "idx", matcher=m, progress=False)
        before = (odd_dir / "idx" / "index.json").read_bytes()
        rep = Index.open(odd_dir / "idx").add(src, matcher=m, progress=False).report
    assert rep is not None and rep.added == 0 and len(rep.duplicates) == 1
    assert (odd_dir / "idx" / "index.json").read_bytes() == before


@pytest.mark.parametrize(
    "text, needle",
    [("[" * 200_000, "nested too deeply"), ('{"epochs": "three"}', "invalid field"), ("[]", "expected a config")],
)
def test_a_damaged_run_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    from fashion_match.cli.train import main as fm_train

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(text)
    code, out, err = run_cli(capsys, fm_train, "--resume", str(run))
    assert code == 2 and err.count("\n") == 1 and "config.json" in err and needle in err and "unexpected" not in err


def test_damaged_checkpoints_are_named(tmp_path: Path) -> None:
    from fashion_match.errors import FmError
    from fashion_match.models.checkpoint import load_weights
    from fashion_match.train.checkpoint import load_for_export

    best = tmp_path / "run" / "best"
    best.mkdir(parents=True)
    (best / "state.json").write_text('{"model_config": "tiny"}')
    with pytest.raises(FmError, match="state.json: 'model_config' must be object"):
        load_for_export(tmp_path / "run")
    (best / WEIGHTS).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    cfg = {"model": "tiny", "embedding_dim": 16, "projection": True, "preprocess": {"size": 32}}
    with pytest.raises(ManifestMismatch, match="model.safetensors: cannot rebuild the model"):
        load_weights(best / WEIGHTS, cfg)
    with pytest.raises(ManifestMismatch, match="cannot rebuild the model from it \\(KeyError"):
        load_weights(best / WEIGHTS, {"projection": True})
