"""The embedding model: backbone -> pooled features -> linear projection -> L2 normalisation.

Optionally a category branch: a copy of the backbone's last blocks, fed from the same trunk,
with its own classifier. Its class probabilities then join the embedding (`category_share`), so
that cosine similarity = (1 - share) * item similarity + share * category agreement.

Optionally an attribute branch: another copy of the last blocks, fine-tuned for attributes, whose
maps (with the outputs of some early blocks, `attr_taps`, average-pooled onto the same grid: the
colour an item-trained trunk has learnt to ignore is still there) are what tag heads and attribute
spaces read. Without one they read the item path's own maps.
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
        self.space_readout: nn.Module | None = None  # models.attr_spaces.ValueReadout, when attached
        self.attr_branch: nn.Sequential | None = None
        self.attr_from: int | None = None
        self.attr_taps: tuple[int, ...] = ()
        self.head_dim = backbone.dim  # channels of the maps tag heads and spaces read

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

    def add_attribute_branch(self, from_block: int, taps: tuple[int, ...] = ()) -> None:
        """Give tag heads and spaces their own copy of backbone blocks `from_block`.. (weights copied;
        train them after) and the outputs of blocks `taps` (each < from_block) beside its maps."""
        blocks = self.backbone
        if not isinstance(blocks, nn.Sequential) or not 0 < from_block < len(blocks):
            raise UsageError(f"attribute branch from block {from_block}: {self.name}'s backbone has no such block")
        taps = tuple(sorted({int(t) for t in taps}))
        if any(not 0 <= t < from_block for t in taps):
            raise UsageError(f"attribute taps {list(taps)}: each must be a block before {from_block}")
        self.attr_branch = copy.deepcopy(blocks[from_block:])
        self.attr_from, self.attr_taps = from_block, taps
        with torch.no_grad():  # the taps' channel counts, from one small pass
            s = self.preprocess.size
            _, saved = self._run_blocks(torch.zeros(1, 3, s, s), {t + 1 for t in taps})
        self.head_dim = self.feature_dim + sum(int(saved[t + 1].shape[1]) for t in taps)

    def _run_blocks(self, x: torch.Tensor, keep: set[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """The backbone's output and the inputs of the blocks in `keep` (one pass)."""
        if not keep:
            return self.backbone(x), {}
        saved = {}
        block: nn.Module
        for i, block in enumerate(self.backbone):  # type: ignore[arg-type]
            if i in keep:
                saved[i] = x
            x = block(x)
        return x, saved

    def head_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The maps tag heads and attribute spaces read (N, head_dim, h, w)."""
        maps = self._maps(x, heads=True)[2]
        assert maps is not None
        return maps

    @property
    def output_dim(self) -> int:
        """Width of `forward`'s output: the projection, plus the class probabilities when shared."""
        extra = self.classifier.out_features if self.category_share and self.classifier is not None else 0
        return self.embedding_dim + extra

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).mean(dim=(2, 3))

    def _maps(
        self, x: torch.Tensor, heads: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(item feature maps, pooled features of the category branch or None, and with `heads` the
        maps the tag heads and spaces read), from one pass over the shared trunk."""
        keep = {self.branch_from} if self.category_branch is not None else set()
        if heads and self.attr_branch is not None:
            keep |= {self.attr_from, *(t + 1 for t in self.attr_taps)}  # type: ignore[arg-type]
        item, saved = self._run_blocks(x, keep)  # type: ignore[arg-type]
        fc = None
        if self.category_branch is not None:
            trunk = saved[self.branch_from]  # type: ignore[index]
            fc = self.category_branch(trunk).mean(dim=(2, 3))
            if self.category_mirror:
                # the classifier is linear, so this is the mean of the two views' logits
                fc = (fc + self.category_branch(trunk.flip(-1)).mean(dim=(2, 3))) / 2
        if not heads or self.attr_branch is None:
            return item, fc, item if heads else None
        v = self.attr_branch(saved[self.attr_from])  # type: ignore[index]
        h = v.shape[-1]
        taps = [F.avg_pool2d(saved[t + 1], saved[t + 1].shape[-1] // h) for t in self.attr_taps]
        return item, fc, torch.cat([v, *taps], dim=1) if taps else v

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled item features, pooled features the classifier reads)."""
        maps, fc, _ = self._maps(x)
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
        """Tag heads (models.tag_heads.TagHeads) on the pooled head maps; `forward` is unchanged."""
        self.tag_heads = heads

    def attach_spaces(self, spaces: nn.Module, names: list[str], values: list[list[str]]) -> None:
        """Attribute spaces (models.attr_spaces.AttributeSpaces) on the head maps."""
        self.attr_spaces, self.space_names, self.space_values = spaces, list(names), [list(v) for v in values]
        self.space_readout = None  # a readout belongs to the spaces it was fitted on

    def attach_readout(self, readout: nn.Module) -> None:
        """The spaces' value posteriors (models.attr_spaces.ValueReadout), a fourth output."""
        if self.attr_spaces is None:
            raise ValueError("a value readout reads attribute spaces; attach the spaces first")
        self.space_readout = readout

    def forward_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """From one pass over the backbone: the embedding, then the tag probabilities, the
        attribute spaces (N, A, d) and their value posteriors (N, A, V) of the heads this model has,
        in that order."""
        heads = self.tag_heads is not None or self.attr_spaces is not None
        maps, fc, hmaps = self._maps(x, heads=heads)
        f = maps.mean(dim=(2, 3))
        out = [self._embed(f, f if fc is None else fc)]
        if self.tag_heads is not None:
            out.append(self.tag_heads.flat(hmaps.mean(dim=(2, 3))))  # type: ignore[operator,union-attr]
        if self.attr_spaces is not None:
            out.append(self.attr_spaces(hmaps))
            if self.space_readout is not None:
                out.append(self.space_readout(out[-1]))
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
            **(
                {"attribute_branch_from": self.attr_from, "attribute_taps": list(self.attr_taps)}
                if self.attr_branch is not None
                else {}
            ),
            **({"tags": self.tag_layout()} if self.tag_heads is not None else {}),
            **(
                {
                    "spaces": {
                        "names": self.space_names,
                        "values": self.space_values,
                        "dim": self.attr_spaces.dim,  # type: ignore[union-attr]
                        **(
                            {"readout_counts": list(self.space_readout.counts)}  # type: ignore[union-attr,arg-type]
                            if self.space_readout is not None
                            else {}
                        ),
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
