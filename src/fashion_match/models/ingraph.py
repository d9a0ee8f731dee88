"""The network as exported and as the torch backend runs it: uint8 pixels in, unit embeddings out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fashion_match.models.embedding import EmbeddingModel


class InGraphPreprocess(nn.Module):
    """uint8 (N, H, W, 3) RGB -> normalised NCHW float -> embedding model -> L2-normalised."""

    def __init__(self, model: EmbeddingModel) -> None:
        super().__init__()
        self.model = model
        spec = model.preprocess
        # fold (x - mean) / std into one multiply-add: x * scale + shift
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.scale: torch.Tensor
        self.shift: torch.Tensor
        self.register_buffer("scale", 1.0 / std)
        self.register_buffer("shift", -mean / std)
        self.bgr = spec.channel_order == "BGR"

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # cast first: TensorRT takes a uint8 network input only straight into a cast (UINT8 is I/O-only
        # there: no Transpose, no Shape on it), and every precision's graph is an engine source
        x = pixels.to(torch.float32).permute(0, 3, 1, 2)
        if self.bgr:
            x = x.flip(1)
        x = x * self.scale + self.shift
        return F.normalize(self.model(x), dim=1)


class InGraphOutputs(InGraphPreprocess):
    """The exported graph of a model with tag heads or attribute spaces: the embedding, then
    `tag_probs` and `attr_embeddings` as the model has them, from one pass."""

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        x = pixels.to(torch.float32).permute(0, 3, 1, 2)
        if self.bgr:
            x = x.flip(1)
        emb, *rest = self.model.forward_outputs(x * self.scale + self.shift)
        return (F.normalize(emb, dim=1), *rest)
