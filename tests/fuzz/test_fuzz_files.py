"""Seeded fuzzing of the files the project reads back: index manifests, shard metadata and arrays,
model manifests, DeepFashion list files and CSV specs. Each mutant is either refused with one of
our errors or read correctly; a search on any index that opens never scores outside [-1, 1]."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from fashion_match.data.spec import load_dataset
from fashion_match.errors import FmError
from fashion_match.runtime import Matcher, load_manifest
from fashion_match.runtime.index import Index
from tests.conftest import photo
from tests.data.test_deepfashion import write_inshop
from tests.fuzz.mutate import mutate_json, mutate_lines

N_INDEX_JSON, N_META_JSON, N_NPY, N_MANIFEST, N_LISTS, N_CSV = 200, 100, 100, 100, 60, 60


@pytest.fixture(scope="module")
def pristine_index(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "shop ü"
    for i in range(10):
        (root / f"item {i // 2}").mkdir(parents=True, exist_ok=True)
        photo(40, 40, seed=i).save(root / f"item {i // 2}" / f"{i % 2}.png")
    (root / "item 0" / "bad.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with Matcher(tiny_model_dir) as m:
        Index.build(root, root.parent / "idx", matcher=m, shard_rows=4, progress=False)
    return root.parent / "idx"


def _outcome(index_dir: Path, query: np.ndarray) -> str:
    try:
        idx = Index.open(index_dir)
    except FmError:
        return "refused"
    scores, ids = idx.search_vectors(query, k=len(idx) or 1)
    live = scores[ids >= 0]
    assert np.all(np.abs(live) <= 1.0 + 1e-2), f"score {np.abs(live).max()} from a damaged index"
    sims = [m["similarity"] for r in idx.results(["q"], scores, ids) for m in r.matches]
    assert all(-1.0 <= s <= 1.0 for s in sims)
    return "opened"


@pytest.mark.parametrize(
    "target, n, offset",
    [("index.json", N_INDEX_JSON, 0), ("shards/00001.json", N_META_JSON, 10_000)],
)
def test_mutated_index_json(pristine_index: Path, tmp_path: Path, target: str, n: int, offset: int) -> None:
    query = np.full((1, Index.open(pristine_index).embedding_dim), 1.0, np.float32)
    query /= np.linalg.norm(query)
    seen = {"refused": 0, "opened": 0}
    original = (pristine_index / target).read_text()
    work = tmp_path / "idx"
    shutil.copytree(pristine_index, work)
    for seed in range(offset, offset + n):
        (work / target).write_text(mutate_json(original, seed))
        try:
            seen[_outcome(work, query)] += 1
        except FmError:
            raise
        except Exception as e:  # noqa: BLE001 - the failure this test exists to find
            pytest.fail(f"{target} seed {seed}: unexpected {type(e).__name__}: {e}")
    assert seen["refused"] > n // 2  # most edits break a typed field; some (an id string changed) are benign


def test_mutated_shard_arrays(pristine_index: Path, tmp_path: Path) -> None:
    query = np.full((1, Index.open(pristine_index).embedding_dim), 1.0, np.float32)
    query /= np.linalg.norm(query)
    work = tmp_path / "idx"
    shutil.copytree(pristine_index, work)
    shard = work / "shards" / "00000.npy"
    original = shard.read_bytes()
    seen = {"refused": 0, "opened": 0}
    for seed in range(N_NPY):
        rng = random.Random(seed)
        d = bytearray(original)
        if seed % 3 == 0:
            d = d[: rng.randrange(len(d))]
        else:
            lo = 0 if seed % 3 == 1 else 128  # header bytes, or float bytes
            for _ in range(rng.randint(1, 4)):
                d[rng.randrange(lo, len(d))] ^= 1 << rng.randrange(8)
        shard.write_bytes(bytes(d))
        try:
            seen[_outcome(work, query)] += 1
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"npy seed {seed}: unexpected {type(e).__name__}: {e}")
    assert seen["refused"] > N_NPY // 2


def test_mutated_model_manifests(model_copy: Path) -> None:
    path = model_copy / "manifest.json"
    original = path.read_text()
    seen = {"refused": 0, "opened": 0}
    for seed in range(N_MANIFEST):
        path.write_text(mutate_json(original, 20_000 + seed))
        try:
            with Matcher(model_copy) as m:
                v = m.verify(np.zeros((40, 40, 3), np.uint8), np.full((40, 40, 3), 200, np.uint8))
                assert -1.0 <= v.similarity <= 1.0 and -1.0 <= v.threshold <= 1.0
            seen["opened"] += 1
        except FmError:
            seen["refused"] += 1
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"manifest seed {seed}: unexpected {type(e).__name__}: {e}")
    path.write_text(original)
    load_manifest(model_copy)
    assert seen["refused"] > N_MANIFEST // 4 and seen["opened"] > 0


def test_mutated_list_files(odd_dir: Path) -> None:
    root = write_inshop(odd_dir / "inshop")
    part = root / "Eval" / "list_eval_partition.txt"
    original = part.read_text()
    csv_file = odd_dir / "shop.csv"
    csv_text = "path,item_id,split\n" + "".join(
        f"inshop/{r},{r.split('/')[3]},{s}\n" for r, s in (("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "train"),)
    )
    csv_text += "inshop/img/MEN/Denim/id_00000080/01_1_front.jpg,id_00000080,query\n"
    csv_text += "inshop/img/MEN/Denim/id_00000080/01_2_side.jpg,id_00000080,gallery\n"
    cases = [(part, original, f"deepfashion-inshop:{root}", N_LISTS), (csv_file, csv_text, f"csv:{csv_file}", N_CSV)]
    for path, text, spec, n in cases:
        path.write_text(text)
        assert len(load_dataset(spec).records) > 0  # the pristine file reads
        for seed in range(n):
            path.write_text(mutate_lines(text, seed))
            try:
                ds = load_dataset(spec)
                names = [r.name for r in ds.records]
                assert spec.startswith("csv") or len(names) == len(set(names))  # In-shop: each image once
            except FmError:
                pass
            except Exception as e:  # noqa: BLE001
                pytest.fail(f"{path.name} seed {seed}: unexpected {type(e).__name__}: {e}")
