"""Training augmentation that mimics consumer photos; evaluation preprocessing = the runtime's."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fashion_match.data.preprocess import PreprocessSpec


def train_transform(spec: PreprocessSpec) -> Any:
    """PIL RGB -> normalised float tensor (3, S, S): random resized crop, flip, colour jitter,
    grayscale and blur, then the spec's own normalisation."""
    from torchvision.transforms import v2 as T

    return T.Compose(
        [
            T.PILToTensor(),
            T.RandomResizedCrop(spec.size, scale=(0.5, 1.0), ratio=(0.75, 1.33), antialias=True),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.3, 0.3, 0.3, 0.05)], p=0.8),
            T.RandomGrayscale(p=0.1),
            T.RandomApply([T.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.2),
            T.ToDtype(torch.float32, scale=False),
            T.Normalize(mean=list(_order(spec, spec.mean)), std=list(_order(spec, spec.std))),
            _Reorder(spec.channel_order),
        ]
    )


def _order(spec: PreprocessSpec, values: tuple[float, float, float]) -> tuple[float, float, float]:
    # mean/std are stored in the network's channel order; the tensor is RGB until reordered
    return values[::-1] if spec.channel_order == "BGR" else values  # type: ignore[return-value]


class _Reorder(torch.nn.Module):
    def __init__(self, order: str) -> None:
        super().__init__()
        self.bgr = order == "BGR"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(0) if self.bgr else x


def eval_batch(pixels_u8: np.ndarray, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 (N, S, S, 3) from the runtime's decoder -> the exact tensor the runtime graph sees."""
    return torch.from_numpy(spec.normalize(pixels_u8))
