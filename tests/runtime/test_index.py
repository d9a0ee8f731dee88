from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fashion_match.errors import FmError, UsageError
from fashion_match.runtime import Matcher
from fashion_match.runtime.index import Index, IndexMismatch
from tests.conftest import photo


@pytest.fixture
def gallery(odd_dir: Path) -> Path:
    root = odd_dir / "gallery ü"
    for item in range(6):
        d = root / f"item {item}"
        d.mkdir(parents=True)
        for v in range(2):
            photo(48, 40, seed=10 * item + v).save(d / f"view {v}.png")
    (root / "item 2" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def test_build_search_add_info(gallery: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    with Matcher(tiny_model_dir) as m:
        idx = Index.build(gallery, tmp_path / "idx", matcher=m, shard_rows=5, progress=False)
        assert len(idx) == 12 and len(idx.manifest["shards"]) == 3  # 13 files, 1 skipped
        assert [s["path"] for s in idx.manifest["skipped"]] == [str(gallery / "item 2" / "broken.jpg")]
        assert idx.entries[0].id == "item 0/view 0.png" and idx.entries[0].item_id == "item 0"
        # every indexed image finds itself first
        queries = [gallery / e.id for e in idx.entries]
        results, bad = idx.search(queries, k=3, matcher=m)
        assert not bad and [r.matches[0]["id"] for r in results] == [e.id for e in idx.entries]
        assert all(abs(r.matches[0]["similarity"] - 1.0) < 1e-4 for r in results)
        # the stored vectors are the matcher's
        np.testing.assert_allclose(np.concatenate(idx.shards), m.embed_strict(queries), atol=1e-6)
        extra = tmp_path / "more"
        extra.mkdir()
        photo(30, 30, seed=99).save(extra / "new.png")
        photo(30, 30, seed=98).save(extra / "other.png")
        idx2 = idx.add(extra, matcher=m, progress=False)
        assert len(idx2) == 14 and idx2.entries[-1].id == "other.png"
        again = idx2.add(extra, matcher=m, progress=False)  # already there: skipped, listed, index untouched
        assert len(again) == 14 and again.report.added == 0
        assert [d["path"] for d in again.report.duplicates] == [str(extra / "new.png"), str(extra / "other.png")]
    info = Index.open(tmp_path / "idx", verify=True).info()
    assert info["images"] == 14 and info["dtype"] == "float32" and info["skipped"] == 1
    assert info["sources"] == [str(gallery), str(extra)]


def test_float16_index_and_recall(gallery: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    with Matcher(tiny_model_dir) as m:
        i32 = Index.build(gallery, tmp_path / "f32", matcher=m, progress=False)
        i16 = Index.build(gallery, tmp_path / "f16", matcher=m, dtype="float16", progress=False)
        assert i16.shards[0].dtype == np.float16
        q = m.embed_strict([gallery / e.id for e in i32.entries])
    _, a = i32.search_vectors(q, 5)
    _, b = i16.search_vectors(q, 5)
    assert (a[:, 0] == b[:, 0]).all()


def test_other_model_refused(gallery: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    with Matcher(tiny_model_dir) as m:
        idx = Index.build(gallery, tmp_path / "idx", matcher=m, progress=False)
    with Matcher() as default, pytest.raises(IndexMismatch, match="rebuild the index with this model"):
        idx.search([gallery / "item 0" / "view 0.png"], matcher=default)
    with Matcher() as default, pytest.raises(IndexMismatch):
        idx.add(gallery, matcher=default, progress=False)


def test_refusals(gallery: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    with Matcher(tiny_model_dir) as m:
        Index.build(gallery, tmp_path / "idx", matcher=m, shard_rows=4, progress=False)
        with pytest.raises(UsageError, match="exists; use .fm-index add. to extend it or --overwrite"):
            Index.build(gallery, tmp_path / "idx", matcher=m, progress=False)
    shard = tmp_path / "idx" / "shards" / "00001.npy"
    arr = np.load(shard)
    np.save(shard, arr[:-1])
    with pytest.raises(IndexMismatch, match="rebuild"):
        Index.open(tmp_path / "idx")
    np.save(shard, arr + 1e-3)
    with pytest.raises(IndexMismatch, match="norm 1.00.*not 1"):  # a cheap check on open sees the change
        Index.open(tmp_path / "idx")
    np.save(shard, arr[::-1])
    Index.open(tmp_path / "idx")  # same shape, unit rows: only a full verification sees the change
    with pytest.raises(IndexMismatch, match="sha256"):
        Index.open(tmp_path / "idx", verify=True)
    with pytest.raises(IndexMismatch, match="not a fashion-match index"):
        Index.open(tmp_path)


def test_unfinished_build_of_other_sources_is_not_mixed(gallery: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "idx"
    out.mkdir()
    (out / ".build.json").write_text(
        json.dumps({"digest": "x", "first_shard": 0, "shard_rows": 4096, "dtype": "float32"})
    )
    with Matcher(tiny_model_dir) as m, pytest.raises(FmError, match="unfinished build of different sources"):
        Index.build(gallery, out, matcher=m, progress=False)


def test_killed_build_resumes_to_the_same_index(odd_dir: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    src = odd_dir / "many"
    for i in range(240):
        d = src / f"item {i // 2:03d}"
        d.mkdir(parents=True, exist_ok=True)
        photo(640, 480, seed=i).save(d / f"{i % 2}.png")  # PNG: no draft decoding, a slow-enough build
    exe = str(Path(sys.executable).parent / "fm-index")
    cmd = [exe, "build", str(src), "--model", str(tiny_model_dir), "--shard-rows", "8", "--batch-size", "8"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((killed / "shards").glob("*.json"))) < 3:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list((killed / "shards").glob("*.npy")))
    assert 3 <= written < 30, f"the kill came too late to test resuming ({written} shards)"
    assert not (killed / "index.json").exists()
    with pytest.raises(IndexMismatch, match="unfinished build"):
        Index.open(killed)
    subprocess.run([*cmd, "--out", str(killed)], check=True, capture_output=True)
    subprocess.run([*cmd, "--out", str(tmp_path / "whole")], check=True, capture_output=True)
    a, b = Index.open(killed, verify=True), Index.open(tmp_path / "whole", verify=True)
    assert len(a) == len(b) == 240
    assert [e.id for e in a.entries] == [e.id for e in b.entries]
    np.testing.assert_array_equal(np.concatenate(a.shards), np.concatenate(b.shards))
    assert [s["sha256"] for s in a.manifest["shards"]] == [s["sha256"] for s in b.manifest["shards"]]
    assert not (killed / ".build.json").exists()
