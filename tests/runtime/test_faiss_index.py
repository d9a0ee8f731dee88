"""FAISS indexes built once, kept in the index folder, reused by search, rebuilt by adds, refused when stale."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fashion_match.cli.index import main as fm_index
from fashion_match.cli.search import main as fm_search
from fashion_match.errors import UsageError
from fashion_match.runtime import faiss_index
from fashion_match.runtime.faiss_index import default_params
from tests.conftest import photo, run_cli

pytest.importorskip("faiss", reason="the FAISS index needs faiss-cpu (the [faiss] extra)")


def same_results(a: str, b: str) -> bool:
    """The same ranking and verdicts; similarities to within a few float32 ulps, since FAISS and
    numpy sum the inner products in different orders (their 6th decimal differs on AVX2-only CPUs)."""
    ra, rb = (json.loads(x)["results"] for x in (a, b))
    if len(ra) != len(rb):
        return False
    for qa, qb in zip(ra, rb, strict=True):
        ma, mb = qa.pop("matches"), qb.pop("matches")
        if qa != qb or len(ma) != len(mb):
            return False
        for x, y in zip(ma, mb, strict=True):
            if abs(x.pop("similarity") - y.pop("similarity")) > 1e-5 or x != y:
                return False
    return True


def test_default_parameters_fit_the_gallery() -> None:
    # the default model's 522-d embedding: 58 sub-quantizers of 9 dims, not the 64 that cannot divide it
    assert default_params("ivf-pq", 100_000, 522) == {"nlist": 1264, "nprobe": 16, "pq_m": 58, "pq_bits": 8}
    assert default_params("ivf-flat", 1000, 32)["nlist"] == 25  # 4 sqrt(n) = 126 would leave < 39 per list
    assert default_params("ivf-flat", 10, 32) == {"nlist": 1, "nprobe": 1}
    assert default_params("ivf-pq", 2000, 32)["pq_bits"] == 5  # 2000 / 39 = 51 points: 2^5 codes
    assert default_params("ivf-flat", 10_000, 32, {"nlist": 64, "nprobe": 64}) == {"nlist": 64, "nprobe": 64}
    with pytest.raises(UsageError, match="must divide the embedding dim 522"):
        default_params("ivf-pq", 100_000, 522, {"pq_m": 64})
    with pytest.raises(UsageError, match="too few to train"):
        default_params("ivf-pq", 300, 32)
    with pytest.raises(UsageError, match="train at most 2 lists"):
        default_params("ivf-flat", 100, 32, {"nlist": 50})


def test_leave_one_out_recall_of_an_exhaustive_index_is_one() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    exact = faiss_index.train_and_fill(faiss_index.make_index("ivf-flat", 16, {"nlist": 4, "nprobe": 4}), x)
    r = faiss_index.leave_one_out_recall(exact, x, k=10, sample=50)
    assert r["recall_at_10"] == 1.0 and r["recall_at_1"] == 1.0 and r["queries"] == 50
    coarse = faiss_index.train_and_fill(faiss_index.make_index("ivf-flat", 16, {"nlist": 8, "nprobe": 1}), x)
    assert faiss_index.leave_one_out_recall(coarse, x, k=10, sample=50)["recall_at_10"] < 1.0


@pytest.fixture
def gallery(odd_dir: Path) -> Path:
    src = odd_dir / "shop"
    for i in range(6):
        (src / f"sku{i}").mkdir(parents=True)
        photo(40, 40, seed=i).save(src / f"sku{i}" / "front.png")
    return src


def test_persisted_reused_rebuilt_and_checked(
    gallery: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = ("--model", str(tiny_model_dir))
    idx = tmp_path / "idx"
    code, out, err = run_cli(
        capsys, fm_index, "build", str(gallery), "--out", str(idx), *model, "--faiss", "ivf-flat", "--json"
    )
    assert code == 0, err
    fx = json.loads(out)["faiss"]
    assert (
        fx["kind"] == "ivf-flat" and fx["params"] == {"nlist": 1, "nprobe": 1} and fx["recall"]["recall_at_10"] == 1.0
    )
    entry = json.loads((idx / "index.json").read_text())["faiss"]
    assert (idx / entry["file"]).is_file() and entry["rows"] == 6

    def no_training(*a: object, **k: object) -> None:
        raise AssertionError("search must load the FAISS index, not train one")

    monkeypatch.setattr(faiss_index, "train_and_fill", no_training)
    query = str(gallery / "sku2" / "front.png")
    code, out, err = run_cli(capsys, fm_search, query, "--index", str(idx), *model, "--engine", "faiss", "--json")
    assert code == 0, err
    code, exact, _ = run_cli(capsys, fm_search, query, "--index", str(idx), *model, "--json")
    assert same_results(out, exact)  # one list, every vector in it: exact
    monkeypatch.undo()

    more = tmp_path / "more"
    more.mkdir()
    photo(30, 30, seed=40).save(more / "new.png")
    code, out, err = run_cli(capsys, fm_index, "add", str(idx), str(more), *model, "--json")
    assert code == 0, err
    assert json.loads((idx / "index.json").read_text())["faiss"]["rows"] == 7  # rebuilt over the new shards

    man = json.loads((idx / "index.json").read_text())
    man["faiss"]["shards_sha256"] = "0" * 64
    (idx / "index.json").write_text(json.dumps(man))
    code, _, err = run_cli(capsys, fm_search, query, "--index", str(idx), *model, "--engine", "faiss")
    assert code == 2 and "built from other shards" in err
    code, _, err = run_cli(capsys, fm_index, "add", str(idx), str(more), *model, "--faiss", "hnsw")
    assert code == 0, err  # nothing new, a FAISS index asked for: built, sources untouched
    man2 = json.loads((idx / "index.json").read_text())
    assert man2["faiss"]["kind"] == "hnsw" and man2["sources"] == man["sources"]
    blob = bytearray((idx / man2["faiss"]["file"]).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (idx / man2["faiss"]["file"]).write_bytes(bytes(blob))
    code, _, err = run_cli(capsys, fm_search, query, "--index", str(idx), *model, "--engine", "faiss")
    assert code == 2 and "sha256 differs" in err and err.count("\n") == 1


def test_an_index_without_faiss_says_how_to_add_one(
    gallery: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    idx = tmp_path / "idx"
    assert run_cli(capsys, fm_index, "build", str(gallery), "--out", str(idx), "--model", str(tiny_model_dir))[0] == 0
    args = (str(gallery / "sku1" / "front.png"), "--index", str(idx), "--model", str(tiny_model_dir))
    code, _, err = run_cli(capsys, fm_search, *args, "--engine", "faiss")
    assert code == 2 and "has no FAISS index" in err and "--faiss ivf-flat" in err
    code, _, err = run_cli(capsys, fm_search, *args, "--nprobe", "4")
    assert code == 2 and "apply to --engine faiss" in err


def test_the_cli_offers_exactly_the_kinds_the_runtime_builds() -> None:
    from fashion_match.cli.index import FAISS_KINDS

    assert FAISS_KINDS == faiss_index.KINDS  # spelled twice so --help needs no numpy: kept in step here
