"""Attribute-specific embedding spaces, after ASEN (Ma et al., "Fine-grained fashion similarity
learning by attribute-specific embedding network", AAAI 2020; Dong et al., "Towards a more robust
fine-grained fashion retrieval", the ASEN_v2 follow-up).

One shared backbone feature map V (C x h x w). For each attribute a, a learned attribute embedding
conditions two attentions over V:
- spatial: a 1x1 projection of V and of the attribute embedding meet in a tanh space; their dot
  product, softmaxed over the h x w cells, says where to look for a (a sleeve, the whole garment);
- channel: from the attended feature and the attribute embedding, a two-layer MLP gives sigmoid
  weights over the C channels (which features describe a: colour channels for colour).
The attended, re-weighted feature goes through a per-attribute linear projection to d dims, L2
normalised: one space per attribute, in which images with the same value of a lie close. All
attributes run in one batched forward pass (the attribute index is a batch dimension), so the
export stays one graph with an (N, A, d) output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AttributeSpaces(nn.Module):
    def __init__(self, channels: int, n_attributes: int, dim: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.n_attributes, self.dim, self.channels = n_attributes, dim, channels
        self.attr_embed = nn.Embedding(n_attributes, hidden)
        self.map_proj = nn.Conv2d(channels, hidden, 1)
        self.attr_proj = nn.Linear(hidden, hidden)
        self.channel_mlp = nn.Sequential(nn.Linear(channels + hidden, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        # one projection per attribute, as a batched weight: (A, C, d)
        self.proj = nn.Parameter(torch.randn(n_attributes, channels, dim) * channels**-0.5)

    def attention(self, v: torch.Tensor) -> torch.Tensor:
        """Spatial attention per attribute: (N, A, h*w), summing to 1 over the cells."""
        keys = torch.tanh(self.map_proj(v)).flatten(2)  # (N, H, hw)
        q = torch.tanh(self.attr_proj(self.attr_embed.weight))  # (A, H)
        # plain MatMuls, not einsum: every op in the graph must be one TensorRT's parser takes
        return torch.softmax(torch.matmul(q, keys) / keys.shape[1] ** 0.5, dim=-1)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) feature maps -> (N, A, d) unit vectors, one per attribute space."""
        att = self.attention(v)  # (N, A, hw)
        flat = v.flatten(2)
        # attended features, plus the global mean: the attention adds where to look to what is
        # everywhere, so a space is never worse off than the pooled feature it starts from
        feat = torch.matmul(att, flat.transpose(1, 2)) + flat.mean(-1).unsqueeze(1)  # (N, A, C)
        a = self.attr_embed.weight.unsqueeze(0).expand(v.shape[0], -1, -1)  # (N, A, H)
        gate = torch.sigmoid(self.channel_mlp(torch.cat([feat, a], dim=-1)))  # (N, A, C)
        out = torch.matmul((feat * gate).transpose(0, 1), self.proj).transpose(0, 1)  # (A,N,C)@(A,C,d)
        return F.normalize(out, dim=-1)


# The proxy loss's defaults. An additive cosine margin (CosFace: Wang et al., "CosFace: large margin
# cosine loss for deep face recognition", CVPR 2018) makes every value's images gather tightly round
# its proxy, which ranking a whole gallery by one value needs (docs/training.md has what it measured).
SCALE, MARGIN = 32.0, 0.4


class ValueProxies(nn.Module):
    """A learned proxy per attribute value: normalised-softmax (proxy) loss in each space, with an
    additive cosine margin on the true value, in which an image's positives are the other images
    with the same value of that attribute."""

    def __init__(self, sizes: list[int], dim: int, scale: float = SCALE, margin: float = MARGIN) -> None:
        super().__init__()
        self.proxies = nn.ParameterList([nn.Parameter(torch.randn(n, dim)) for n in sizes])
        self.scale, self.margin = scale, margin

    def forward(self, spaces: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """spaces (N, A, d), labels (N, A) value indices (-1: unknown, ignored) -> mean loss."""
        losses = []
        for a, p in enumerate(self.proxies):
            y = labels[:, a]
            known = y >= 0
            if not known.any():
                continue
            cos = spaces[known, a] @ F.normalize(p, dim=1).T
            cos = cos - self.margin * F.one_hot(y[known], cos.shape[1])  # the true value must win by the margin
            losses.append(F.cross_entropy(self.scale * cos, y[known]))
        return torch.stack(losses).mean() if losses else spaces.sum() * 0.0


# A value's logit offset where an attribute has fewer values than the widest: exp() of it is 0 in
# float32 and float16 alike, and -1e4 stays inside float16's range (the FP16 graph carries it).
_ABSENT = -1.0e4


class ValueReadout(nn.Module):
    """Each space's value posterior: a softmax over the cosines of an image's vector to its values'
    prototypes (the mean direction of each value's training images), at a temperature chosen on
    held-out images. (N, A, d) -> (N, A, V + 1), V the most values an attribute has: the posterior
    p (zeros beyond an attribute's own values), then sqrt(1 - |p|^2), which makes every row a unit
    vector. A query leaves that last coordinate out (runtime.tagging.query_form), so its dot
    product with a row is sum(p_q * p_g), the probability that the two images share the value (the
    reduction of maximum inner product search to unit vectors of Bachrach et al., RecSys 2014).
    Ranking a gallery by that puts the images the space is sure of above the ones it is not, for
    every query, which ranks a whole gallery by one value better than the cosine does
    (docs/training.md has what it measured)."""

    prototypes: torch.Tensor
    scales: torch.Tensor
    absent: torch.Tensor

    def __init__(self, prototypes: torch.Tensor, counts: list[int], scales: torch.Tensor) -> None:
        super().__init__()
        a, v, _ = prototypes.shape
        if len(counts) != a or len(scales) != a or max(counts) != v:
            raise ValueError(f"readout: {a} spaces of {v} values, but counts {counts} and {len(scales)} scales")
        self.counts = [int(c) for c in counts]
        absent = torch.zeros(a, v)
        for i, c in enumerate(self.counts):
            absent[i, c:] = _ABSENT
        self.register_buffer("prototypes", prototypes.detach().clone().float())  # (A, V, d), unit rows
        self.register_buffer("scales", scales.detach().clone().float().reshape(a, 1, 1))
        self.register_buffer("absent", absent.reshape(a, 1, v))

    @property
    def width(self) -> int:
        """Coordinates per attribute: the most values an attribute has, and the completion."""
        return int(self.prototypes.shape[1]) + 1

    def forward(self, spaces: torch.Tensor) -> torch.Tensor:
        cos = torch.matmul(spaces.transpose(0, 1), self.prototypes.transpose(1, 2))  # (A, N, V)
        p = torch.softmax(cos * self.scales + self.absent, dim=-1).transpose(0, 1)  # (N, A, V)
        rest = torch.sqrt(torch.clamp(1.0 - (p * p).sum(-1, keepdim=True), min=0.0))
        return torch.cat([p, rest], dim=-1)
