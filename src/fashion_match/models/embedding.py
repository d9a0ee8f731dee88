"""The embedding model: backbone -> pooled features -> linear projection -> L2 normalisation.

Optionally a category branch: a copy of the backbone's last blocks, fed from the same trunk,
with its own classifier. Its class probabilities then join the embedding (`category_share`), so
that cosine similarity = (1 - share) * item similarity + share * category agreement.
"""

from __future__ import annotations

import copy
import math
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
        self.category_branch: nn.Sequential | None = None
        self.branch_from: int | None = None
        self.category_share = 0.0
        self.category_mirror = False
        self.tag_heads: nn.Module | None = None  # models.tag_heads.TagHeads, when attached
        self.attr_spaces: nn.Module | None = None  # models.attr_spaces.AttributeSpaces, when attached
        self.space_names: list[str] = []
        self.space_values: list[list[str]] = []

    def add_category_branch(self, from_block: int, share: float, mirror: bool = False) -> None:
        """Give the classifier its own copy of backbone blocks `from_block`.. (weights copied; train or
        load them after) and put `share` of the similarity on its class probabilities. `mirror`
        also runs the branch on the mirrored trunk maps and averages the two (flip test-time
        augmentation that costs the branch twice, not the whole network)."""
        blocks = self.backbone
        if self.classifier is None:
            raise UsageError("a category branch needs a model with a category classifier (num_classes)")
        if not isinstance(blocks, nn.Sequential) or not 0 < from_block < len(blocks):
            raise UsageError(f"category branch from block {from_block}: {self.name}'s backbone has no such block")
        if not 0.0 <= share < 1.0:
            raise UsageError(f"category share must be in [0, 1), got {share}")
        self.category_branch = copy.deepcopy(blocks[from_block:])
        self.branch_from, self.category_share, self.category_mirror = from_block, float(share), bool(mirror)

    @property
    def output_dim(self) -> int:
        """Width of `forward`'s output: the projection, plus the class probabilities when shared."""
        extra = self.classifier.out_features if self.category_share and self.classifier is not None else 0
        return self.embedding_dim + extra

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).mean(dim=(2, 3))

    def _maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(item feature maps, pooled features of the category branch or None)."""
        if self.category_branch is None:
            return self.backbone(x), None
        trunk = self.backbone[: self.branch_from](x)  # type: ignore[index]
        item = self.backbone[self.branch_from :](trunk)  # type: ignore[index]
        fc = self.category_branch(trunk).mean(dim=(2, 3))
        if self.category_mirror:
            # the classifier is linear, so this is the mean of the two views' logits
            fc = (fc + self.category_branch(trunk.flip(-1)).mean(dim=(2, 3))) / 2
        return item, fc

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled item features, pooled features the classifier reads)."""
        maps, fc = self._maps(x)
        f = maps.mean(dim=(2, 3))
        return f, f if fc is None else fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._embed(*self._features(x))

    def _embed(self, f: torch.Tensor, fc: torch.Tensor) -> torch.Tensor:
        e = F.normalize(self.head(f), dim=1)
        if not self.category_share or self.classifier is None:
            return e
        # two unit vectors weighted by sqrt(share): the result has unit norm and its dot product
        # is the share-weighted mean of the two cosines
        p = F.normalize(torch.softmax(self.classifier(fc), dim=1), dim=1)
        w = self.category_share
        return torch.cat([math.sqrt(1.0 - w) * e, math.sqrt(w) * p], dim=1)

    def tag_layout(self) -> list[dict[str, Any]]:
        from fashion_match.models.tag_heads import layout_of

        return layout_of(self.tag_heads.attrs)  # type: ignore[union-attr,arg-type]

    def attach_tags(self, heads: nn.Module) -> None:
        """Tag heads (models.tag_heads.TagHeads) on the pooled item features; `forward` is unchanged."""
        self.tag_heads = heads

    def attach_spaces(self, spaces: nn.Module, names: list[str], values: list[list[str]]) -> None:
        """Attribute spaces (models.attr_spaces.AttributeSpaces) on the item feature maps."""
        self.attr_spaces, self.space_names, self.space_values = spaces, list(names), [list(v) for v in values]

    def forward_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """From one pass over the backbone: the embedding, then the tag probabilities and the
        attribute spaces (N, A, d) of the heads this model has, in that order."""
        maps, fc = self._maps(x)
        f = maps.mean(dim=(2, 3))
        out = [self._embed(f, f if fc is None else fc)]
        if self.tag_heads is not None:
            out.append(self.tag_heads.flat(f))  # type: ignore[operator]
        if self.attr_spaces is not None:
            out.append(self.attr_spaces(maps))
        return out

    def forward_with_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        f, fc = self._features(x)
        logits = self.classifier(fc) if self.classifier is not None else None
        return F.normalize(self.head(f), dim=1), logits

    def config(self) -> dict[str, Any]:
        """What it takes to rebuild this architecture (stored beside every checkpoint)."""
        return {
            "model": self.name,
            "embedding_dim": self.embedding_dim,
            "projection": not isinstance(self.head, nn.Identity),
            "num_classes": self.classifier.out_features if self.classifier is not None else None,
            "preprocess": self.preprocess.to_dict(),
            **(
                {
                    "category_branch_from": self.branch_from,
                    "category_share": self.category_share,
                    "category_mirror": self.category_mirror,
                }
                if self.category_branch is not None
                else {}
            ),
            **({"tags": self.tag_layout()} if self.tag_heads is not None else {}),
            **(
                {
                    "spaces": {
                        "names": self.space_names,
                        "values": self.space_values,
                        "dim": self.attr_spaces.dim,  # type: ignore[union-attr]
                    }
                }
                if self.attr_spaces is not None
                else {}
            ),
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
