"""Metric-learning losses from pytorch-metric-learning: Proxy-Anchor (default), Multi-Similarity
with its miner, and the seed baseline (cross-entropy on a classifier + batch-hard triplet)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fashion_match.errors import MissingDependency


def _pml() -> Any:
    try:
        import pytorch_metric_learning as pml  # noqa: F401
        from pytorch_metric_learning import losses, miners
    except ImportError as e:
        raise MissingDependency("training needs pytorch-metric-learning: pip install 'fashion-match[train]'") from e
    return losses, miners


class MetricLoss(nn.Module):
    """One module holding the loss, its miner and any learnable parts (proxies, classifier)."""

    def __init__(self, name: str, num_classes: int, dim: int) -> None:
        super().__init__()
        losses, miners = _pml()
        self.name = name
        self.miner = None
        self.classifier: nn.Module | None = None
        if name == "proxy_anchor":
            # Kim et al. 2020 defaults: margin 0.1, alpha 32
            self.loss = losses.ProxyAnchorLoss(num_classes=num_classes, embedding_size=dim, margin=0.1, alpha=32)
        elif name == "multi_similarity":
            self.loss = losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
            self.miner = miners.MultiSimilarityMiner(epsilon=0.1)
        else:  # ce_triplet: the seed project's recipe
            self.loss = losses.TripletMarginLoss(margin=0.2)
            self.miner = miners.BatchHardMiner()
            self.classifier = nn.Linear(dim, num_classes)

    def add_category_loss(self, num_categories: int, dim: int, weight: float) -> None:
        """A second Proxy-Anchor over categories on the same embedding (its proxies live here too)."""
        losses, _ = _pml()
        self.category_loss = losses.ProxyAnchorLoss(
            num_classes=num_categories, embedding_size=dim, margin=0.1, alpha=32
        )
        self.category_metric_weight = weight

    def forward(self, emb: torch.Tensor, labels: torch.Tensor, cats: torch.Tensor | None = None) -> torch.Tensor:
        pairs = self.miner(emb, labels) if self.miner is not None else None
        out: torch.Tensor = self.loss(emb, labels, pairs) if pairs is not None else self.loss(emb, labels)
        if self.classifier is not None:
            out = out + nn.functional.cross_entropy(self.classifier(emb) * 16.0, labels)
        category_loss = getattr(self, "category_loss", None)
        if category_loss is not None and cats is not None and (cats >= 0).any():
            ok = cats >= 0
            out = out + self.category_metric_weight * category_loss(emb[ok], cats[ok])
        return out
