"""`PreprocessSpec`: how an image becomes model input. It travels with the weights.

Training, export and runtime all use this one definition (timm's `pretrained_cfg`), and every
manifest stores it. The exported ONNX graph takes uint8 RGB pixels (N, H, W, 3) at `size` and
applies mean/std and channel order itself, so the runtime only decodes and resizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from fashion_match.errors import UsageError

RESIZE_MODES = ("squash", "shorter_crop", "letterbox")
_INTERP = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class PreprocessSpec:
    size: int = 224
    resize: str = "shorter_crop"  # squash | shorter_crop | letterbox
    crop_pct: float = 0.875  # shorter_crop: shorter side -> size / crop_pct, then centre crop
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # on the 0-255 scale
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    channel_order: str = "RGB"  # order the *network* expects; input pixels are always RGB
    pad_value: int = 255  # letterbox fill: white, like a shop photo's backdrop
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 4096:
            raise UsageError(f"preprocess size {self.size} is outside 8..4096")
        if self.resize not in RESIZE_MODES:
            raise UsageError(f"preprocess resize '{self.resize}' is not one of {RESIZE_MODES}")
        if self.interpolation not in _INTERP:
            raise UsageError(f"preprocess interpolation '{self.interpolation}' is not one of {tuple(_INTERP)}")
        if self.channel_order not in ("RGB", "BGR"):
            raise UsageError(f"preprocess channel_order '{self.channel_order}' is not RGB or BGR")
        if not 0.1 <= self.crop_pct <= 1.0:
            raise UsageError(f"preprocess crop_pct {self.crop_pct} is outside 0.1..1.0")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise UsageError("preprocess mean and std need three values each, std > 0")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if not d["extra"]:
            del d["extra"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"preprocess spec has unknown keys {sorted(unknown)}")
        numbers = {"size": int, "crop_pct": float, "pad_value": int}
        for k, kind in numbers.items():  # a string or a bool here would compare or scale as something else
            v = d.get(k, 0)
            if isinstance(v, bool) or not isinstance(v, int | float) or (kind is int and not isinstance(v, int)):
                raise UsageError(f"preprocess {k} must be {'an integer' if kind is int else 'a number'}, found {v!r}")
        for k in ("mean", "std"):
            v = d.get(k, [0.0, 0.0, 1.0])
            if not isinstance(v, list | tuple) or not all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in v
            ):
                raise UsageError(f"preprocess {k} must be three numbers, found {v!r}")
        if "extra" in d and not isinstance(d["extra"], dict):
            raise UsageError(f"preprocess extra must be an object, found {d['extra']!r}")
        try:
            kwargs: dict[str, Any] = {k: tuple(v) if k in ("mean", "std") else v for k, v in d.items()}
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise UsageError(f"preprocess spec is malformed: {e}") from e

    # --- geometry ------------------------------------------------------------------------------
    def decode_hint(self) -> int:
        """Smallest side the decoder must keep for this spec (drives JPEG draft decoding)."""
        if self.resize == "shorter_crop":
            return int(round(self.size / self.crop_pct))
        return self.size

    def resize_pixels(self, w: int, h: int) -> int:
        """Pixels of the largest image `resize_image` allocates for a w x h input.

        Only shorter_crop grows with the aspect ratio: its shorter side is scaled up to the
        crop size, so an 8000x1 strip becomes 2,048,000 x 256 before the crop.
        """
        s = self.size
        if self.resize != "shorter_crop":
            return s * s
        short = max(s, int(round(s / self.crop_pct)))
        scale = short / min(w, h)
        return int(max(s, round(w * scale)) * max(s, round(h * scale)))

    def resize_image(self, img: Image.Image) -> Image.Image:
        """RGB PIL image of any size -> RGB PIL image of exactly size x size."""
        s, interp = self.size, _INTERP[self.interpolation]
        w, h = img.size
        if self.resize == "squash":
            return img.resize((s, s), interp, reducing_gap=None)
        if self.resize == "shorter_crop":
            short = max(s, int(round(s / self.crop_pct)))
            scale = short / min(w, h)
            nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
            img = img.resize((nw, nh), interp)
            left, top = (nw - s) // 2, (nh - s) // 2
            return img.crop((left, top, left + s, top + s))
        # letterbox: long side -> size, pad the rest
        scale = s / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        img = img.resize((nw, nh), interp)
        canvas = Image.new("RGB", (s, s), (self.pad_value,) * 3)
        canvas.paste(img, ((s - nw) // 2, (s - nh) // 2))
        return canvas

    def normalize(self, batch_u8: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB -> float32 (N, 3, H, W) normalised, in the network's order.

        The exported graph does the same in-graph; this is the PyTorch/reference side.
        """
        x: np.ndarray = batch_u8.astype(np.float32)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        # mean/std are given in the network's channel order
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


IMAGENET = PreprocessSpec()
