"""The embedding model: backbone -> pooled features -> linear projection -> L2 normalisation."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.errors import UsageError
from fashion_match.models.backbones import BACKBONES, Backbone, Pretrained


class EmbeddingModel(nn.Module):
    """Maps normalised images (N, 3, H, W) to L2-normalised embeddings (N, D).

    `embedding_dim=None` keeps the pooled backbone features as the embedding (zero-shot use of
    an ImageNet backbone); otherwise a linear projection follows. `num_classes` adds category
    logits from the same pooled features (`forward_with_logits`).
    """

    def __init__(self, name: str, backbone: Backbone, embedding_dim: int | None, num_classes: int | None) -> None:
        super().__init__()
        self.name = name
        self.backbone = backbone.features
        self.feature_dim = backbone.dim
        self.preprocess: PreprocessSpec = backbone.preprocess
        self.weights_origin = backbone.weights
        self.weights_sha256 = backbone.weights_sha256
        self.embedding_dim = embedding_dim or backbone.dim
        # no bias: normalize(W f) is scale-free in f, so a head trained on cached, L2-normalised
        # features is exactly the head of the full model
        self.head: nn.Module = (
            nn.Identity() if embedding_dim is None else nn.Linear(backbone.dim, embedding_dim, bias=False)
        )
        self.classifier = nn.Linear(backbone.dim, num_classes) if num_classes else None

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.pooled(x)), dim=1)

    def forward_with_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        f = self.pooled(x)
        logits = self.classifier(f) if self.classifier is not None else None
        return F.normalize(self.head(f), dim=1), logits

    def config(self) -> dict[str, Any]:
        """What it takes to rebuild this architecture (stored beside every checkpoint)."""
        return {
            "model": self.name,
            "embedding_dim": self.embedding_dim,
            "projection": not isinstance(self.head, nn.Identity),
            "num_classes": self.classifier.out_features if self.classifier is not None else None,
            "preprocess": self.preprocess.to_dict(),
        }


def create_model(
    name: str,
    embedding_dim: int | None = None,
    *,
    pretrained: Pretrained = True,
    num_classes: int | None = None,
    preprocess: PreprocessSpec | None = None,
) -> EmbeddingModel:
    """Build a registered model. `preprocess` overrides the backbone's default (e.g. another size)."""
    if name not in BACKBONES:
        raise UsageError(f"unknown model '{name}'; available: {', '.join(BACKBONES)}")
    if embedding_dim is not None and embedding_dim < 2:
        raise UsageError(f"embedding_dim must be >= 2, got {embedding_dim}")
    model = EmbeddingModel(name, BACKBONES[name](pretrained), embedding_dim, num_classes)
    if preprocess is not None:
        model.preprocess = preprocess
    return model.eval()


def list_models() -> list[str]:
    return list(BACKBONES)
