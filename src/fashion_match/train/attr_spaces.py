"""Training attribute-specific spaces (models.attr_spaces) on a frozen backbone's feature maps.

The backbone's last feature maps for the training images are computed once (the runtime's
preprocessing); the attentions, projections and value proxies train on them, with random
mirroring of the maps. Evaluation follows ASEN: per attribute, query images rank the gallery and
the relevant ones share that attribute's value; mean average precision per attribute.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from fashion_match.data.attributes import UNKNOWN, Attribute
from fashion_match.metrics import mean_average_precision
from fashion_match.models.attr_spaces import AttributeSpaces, ValueProxies
from fashion_match.train.cached import augment_maps, backbone_outputs

log = logging.getLogger(__name__)


def single_attributes(attrs: list[Attribute]) -> list[Attribute]:
    return [a for a in attrs if a.kind == "single"]


def value_labels(records: list[Any], attrs: list[Attribute]) -> torch.Tensor:
    """(N, A) value index per record and attribute, UNKNOWN where it has none."""
    return torch.tensor([[int((r.attrs or {}).get(a.name, UNKNOWN)) for a in attrs] for r in records], dtype=torch.long)


def feature_maps(model: Any, records: list[Any], desc: str, progress: bool = True) -> tuple[torch.Tensor, list[int]]:
    return backbone_outputs(model, records, pool=False, desc=desc, progress=progress)


def train_spaces(
    maps: torch.Tensor,
    labels: torch.Tensor,
    attrs: list[Attribute],
    *,
    dim: int = 64,
    epochs: int = 20,
    batch: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> AttributeSpaces:
    from fashion_match.progress import Bar

    torch.manual_seed(seed)
    spaces = AttributeSpaces(maps.shape[1], len(attrs), dim)
    proxies = ValueProxies([len(a.values) for a in attrs], dim)
    opt = torch.optim.AdamW([*spaces.parameters(), *proxies.parameters()], lr=lr, weight_decay=1e-4)
    steps = max(1, len(maps) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    with Bar(epochs * steps, "attribute spaces", unit="step", enabled=progress) as bar:
        for _ in range(epochs):
            perm = torch.randperm(len(maps), generator=g)
            spaces.train()
            for s in range(steps):
                i = perm[s * batch : (s + 1) * batch]
                loss = proxies(spaces(augment_maps(maps[i], flip=True, shift=0)), labels[i])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.update()
    return spaces.eval()


@torch.no_grad()
def embed_spaces(spaces: AttributeSpaces, maps: torch.Tensor, chunk: int = 512) -> np.ndarray:
    return torch.cat([spaces(maps[s : s + chunk]) for s in range(0, len(maps), chunk)]).numpy()


def attribute_map(
    q: np.ndarray, g: np.ndarray, q_labels: torch.Tensor, g_labels: torch.Tensor, attrs: list[Attribute]
) -> dict[str, float]:
    """Per attribute, mAP of queries ranking the gallery with relevant = the same value; `q` and `g`
    are either (N, d) (one space for every attribute: a baseline) or (N, A, d) (a space each)."""
    out = {}
    for a, attr in enumerate(attrs):
        qa, ga = (q[:, a], g[:, a]) if q.ndim == 3 else (q, g)
        qk, gk = q_labels[:, a].numpy(), g_labels[:, a].numpy()
        qm, gm = qk != UNKNOWN, gk != UNKNOWN
        out[attr.name] = round(mean_average_precision(qa[qm] @ ga[gm].T, qk[qm], gk[gm]), 4)
    return out
