"""Tag heads on a model's pooled item features: a softmax per single-valued attribute, a sigmoid
per tag of a multi-label one. In the exported graph their probabilities form one output, `tag_probs`
(N, T), the attributes' blocks side by side in `layout` order (the manifest names each block)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fashion_match.data.attributes import Attribute
from fashion_match.runtime.tagging import TAGS_OUTPUT

__all__ = ["TAGS_OUTPUT", "TagHeads", "attributes_of", "layout_of"]


def layout_of(attrs: list[Attribute]) -> list[dict[str, Any]]:
    """What the manifest says about each block of `tag_probs`: name, kind, values, offset."""
    out, offset = [], 0
    for a in attrs:
        out.append({"name": a.name, "kind": a.kind, "values": list(a.values), "offset": offset})
        offset += len(a.values)
    return out


def attributes_of(layout: list[dict[str, Any]]) -> list[Attribute]:
    return [Attribute(str(d["name"]), str(d["kind"]), tuple(str(v) for v in d["values"])) for d in layout]


class TagHeads(nn.Module):
    def __init__(self, feature_dim: int, attrs: list[Attribute]) -> None:
        super().__init__()
        self.attrs = attrs
        self.heads = nn.ModuleDict({a.name: nn.Linear(feature_dim, len(a.values)) for a in attrs})

    def forward(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(f) for name, head in self.heads.items()}

    def probabilities(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            a.name: torch.softmax(z, 1) if a.kind == "single" else torch.sigmoid(z)
            for a, z in zip(self.attrs, self(f).values(), strict=True)
        }

    def flat(self, f: torch.Tensor) -> torch.Tensor:
        """(N, T): every attribute's probabilities side by side, in `layout_of` order."""
        return torch.cat(list(self.probabilities(f).values()), dim=1)
