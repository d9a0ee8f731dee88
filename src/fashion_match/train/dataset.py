"""Records -> training tensors. Decoding goes through the one robust decoder; bad files are
skipped (logged by name), never fatal, so one corrupt photo does not end a long run."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from fashion_match.data.images import decode_image
from fashion_match.data.records import Dataset, Record
from fashion_match.errors import BadImage, UsageError

log = logging.getLogger(__name__)


def label_key(ds: Dataset, label: str) -> str:
    """auto: train on item ids where items repeat (DeepFashion, fmnist-c2s, folders), else categories."""
    if label == "auto":
        return "category" if ds.protocol.match_on == "category" else "item_id"
    return "item_id" if label == "item" else "category"


def training_records(ds: Dataset, limit: int | None = None) -> list[Record]:
    recs = [r for r in ds.records if r.split == "train"]
    if not recs:
        recs = [r for r in ds.records if r.split in ("all",)]
        if recs:
            log.warning(
                "%s has no train split: training on all %d images (evaluation then sees them too)", ds.format, len(recs)
            )
    if not recs:
        raise UsageError(f"{ds.format} at {ds.root}: no training images (no 'train' split)")
    return recs[:limit] if limit else recs


class RecordDataset(torch.utils.data.Dataset):
    def __init__(
        self, records: list[Record], labels: np.ndarray, categories: np.ndarray | None, transform: Any
    ) -> None:
        self.records, self.labels, self.categories, self.transform = records, labels, categories, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int] | None:
        r = self.records[i]
        try:
            im = decode_image(r.source, min_side=512, name=r.name)
        except BadImage as e:
            log.warning("skipping %s", e)
            return None
        if r.bbox is not None:
            x1, y1, x2, y2 = r.bbox
            if x2 - x1 >= 2 and y2 - y1 >= 2:
                im = im.crop((max(0, x1), max(0, y1), min(im.width, x2), min(im.height, y2)))
        cat = int(self.categories[i]) if self.categories is not None else -1
        return self.transform(im), int(self.labels[i]), cat


def collate_skip_bad(batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    good = [b for b in batch if b is not None]
    if not good:
        return None
    x = torch.stack([b[0] for b in good])
    return x, torch.tensor([b[1] for b in good]), torch.tensor([b[2] for b in good])


def encode(values: list[Any]) -> tuple[np.ndarray, list[Any]]:
    """Values -> integer codes (sorted vocabulary), and the vocabulary."""
    vocab = sorted({v for v in values if v is not None}, key=str)
    index = {v: i for i, v in enumerate(vocab)}
    return np.array([index.get(v, -1) for v in values], np.int64), vocab
