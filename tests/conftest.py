"""Shared fixtures. Paths deliberately hold spaces and non-ASCII characters."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def odd_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data dir with spaces" / "ünïcødé ß 服"
    d.mkdir(parents=True)
    return d


def photo(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB image (JPEG-friendly gradients plus a blob)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c = rng.uniform(0, 255, 3)
    a = np.stack([(x / max(w, 1)) * c[0], (y / max(h, 1)) * c[1], ((x + y) / max(w + h, 1)) * c[2]], -1)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    a[(y - cy) ** 2 + (x - cx) ** 2 < (min(w, h) / 5) ** 2] = rng.uniform(0, 255, 3)
    return Image.fromarray(a.astype(np.uint8), "RGB")


def encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def run_cli(capsys: pytest.CaptureFixture[str], main: Any, *args: str) -> tuple[int, str, str]:
    """An fm-* entry point run in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as ei:
        main(list(args))
    out, err = capsys.readouterr()
    return int(ei.value.code or 0), out, err


def write_idx(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    names = {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    }[split]
    n, r, c = images.shape
    with gzip.open(folder / names[0], "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, r, c) + images.astype(np.uint8).tobytes())
    with gzip.open(folder / names[1], "wb") as f:
        f.write(struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fmnist(odd_dir: Path) -> Path:
    """A 20-train / 10-test Fashion-MNIST in idx format, drawn from the real files when present."""
    folder = odd_dir / "fmnist"
    folder.mkdir()
    if (FMNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        from fashion_match.data.fashion_mnist import load_arrays

        tr, trl = load_arrays(str(FMNIST_DIR), "train")
        te, tel = load_arrays(str(FMNIST_DIR), "test")
        write_idx(folder, "train", tr[:20], trl[:20])
        write_idx(folder, "test", te[:10], tel[:10])
    else:
        rng = np.random.default_rng(0)
        write_idx(folder, "train", rng.integers(0, 255, (20, 28, 28)), np.arange(20) % 10)
        write_idx(folder, "test", rng.integers(0, 255, (10, 28, 28)), np.arange(10) % 10)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny test model exported once per session (torch2onnx, parity-gated) into an odd path."""
    import torch

    from fashion_match.export.torch2onnx import torch2onnx
    from fashion_match.models import create_model

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("models") / "tiny model ü"
    sources = [encode(photo(96, 64, seed=i), "JPEG") for i in range(10)]
    torch2onnx(create_model("tiny", pretrained=False), out, threshold=0.5, parity_sources=sources)
    return out


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model directory, free to tamper with."""
    import shutil

    dst = tmp_path / "copy of model"
    shutil.copytree(tiny_model_dir, dst)
    return dst


def _has_cuda() -> bool:
    """A CUDA GPU that CuPy or cuda-python can see (tests needing one of them in particular skip on its import)."""
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: try cuda-python
        pass
    try:
        from cuda.bindings import runtime

        err, count = runtime.cudaGetDeviceCount()
        return int(err) == 0 and count > 0
    except Exception:  # noqa: BLE001 - no cuda-python, no driver, no device: all mean "no GPU"
        return False


def _has_tensorrt() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu, trt = _has_cuda(), _has_tensorrt()
    for item in items:
        # one skip naming everything missing: pytest reports only the first reason of several markers
        missing = []
        # markers, not keywords: a test's keywords also hold its name and parameter ids, so a
        # test merely parametrised with "tensorrt" would be skipped too
        if item.get_closest_marker("gpu") and not gpu:
            missing.append("a CUDA GPU (none here)")
        if item.get_closest_marker("tensorrt") and not trt:
            missing.append("the tensorrt module (not installable here)")
        if missing:
            item.add_marker(pytest.mark.skip(reason="needs " + " and ".join(missing)))
