"""Fashion-MNIST from its idx .gz files (Debian's `dataset-fashion-mnist` by default).

Real Zalando product photos, 28x28 gray, 10 categories, one photo per item: retrieval here is
category-level (test queries rank the train gallery; a hit shares the category).
"""

from __future__ import annotations

import gzip
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from fashion_match.data.records import Dataset, Record, RetrievalProtocol
from fashion_match.errors import BadDataset

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CATEGORIES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


def _read_gz(path: Path) -> bytes:
    if not path.is_file():
        raise BadDataset(
            f"{path}: missing; install Fashion-MNIST with 'apt-get install dataset-fashion-mnist' "
            "or pass fashion-mnist:DIR holding the four idx .gz files"
        )
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:
        raise BadDataset(f"{path}: not a readable gzip file ({e})") from None


def read_idx_images(path: Path) -> np.ndarray:
    raw = _read_gz(path)
    if len(raw) < 16:
        raise BadDataset(f"{path}: too short for an idx3 header")
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != _IMAGES_MAGIC:
        raise BadDataset(f"{path}: magic {magic} is not {_IMAGES_MAGIC} (idx3 unsigned-byte images)")
    if len(raw) != 16 + n * rows * cols:
        raise BadDataset(f"{path}: header says {n}x{rows}x{cols} but holds {len(raw) - 16} pixel bytes")
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows, cols)


def read_idx_labels(path: Path) -> np.ndarray:
    raw = _read_gz(path)
    if len(raw) < 8:
        raise BadDataset(f"{path}: too short for an idx1 header")
    magic, n = struct.unpack(">II", raw[:8])
    if magic != _LABELS_MAGIC:
        raise BadDataset(f"{path}: magic {magic} is not {_LABELS_MAGIC} (idx1 unsigned-byte labels)")
    if len(raw) != 8 + n:
        raise BadDataset(f"{path}: header says {n} labels but holds {len(raw) - 8}")
    labels = np.frombuffer(raw, np.uint8, offset=8)
    if labels.size and labels.max() >= len(CATEGORIES):
        raise BadDataset(f"{path}: label {labels.max()} is outside 0..{len(CATEGORIES) - 1}")
    return labels


@lru_cache(maxsize=4)
def load_arrays(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)) for `split`, checked for agreement."""
    img_name, lab_name = FILES[split]
    images = read_idx_images(Path(root) / img_name)
    labels = read_idx_labels(Path(root) / lab_name)
    if len(images) != len(labels):
        raise BadDataset(f"{root}: {split} has {len(images)} images but {len(labels)} labels")
    return images, labels


def load_fashion_mnist(root: str | None) -> Dataset:
    root = str(Path(root or DEFAULT_DIR).expanduser())
    records: list[Record] = []
    for split in ("train", "test"):
        images, labels = load_arrays(root, split)
        for i in range(len(images)):
            name = f"fashion-mnist/{split}/{i:05d}"
            records.append(Record(images[i], name, name, split, CATEGORIES[labels[i]]))
    protocol = RetrievalProtocol(
        queries=[i for i, r in enumerate(records) if r.split == "test"],
        gallery=[i for i, r in enumerate(records) if r.split == "train"],
        match_on="category",
        description="category retrieval: test images rank the train gallery; a hit shares the category",
    )
    return Dataset("fashion-mnist", root, records, protocol, categories=list(CATEGORIES))
