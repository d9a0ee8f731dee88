"""Training augmentation (by default mimicking consumer photos); evaluation preprocessing = the runtime's."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fashion_match.data.preprocess import PreprocessSpec


def train_transform(spec: PreprocessSpec, augment: str = "consumer") -> Any:
    """PIL RGB -> normalised float tensor (3, S, S) in the network's channel order.

    "consumer": random resized crop, flip, colour jitter, grayscale and blur, then the spec's own
    normalisation; "flip" and "none" frame the image as the runtime does (`spec.resize_image`)."""
    if augment != "consumer":
        return RuntimeFraming(spec, flip=augment == "flip")
    from torchvision.transforms import v2 as T

    return T.Compose(
        [
            T.PILToTensor(),
            T.RandomResizedCrop(spec.size, scale=(0.5, 1.0), ratio=(0.75, 1.33), antialias=True),
            T.RandomHorizontalFlip(),
            # hue as a rotation about the gray axis: ColorJitter's HSV round trip on tensors took 3.8 of
            # this pipeline's 6 ms per image, and the loader workers set the pace of GPU training
            T.RandomApply([T.ColorJitter(0.3, 0.3, 0.3), HueRotate(0.05)], p=0.8),
            T.RandomGrayscale(p=0.1),
            T.RandomApply([T.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.2),
            T.ToDtype(torch.float32, scale=False),
            T.Normalize(mean=list(_order(spec, spec.mean)), std=list(_order(spec, spec.std))),
            _Reorder(spec.channel_order),
        ]
    )


class HueRotate(torch.nn.Module):
    """Random hue shift of up to +-`max_turn` of the colour circle, as a rotation of RGB about the gray
    axis: gray stays gray, (R + G + B) / 3 is kept, and a positive turn moves red towards yellow, as
    HSV's does. uint8 (3, H, W) in and out."""

    def __init__(self, max_turn: float) -> None:
        super().__init__()
        self.max_turn = max_turn

    @staticmethod
    def matrix(turn: float) -> torch.Tensor:
        a = 2 * np.pi * turn
        c, s = float(np.cos(a)), float(np.sin(a)) / np.sqrt(3.0)
        d = (1 - c) / 3  # Rodrigues' formula about u = (1, 1, 1) / sqrt(3)
        return torch.tensor([[c + d, d - s, d + s], [d + s, c + d, d - s], [d - s, d + s, c + d]], dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        turn = float(torch.empty(()).uniform_(-self.max_turn, self.max_turn))
        y = torch.einsum("ij,jhw->ihw", self.matrix(turn), x.float())
        return y.round_().clamp_(0, 255).to(x.dtype)


def _order(spec: PreprocessSpec, values: tuple[float, float, float]) -> tuple[float, float, float]:
    # mean/std are stored in the network's channel order; the tensor is RGB until reordered
    return values[::-1] if spec.channel_order == "BGR" else values  # type: ignore[return-value]


class _Reorder(torch.nn.Module):
    def __init__(self, order: str) -> None:
        super().__init__()
        self.bgr = order == "BGR"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(0) if self.bgr else x


class RuntimeFraming:
    """The runtime's resize and crop, so training sees inference's framing (picklable for loader workers)."""

    def __init__(self, spec: PreprocessSpec, flip: bool) -> None:
        self.spec, self.flip = spec, flip

    def __call__(self, img: Any) -> torch.Tensor:
        from PIL import ImageOps

        im = self.spec.resize_image(img)
        if self.flip and bool(torch.rand(()) < 0.5):  # torch's generator: seeded per loader worker
            im = ImageOps.mirror(im)
        return torch.from_numpy(self.spec.normalize(np.asarray(im, np.uint8)[None])[0])


def eval_batch(pixels_u8: np.ndarray, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 (N, S, S, 3) from the runtime's decoder -> the exact tensor the runtime graph sees."""
    return torch.from_numpy(spec.normalize(pixels_u8))
