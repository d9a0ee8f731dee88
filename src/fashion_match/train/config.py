"""Everything that defines a training run; stored with every checkpoint, so --resume needs nothing else."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fashion_match.errors import UsageError

LOSSES = ("proxy_anchor", "multi_similarity", "ce_triplet")
LABELS = ("auto", "item", "category")
# pixel augmentation (fashion_match.train.augment): consumer-photo crops, colour, grayscale and blur;
# the runtime's own framing mirrored half the time; or exactly what inference sees
AUGMENTS = ("consumer", "flip", "none")


@dataclass
class TrainConfig:
    data: str
    model: str = "mobilenet_v2"
    embedding_dim: int = 512
    pretrained: str = "imagenet"  # imagenet | none | path to weights
    image_size: int | None = None  # None: the backbone's own size
    loss: str = "proxy_anchor"
    label: str = "auto"  # auto: item ids where the dataset has items, else categories
    epochs: int = 10
    freeze_epochs: int = 1  # frozen-backbone warm-up before the whole network trains
    cache_frozen: bool = False  # compute what never trains once (pooled features or prefix maps)
    train_blocks: int | None = None  # only the last N backbone blocks ever train (None: all)
    map_shift: int = 0  # cached maps: random translation by up to N cells (a stand-in for random crops)
    augment: str = "consumer"  # pixel augmentation of the images that train (cached stages see none)
    p: int = 32  # classes per batch
    k: int = 4  # images per class
    lr: float = 1e-4
    head_lr_mult: float = 100.0  # head (and proxies) learn faster than the pretrained backbone
    weight_decay: float = 1e-4
    category_head: bool = False
    category_weight: float = 0.5
    # Proxy-Anchor on *categories*, on the embedding itself, beside the item loss: items of one
    # category gather while items stay apart (serves category retrieval and instance matching)
    category_metric_weight: float = 0.0
    init: str | None = None  # start from these model weights (an fm-train model.safetensors)
    seed: int = 0
    workers: int = 2
    eval_queries: int | None = None  # evenly spaced subset of the protocol's queries, None: all
    eval_gallery: int | None = None  # evenly spaced subset of the gallery, None: all
    train_limit: int | None = None  # use only the first N training records (smoke runs)
    steps_per_epoch: int | None = None  # None: one pass over the training images
    amp: bool = True  # mixed precision on GPU only
    out: str = "runs/train"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise UsageError(f"--loss {self.loss}: choose one of {', '.join(LOSSES)}")
        if self.label not in LABELS:
            raise UsageError(f"--label {self.label}: choose one of {', '.join(LABELS)}")
        if self.augment not in AUGMENTS:
            raise UsageError(f"--augment {self.augment}: choose one of {', '.join(AUGMENTS)}")
        if self.p < 2 or self.k < 1:
            raise UsageError(f"--batch {self.p}x{self.k}: need at least 2 classes per batch")
        if self.loss in ("multi_similarity", "ce_triplet") and self.k < 2:
            raise UsageError(f"--loss {self.loss} needs K >= 2 images per class in --batch PxK")
        if self.category_metric_weight < 0:
            raise UsageError("--category-metric-weight must be >= 0")
        if self.map_shift < 0 or (self.map_shift and not (self.cache_frozen and self.train_blocks)):
            raise UsageError("--map-shift needs --cache-frozen and --train-blocks >= 1 (it moves cached maps)")
        if self.epochs < 1 or not 0 <= self.freeze_epochs <= self.epochs:
            raise UsageError("--epochs must be >= 1 and --freeze-epochs between 0 and --epochs")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, path: Path) -> None:
        from fashion_match.fileio import write_json_atomic

        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        from fashion_match.schema import read_json, require_object

        hint = "it is the config.json fm-train wrote; start a new run if it was damaged"
        data = require_object(
            read_json(path, UsageError, "an fm-train config", hint=hint), path, UsageError, "a config"
        )
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as e:  # a field of the wrong type, met by a check or a comparison
            raise UsageError(f"{path}: invalid field ({e}); {hint}") from None


def parse_batch(text: str) -> tuple[int, int]:
    """'32x4' (or 32×4) -> (32, 4): P classes x K images per class."""
    a, sep, b = text.replace("×", "x").partition("x")
    try:
        if not sep:
            raise ValueError
        return int(a), int(b)
    except ValueError:
        raise UsageError(f"--batch {text!r}: expected PxK, e.g. 32x4") from None
