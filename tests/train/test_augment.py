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
from fashion_match.train.augment import HueRotate, train_transform
from fashion_match.train.config import TrainConfig
from fashion_match.train.trainer import train
from tests.train.test_trainer import tiny_cfg

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


def test_hue_rotation_keeps_gray_and_brightness_and_turns_like_hsv() -> None:
    from torchvision.transforms.v2 import functional as F

    m = HueRotate.matrix(0.13)
    assert torch.allclose(m @ torch.ones(3), torch.ones(3), atol=1e-6)  # the gray axis stays put
    assert torch.allclose(m.sum(0), torch.ones(3), atol=1e-6)  # R + G + B is kept
    assert torch.allclose(HueRotate.matrix(1 / 3) @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6)
    x = torch.from_numpy(np.array(photo().resize((32, 32)))).permute(2, 0, 1).contiguous()
    assert torch.equal(HueRotate(0.0)(x), x)
    ours = torch.einsum("ij,jhw->ihw", HueRotate.matrix(0.05), x.float())
    same, opposite = F.adjust_hue(x, 0.05).float(), F.adjust_hue(x, -0.05).float()
    assert (ours - same).abs().mean() < 0.5 * (ours - opposite).abs().mean()  # HSV's direction


def test_unknown_augment_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--augment"):
        TrainConfig(data="x", augment="mixup")


def test_augment_is_stored_and_resumed(tiny_fmnist: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(f"fashion-mnist:{tiny_fmnist}", tmp_path / "cut", freeze_epochs=0, steps_per_epoch=2, augment="none")
    whole = train(replace(cfg, out=str(tmp_path / "whole")), progress=False)
    other = train(replace(cfg, out=str(tmp_path / "consumer"), augment="consumer"), progress=False)
    assert other["weights_sha256"] != whole["weights_sha256"]  # the option reaches the loader
    train(cfg, stop_after_epochs=1, progress=False)
    assert TrainConfig.load(tmp_path / "cut" / "config.json").augment == "none"
    assert train(cfg, resume=True, progress=False)["weights_sha256"] == whole["weights_sha256"]
