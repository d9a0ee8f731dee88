from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.errors import UsageError


def test_json_round_trip() -> None:
    spec = PreprocessSpec(size=96, resize="letterbox", mean=(127, 127, 127), std=(128, 128, 128), channel_order="BGR")
    again = PreprocessSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


@pytest.mark.parametrize(
    "bad", [{"size": 2}, {"resize": "stretch"}, {"channel_order": "RGBA"}, {"std": (1, 0, 1)}, {"crop_pct": 1.5}]
)
def test_invalid_specs_rejected(bad: dict) -> None:
    with pytest.raises(UsageError):
        PreprocessSpec(**bad)


def test_unknown_keys_rejected() -> None:
    with pytest.raises(UsageError, match="unknown keys"):
        PreprocessSpec.from_dict({"size": 32, "colour": "red"})


@pytest.mark.parametrize("mode", ["squash", "shorter_crop", "letterbox"])
@pytest.mark.parametrize("wh", [(1, 1), (300, 100), (100, 300)])
def test_resize_gives_exact_size(mode: str, wh: tuple[int, int]) -> None:
    out = PreprocessSpec(size=32, resize=mode).resize_image(Image.new("RGB", wh, (10, 20, 30)))
    assert out.size == (32, 32)


def test_letterbox_pads_with_pad_value() -> None:
    out = np.asarray(
        PreprocessSpec(size=32, resize="letterbox", pad_value=255).resize_image(Image.new("RGB", (64, 16), (0, 0, 0)))
    )
    assert out[0, 0].tolist() == [255, 255, 255] and out[16, 16].tolist() == [0, 0, 0]


def test_shorter_crop_keeps_the_centre() -> None:
    a = np.zeros((100, 300, 3), np.uint8)
    a[:, 140:160] = 255  # a white bar in the middle
    out = np.asarray(PreprocessSpec(size=32, resize="shorter_crop", crop_pct=1.0).resize_image(Image.fromarray(a)))
    assert out[16, 16].mean() > 200 and out[16, 0].mean() < 30


def test_normalize_matches_hand_computation() -> None:
    spec = PreprocessSpec(size=8, mean=(1, 2, 3), std=(2, 4, 8), channel_order="BGR")
    x = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3)).astype(np.uint8)
    got = spec.normalize(x)
    assert got.shape == (2, 3, 8, 8) and got.dtype == np.float32
    # network channel 0 is blue
    assert np.allclose(got[:, 0], (x[..., 2].astype(np.float32) - 1) / 2)
    assert np.allclose(got[:, 2], (x[..., 0].astype(np.float32) - 3) / 8)


def test_shorter_crop_scales_by_the_shorter_side_on_non_square_photos() -> None:
    """300x100 at size 32, crop_pct 1: the shorter side becomes 32 (scale 0.32), the centre 32x32 of
    the 96x32 result is kept, i.e. source columns 100..200. Marks: red just inside that window's
    left edge, blue near the photo's left edge (outside it), a green stripe along the top."""
    a = np.zeros((100, 300, 3), np.uint8)
    a[:, 100:110] = (255, 0, 0)
    a[:, 0:30] = (0, 0, 255)
    a[0:10, :] = (0, 255, 0)
    out = np.asarray(PreprocessSpec(size=32, resize="shorter_crop", crop_pct=1.0).resize_image(Image.fromarray(a)))
    assert out.shape == (32, 32, 3)
    assert out[16, 0, 0] > 200 and out[16, 0, 2] < 50  # red at the crop's left edge: the right scale and offset
    assert out[16, 5].max() < 50  # right of the red bar: black, as in the source
    assert (out[..., 2] < 100).all()  # the blue edge of the photo is cropped away
    assert out[0, 16, 1] > 200 and out[8, 16, 1] < 50  # the top stripe keeps its height (10 px -> ~3)
