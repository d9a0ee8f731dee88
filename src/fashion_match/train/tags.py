"""Tag heads for an exported model: one head per attribute on the model's pooled features.

A single-valued attribute (colour, collar design) gets a softmax over its values, images without
a known value ignored; a multi-label attribute (DeepFashion's 1,000, style tags) gets one sigmoid
per tag, unannotated entries masked out. Real tag data is extremely imbalanced, so each label's
loss is weighted (`loss="weighted"`: BCE with pos_weight = negatives / positives, capped; for
softmax heads, class weights inverse to the value frequency), or focal (`"focal"`, gamma 2), or
plain BCE / CE (`"plain"`, for comparison).

The backbone stays frozen: its pooled features for the training images are computed once (the
runtime's preprocessing) and the heads train on them. Per-label decision thresholds are the
F1-best ones on held-out training items; the test split is measured at those thresholds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fashion_match.data.attributes import UNKNOWN, Attribute, label_arrays
from fashion_match.errors import UsageError
from fashion_match.metrics import average_precision, best_f1_threshold, topk_recall
from fashion_match.models.tag_heads import TagHeads

log = logging.getLogger(__name__)
LOSSES = ("weighted", "focal", "plain")
MAX_POS_WEIGHT = 1000.0


@dataclass
class TagConfig:
    loss: str = "weighted"
    epochs: int = 30
    lr: float = 3e-3
    batch: int = 256
    weight_decay: float = 1e-4
    seed: int = 0


def targets(records: list[Any], attrs: list[Attribute]) -> dict[str, torch.Tensor]:
    """Per attribute: long (N,) value indices (UNKNOWN: ignored) or float (N, T) of 1/0/UNKNOWN."""
    arrays = label_arrays(records, attrs)
    return {
        a.name: torch.from_numpy(arrays[a.name]) if a.kind == "single" else torch.from_numpy(arrays[a.name]).float()
        for a in attrs
    }


def label_weights(attr: Attribute, y: torch.Tensor) -> torch.Tensor:
    """The imbalance weights of `loss="weighted"`: multi-label, negatives / positives per tag
    (capped at MAX_POS_WEIGHT); single-valued, inverse value frequency normalised to mean 1."""
    if attr.kind == "multi":
        known = y >= 0
        pos = ((y == 1) & known).sum(0).float()
        neg = ((y == 0) & known).sum(0).float()
        return (neg / pos.clamp(min=1)).clamp(1.0, MAX_POS_WEIGHT)
    counts = torch.bincount(y[y >= 0], minlength=len(attr.values)).float()
    w = torch.where(counts > 0, counts.sum() / (len(attr.values) * counts.clamp(min=1)), torch.zeros_like(counts))
    return w / w[counts > 0].mean() if (counts > 0).any() else w


def head_loss(
    attr: Attribute, z: torch.Tensor, y: torch.Tensor, loss: str, weight: torch.Tensor | None
) -> torch.Tensor:
    if attr.kind == "single":
        if not (y >= 0).any():
            return z.sum() * 0.0
        w = weight if loss == "weighted" else None
        if loss == "focal":
            logp = torch.log_softmax(z[y >= 0], 1).gather(1, y[y >= 0, None]).squeeze(1)
            return (-((1 - logp.exp()) ** 2) * logp).mean()
        return nn.functional.cross_entropy(z, y, weight=w, ignore_index=UNKNOWN)
    known = y >= 0
    t = y.clamp(min=0)
    if loss == "focal":
        p = torch.sigmoid(z)
        pt = torch.where(t > 0, p, 1 - p)
        raw = nn.functional.binary_cross_entropy_with_logits(z, t, reduction="none") * (1 - pt) ** 2
    else:
        pw = weight if loss == "weighted" else None
        raw = nn.functional.binary_cross_entropy_with_logits(z, t, pos_weight=pw, reduction="none")
    return (raw * known).sum() / known.sum().clamp(min=1)


def train_heads(feats: torch.Tensor, ys: dict[str, torch.Tensor], attrs: list[Attribute], cfg: TagConfig) -> TagHeads:
    if cfg.loss not in LOSSES:
        raise UsageError(f"--tag-loss {cfg.loss}: choose one of {', '.join(LOSSES)}")
    torch.manual_seed(cfg.seed)
    heads = TagHeads(feats.shape[1], attrs)
    weights = {a.name: label_weights(a, ys[a.name]) for a in attrs}
    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, len(feats) // cfg.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * steps)
    g = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(feats), generator=g)
        total = 0.0
        for s in range(steps):
            i = perm[s * cfg.batch : (s + 1) * cfg.batch]
            out = heads(feats[i])
            loss = sum(head_loss(a, out[a.name], ys[a.name][i], cfg.loss, weights[a.name]) for a in attrs)
            opt.zero_grad()
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            sched.step()
            total += float(loss.detach())  # type: ignore[union-attr]
        log.debug("tag heads epoch %d: loss %.4f", epoch + 1, total / steps)
    return heads.eval()


@torch.no_grad()
def predict(heads: TagHeads, feats: torch.Tensor) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in heads.probabilities(feats).items()}


def calibrate(
    probs: dict[str, np.ndarray], ys: dict[str, torch.Tensor], attrs: list[Attribute]
) -> dict[str, list[float]]:
    """Per multi-label tag, the F1-best threshold on held-out data (0.5 where it has no positive)."""
    out = {}
    for a in attrs:
        if a.kind != "multi":
            continue
        y = ys[a.name].numpy()
        th = []
        for j in range(len(a.values)):
            known = y[:, j] >= 0
            t, _ = (
                best_f1_threshold(probs[a.name][known, j], y[known, j] == 1) if (y[known, j] == 1).any() else (0.5, 0)
            )
            th.append(round(float(t), 6))
        out[a.name] = th
    return out


def evaluate(
    probs: dict[str, np.ndarray],
    ys: dict[str, torch.Tensor],
    attrs: list[Attribute],
    thresholds: dict[str, list[float]],
) -> dict[str, Any]:
    """Per attribute: accuracy (single) or per-label AP, mAP, macro-F1 at the thresholds and
    top-3 / top-5 recall (multi); labels without a test positive are left out of the means."""
    report: dict[str, Any] = {}
    for a in attrs:
        p, y = probs[a.name], ys[a.name].numpy()
        if a.kind == "single":
            known = y >= 0
            acc = float((p[known].argmax(1) == y[known]).mean()) if known.any() else float("nan")
            report[a.name] = {"kind": "single", "accuracy": acc, "images": int(known.sum())}
            continue
        ap, f1, counts = {}, [], {}
        for j, name in enumerate(a.values):
            known = y[:, j] >= 0
            pos = y[known, j] == 1
            counts[name] = int(pos.sum())
            if not pos.any():
                continue
            ap[name] = average_precision(p[known, j], pos)
            called = p[known, j] >= thresholds[a.name][j]
            tp = float((called & pos).sum())
            f1.append(2 * tp / max(1.0, float(called.sum() + pos.sum())))
        observed = y == 1
        report[a.name] = {
            "kind": "multi",
            "map": float(np.mean(list(ap.values()))) if ap else float("nan"),
            "macro_f1": float(np.mean(f1)) if f1 else float("nan"),
            "top3_recall": topk_recall(p, observed, 3),
            "top5_recall": topk_recall(p, observed, 5),
            "ap": {k: round(v, 4) for k, v in ap.items()},
            "test_positives": counts,
        }
    return report


def split_records(ds: Any, train_limit: int | None, eval_limit: int | None) -> tuple[list[Any], list[Any], list[Any]]:
    """(train, held-out, test) records: the train split's items, every 10th of them held out for
    the thresholds (whole items, so no image leaks its twin), and the test split; limits take
    evenly spaced items."""
    from fashion_match.data.records import spaced

    def items(split: str, limit: int | None) -> list[list[Any]]:
        groups: dict[str, list[Any]] = {}
        for r in ds.records:
            if r.split == split and r.attrs:
                groups.setdefault(r.item_id, []).append(r)
        keys = list(groups)
        return [groups[keys[i]] for i in spaced(list(range(len(keys))), limit)]

    per_item = max(1, round(len([r for r in ds.records if r.split == "train"]) / max(1, ds.n_items())))
    train_items = items("train", None if train_limit is None else max(1, train_limit // per_item))
    test_items = items("test", None if eval_limit is None else max(1, eval_limit // per_item))
    if not train_items or not test_items:
        raise UsageError(f"{ds.format}: tag heads need attribute labels in both a train and a test split")
    train = [r for k, g in enumerate(train_items) if k % 10 for r in g]
    held = [r for k, g in enumerate(train_items) if not k % 10 for r in g]
    return train, held, [r for g in test_items for r in g]


def pooled_features(model: Any, records: list[Any], desc: str, progress: bool) -> tuple[torch.Tensor, list[int]]:
    """The model's pooled backbone features for `records` (runtime preprocessing), computed once."""
    from fashion_match.train.cached import backbone_outputs

    return backbone_outputs(model, records, pool=True, desc=desc, progress=progress)


