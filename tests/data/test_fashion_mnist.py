from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fashion_match.data.fashion_mnist import CATEGORIES, load_arrays
from fashion_match.data.fmnist_c2s import consumer_photo
from fashion_match.data.images import decode_image
from fashion_match.data.spec import load_dataset
from fashion_match.errors import BadDataset
from tests.conftest import FMNIST_DIR

needs_fmnist = pytest.mark.skipif(not FMNIST_DIR.exists(), reason="apt package dataset-fashion-mnist not installed")


@needs_fmnist
def test_real_fashion_mnist_counts() -> None:
    ds = load_dataset("fashion-mnist")
    assert ds.split_counts() == {"test": 10000, "train": 60000}
    assert len(ds.protocol.queries) == 10000 and len(ds.protocol.gallery) == 60000
    assert ds.protocol.match_on == "category"
    cats = [r.category for r in ds.subset("test")]
    assert all(cats.count(c) == 1000 for c in CATEGORIES)  # balanced, as published


def test_tiny_dir(tiny_fmnist: Path) -> None:
    ds = load_dataset(f"fashion-mnist:{tiny_fmnist}")
    assert ds.split_counts() == {"test": 10, "train": 20}
    img = np.asarray(decode_image(ds.records[0].source))
    assert img.shape == (28, 28, 3)


def test_bad_idx_files(tiny_fmnist: Path) -> None:
    load_arrays.cache_clear()
    with gzip.open(tiny_fmnist / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 1234, 1, 28, 28) + bytes(784))
    with pytest.raises(BadDataset, match="magic 1234"):
        load_dataset(f"fashion-mnist:{tiny_fmnist}")
    with gzip.open(tiny_fmnist / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, 10, 28, 28) + bytes(784))
    load_arrays.cache_clear()
    with pytest.raises(BadDataset, match="header says 10x28x28"):
        load_dataset(f"fashion-mnist:{tiny_fmnist}")
    (tiny_fmnist / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(BadDataset):
        load_dataset(f"fashion-mnist:{tiny_fmnist}")
    load_arrays.cache_clear()


def test_missing_dir_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(BadDataset, match="apt-get install dataset-fashion-mnist"):
        load_dataset(f"fashion-mnist:{tmp_path}")


def test_c2s_protocol_and_determinism(tiny_fmnist: Path) -> None:
    ds = load_dataset(f"fmnist-c2s:{tiny_fmnist}")
    assert ds.split_counts() == {"test": 20, "train": 40} and ds.n_items() == 30
    q = [ds.records[i] for i in ds.protocol.queries]
    g = [ds.records[i] for i in ds.protocol.gallery]
    assert len(q) == len(g) == 10
    assert all(r.domain == "consumer" and r.split == "test" for r in q)
    assert all(r.domain == "shop" and r.split == "test" for r in g)
    assert [r.item_id for r in q] == [r.item_id for r in g]
    a = np.asarray(decode_image(q[0].source))
    assert a.shape == (128, 128, 3)
    again = load_dataset(f"fmnist-c2s:{tiny_fmnist}")
    assert np.array_equal(a, np.asarray(decode_image(again.records[ds.protocol.queries[0]].source)))
    assert not np.array_equal(a, np.asarray(decode_image(q[1].source)))


def test_consumer_photo_preserves_the_item() -> None:
    # The item (bright on black) must stay visible: the consumer photo is brighter where the item is pasted
    # than a photo of an all-black (invisible) item with the same seed and background.
    item = np.zeros((28, 28), np.uint8)
    item[4:24, 8:20] = 255
    with_item = consumer_photo(item, seed=5).astype(int)
    without = consumer_photo(np.zeros_like(item), seed=5).astype(int)
    assert np.abs(with_item - without).mean() > 5
    assert not np.array_equal(consumer_photo(item, seed=6), consumer_photo(item, seed=5))
