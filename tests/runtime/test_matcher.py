from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fashion_match.errors import BadImage, UsageError
from fashion_match.formats import ONNX_FILES
from fashion_match.runtime import Matcher, default_model_dir
from tests.conftest import REPO, photo

PAIR = (REPO / "examples/sample/01-pullover/consumer.jpg", REPO / "examples/sample/01-pullover/shop.png")


def test_embed_keeps_order_and_reports_bad(tiny_model_dir: Path, odd_dir: Path) -> None:
    paths = []
    for i in range(5):
        p = odd_dir / f"photo {i}.jpg"
        photo(50, 40, seed=i).save(p)
        paths.append(p)
    (odd_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 10)
    sources = [paths[0], odd_dir / "broken.jpg", *paths[1:]]
    with Matcher(tiny_model_dir, batch_size=2) as m:  # several batches: the overlapped pipeline
        e = m.embed(sources)
        assert e.indices == [0, 2, 3, 4, 5] and [b.name for b in e.bad] == [str(odd_dir / "broken.jpg")]
        one_by_one = np.stack([m.embed_strict([p])[0] for p in paths])
    np.testing.assert_allclose(e.vectors, one_by_one, atol=1e-5)


def test_similarity_and_verify(tiny_model_dir: Path, odd_dir: Path) -> None:
    a, b = odd_dir / "a.png", odd_dir / "b.png"
    photo(40, 40, seed=1).save(a)
    photo(40, 40, seed=2).save(b)
    with Matcher(tiny_model_dir) as m:
        assert m.similarity(a, a) == pytest.approx(1.0, abs=1e-5)
        s = m.similarity(a, b)
        assert m.verify(a, b, threshold=s - 1e-4).match and not m.verify(a, b, threshold=s + 1e-4).match
        assert m.verify(a, b).threshold == 0.5
        with pytest.raises(BadImage):
            m.similarity(a, odd_dir / "missing.png")


def test_torch_reference_backend_agrees(tiny_model_dir: Path) -> None:
    px = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    with Matcher(tiny_model_dir, backend="onnxruntime") as ort_m, Matcher(tiny_model_dir, backend="torch") as t_m:
        assert t_m.info.backend == "torch"
        np.testing.assert_allclose(ort_m.backend.embed(px), t_m.backend.embed(px), atol=2e-5)


def test_backend_checks_input(tiny_model_dir: Path) -> None:
    with Matcher(tiny_model_dir) as m:
        with pytest.raises(UsageError, match="uint8"):
            m.backend.embed(np.zeros((1, 32, 32, 3), np.float32))
        with pytest.raises(UsageError, match="shape"):
            m.backend.embed(np.zeros((1, 31, 32, 3), np.uint8))


def test_default_model_matches_the_example_pair() -> None:
    with Matcher() as m:
        assert m.model_dir == default_model_dir() and m.info.backend == "onnxruntime"
        # a pure 512-d item embedding; the attribute branch from block 11 feeds the tags and spaces
        arch = m.manifest.data["architecture"]
        assert (
            m.manifest.embedding_dim == 512
            and arch["attribute_branch_from"] == 11
            and "category_branch_from" not in arch
        )
        assert m.manifest.data["calibration"]["n_pos"] == 1000
        assert [a["name"] for a in m.manifest.data["spaces"]["attributes"]] == ["category", "colour", "pattern"]
        assert m.verify(*PAIR).match
        # it ships its reduced-precision files, each with a passed gate
        for name in (ONNX_FILES["fp16"], ONNX_FILES["int8"]):
            assert m.manifest.artifacts[name]["gate"]["passed"]
        # an ankle boot is not that pullover
        assert not m.verify(PAIR[0], REPO / "examples/sample/00-ankle-boot/shop.png").match
    with Matcher(precision="int8") as q:
        assert q.info.artifact == ONNX_FILES["int8"] and q.verify(*PAIR).match
        # out of the box: tags and attribute spaces (the shop photo of the white pullover)
        tags, _, _ = q.tag([PAIR[1]])
        assert tags[0]["category"][0]["value"] == "Pullover" and tags[0]["colour"][0]["value"] == "white"
        assert q.verify_attribute(PAIR[0], PAIR[1], "colour").match


def test_runtime_never_imports_torch() -> None:
    code = (
        "import sys; from fashion_match.runtime import Matcher;"
        f"m = Matcher(); v = m.verify({str(PAIR[0])!r}, {str(PAIR[1])!r});"
        "import fashion_match.cli.match;"
        "bad = [k for k in ('torch', 'torchvision', 'fashion_match.train', 'fashion_match.export',"
        " 'fashion_match.models') if k in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_device_strings_are_checked_once_for_every_backend() -> None:
    from fashion_match.runtime.backend import check_device, device_index

    assert [device_index(d) for d in ("auto", "cpu", "cuda", "cuda:3")] == [0, 0, 0, 3]
    for bad in ("cuda:x", "gpu", "cuda:", "cuda:1:2", "CPU"):
        with pytest.raises(UsageError, match="choose auto, cpu, cuda or cuda:N"):
            check_device(bad)
    with pytest.raises(UsageError, match="cuda:N"):
        Matcher(device="cuda:x")  # refused before any model loads


def test_torch_backend_names_a_missing_gpu_index(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from fashion_match.models.torch_backend import TorchBackend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert TorchBackend.unavailable_reason("cuda:0") is None
    assert TorchBackend.unavailable_reason("cuda:1") == "no CUDA device 1 (1 visible)"