def train_tags(
    model_dir: Any,
    data: str,
    out: Any,
    cfg: TagConfig,
    *,
    train_limit: int | None = None,
    eval_limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train tag heads for the model in `model_dir` on `data`'s attributes; write them with their
    vocabulary, thresholds and test report to `out` (safetensors, metadata in its header)."""
    import json
    from pathlib import Path

    from safetensors.torch import save

    from fashion_match.data.spec import load_dataset
    from fashion_match.fileio import atomic_open, sha256_file
    from fashion_match.formats import WEIGHTS
    from fashion_match.models.checkpoint import load_weights
    from fashion_match.progress import stage
    from fashion_match.runtime.manifest import load_manifest

    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    model = load_weights(model_dir / WEIGHTS, manifest.data["architecture"]).eval()
    ds = load_dataset(data)
    if not ds.attributes:
        raise UsageError(
            f"{data}: has no attribute labels (try fmnist-attr, deepfashion-attr:DIR, fashionai:DIR, attr-csv:FILE)"
        )
    train, held, test = split_records(ds, train_limit, eval_limit)
    feats, ys = {}, {}
    for name, recs in (("train", train), ("held", held), ("test", test)):
        f, kept = pooled_features(model, recs, f"features ({name})", progress)
        feats[name], ys[name] = f, targets([recs[i] for i in kept], ds.attributes)
    with stage(f"tag heads: {cfg.epochs} epochs, {cfg.loss} loss", enabled=progress):
        heads = train_heads(feats["train"], ys["train"], ds.attributes, cfg)
    thresholds = calibrate(predict(heads, feats["held"]), ys["held"], ds.attributes)
    report = evaluate(predict(heads, feats["test"]), ys["test"], ds.attributes, thresholds)
    meta = {
        "attributes": [{"name": a.name, "kind": a.kind, "values": list(a.values)} for a in ds.attributes],
        "thresholds": thresholds,
        "report": report,
        "images": {k: len(v) for k, v in feats.items()},
        "config": vars(cfg),
        "data": data,
        "base_model": manifest.model,
        "base_weights_sha256": sha256_file(model_dir / WEIGHTS),
        "features": (
            f"the model's attribute branch (from block {model.attr_from}, taps {list(model.attr_taps)}), pooled, frozen"
            if model.attr_branch is not None
            else "the model's pooled backbone features (its item path), frozen"
        ),
    }
    state = {f"tag_heads.{k}": v.detach().contiguous() for k, v in heads.state_dict().items()}
    blob = save(state, metadata={"fashion_match_tags": json.dumps(meta, allow_nan=False, default=float)})
    with atomic_open(out, "wb") as fh:
        fh.write(blob)
    return meta


def export_with_tags(model_dir: Any, tags_file: Any, out: Any) -> dict[str, Any]:
    """A model directory `out`: `model_dir`'s model with the heads in `tags_file` attached, exported
    with the second graph output `tag_probs`. The item embedding is unchanged, so is its threshold."""
    from pathlib import Path

    from fashion_match.models.tag_heads import attributes_of
    from fashion_match.train.reexport import file_record, read_head_file, reexport_with

    meta, tensors = read_head_file(Path(tags_file), "fashion_match_tags", "fm-train --tags-for")

    def attach(model: Any) -> dict[str, Any]:
        heads = TagHeads(model.head_dim, attributes_of(meta["attributes"]))
        heads.load_state_dict({k.removeprefix("tag_heads."): v for k, v in tensors.items()})
        model.attach_tags(heads.eval())
        return file_record(Path(tags_file))

    tags = {
        "thresholds": meta["thresholds"],
        "report": meta["report"],
        "loss": meta["config"]["loss"],
        "data": meta["data"],
    }
    return reexport_with(Path(model_dir), Path(out), "tag heads", "tags", attach, tags=tags)
