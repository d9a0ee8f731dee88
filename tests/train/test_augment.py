from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashion_match.data.images import load_image
from fashion_match.data.preprocess import IMAGENET
from fashion_match.errors import UsageError
from fashion_match.train.augment import train_transform
from fashion_match.train.config import TrainConfig
from fashion_match.train.trainer import train

SPEC = replace(IMAGENET, size=48, channel_order="BGR")  # BGR: the channel reorder is part of what must agree


def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8))  # not square: the crop shows


def runtime_tensor(im: Image.Image) -> torch.Tensor:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return torch.from_numpy(SPEC.normalize(load_image(buf.getvalue(), SPEC)[None])[0])  # what fm-match feeds


def test_none_trains_on_exactly_what_inference_sees() -> None:
    t = train_transform(SPEC, "none")
    for _ in range(3):
        assert torch.equal(t(photo()), runtime_tensor(photo()))


def test_flip_mirrors_the_runtime_framing_about_half_the_time() -> None:
    torch.manual_seed(0)
    t, ref = train_transform(SPEC, "flip"), runtime_tensor(photo())
    mirrored = ref.flip(-1)  # framed, then mirrored
    seen = []
    for _ in range(40):
        x = t(photo())
        assert torch.equal(x, ref) or torch.equal(x, mirrored)
        seen.append(torch.equal(x, mirrored))
    assert 8 <= sum(seen) <= 32


def test_consumer_changes_the_framing() -> None:
    torch.manual_seed(0)
    x = train_transform(SPEC, "consumer")(photo())
    assert x.shape == (3, 48, 48) and not torch.equal(x, runtime_tensor(photo()))


def test_unknown_augment_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--augment"):
        TrainConfig(data="x", augment="mixup")


def test_augment_is_stored_and_resumed(tiny_fmnist: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(
        data=f"fashion-mnist:{tiny_fmnist}",
        model="tiny",
        pretrained="none",
        embedding_dim=16,
        epochs=2,
        freeze_epochs=0,
        p=5,
        k=2,
        workers=0,
        steps_per_epoch=2,
        augment="none",
        out=str(tmp_path / "cut"),
    )
    whole = train(replace(cfg, out=str(tmp_path / "whole")), progress=False)
    other = train(replace(cfg, out=str(tmp_path / "consumer"), augment="consumer"), progress=False)
    assert other["weights_sha256"] != whole["weights_sha256"]  # the option reaches the loader
    train(cfg, stop_after_epochs=1, progress=False)
    assert TrainConfig.load(tmp_path / "cut" / "config.json").augment == "none"
    assert train(cfg, resume=True, progress=False)["weights_sha256"] == whole["weights_sha256"]
