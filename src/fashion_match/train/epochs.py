"""One epoch of `fm-train`, in three parts: on cached prefix maps, on images, then evaluate and save.

`Run` holds what the trainer set up (model, loss, optimiser, samplers, caches, history) and what
changes across epochs (the DDP wrapper of the image path, the best Recall@1 so far).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fashion_match.models.embedding import EmbeddingModel
from fashion_match.train.cached import MapNet, map_embedder, split_backbone
from fashion_match.train.checkpoint import git_commit, save_training
from fashion_match.train.config import TrainConfig
from fashion_match.train.dataset import collate_skip_bad, label_key
from fashion_match.train.evaluate import evaluate, score
from fashion_match.train.losses import MetricLoss
from fashion_match.train.sampler import PKBatchSampler

log = logging.getLogger(__name__)


@dataclass
class Run:
    cfg: TrainConfig
    out: Path
    rank: int
    world: int
    local: int
    device: torch.device
    ds: Any
    model: EmbeddingModel
    loss: MetricLoss
    opt: torch.optim.Optimizer
    sampler: PKBatchSampler
    dataset: Any
    label_vocab: list[str]
    cat_vocab: list[str]
    scaler: Any
    scaler_dtype: torch.dtype
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    best: float = -1.0
    # the cached path (see train.cached): what never trains is computed once
    map_net: MapNet | None = None
    cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    cached_sampler: PKBatchSampler | None = None
    eval_maps: tuple[torch.Tensor, list[int], set[int]] | None = None
    # the image path's wrapper, re-made when the set of trainable parameters changes
    net: nn.Module | None = None
    frozen_now: bool | None = None

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def train_blocks(self) -> int:
        return self.cfg.train_blocks or 0

    def set_lr(self, step: int) -> None:
        """Cosine decay over the whole run, per step."""
        total = self.cfg.epochs * len(self.sampler)
        for grp in self.opt.param_groups:
            grp["lr"] = grp["base_lr"] * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))

    def uses_cache(self, frozen: bool) -> bool:
        return self.map_net is not None and (self.train_blocks > 0 or frozen)


def cached_epoch(run: Run, *, epoch: int, frozen: bool, progress: bool = True) -> tuple[int, list[float]]:
    """One epoch on the cached prefix maps: (images seen, per-step losses)."""
    from fashion_match.progress import Bar

    assert run.map_net is not None and run.cache is not None and run.cached_sampler is not None
    maps, labels, cats = run.cache
    run.cached_sampler.set_epoch(epoch)
    for prm in run.map_net.suffix.parameters():
        prm.requires_grad_(not frozen)
    step_net: nn.Module = nn.parallel.DistributedDataParallel(run.map_net) if run.world > 1 else run.map_net
    step_net.train()
    if frozen:
        run.map_net.suffix.eval()  # frozen means BatchNorm statistics too
    seen, losses = 0, []
    desc = f"epoch {epoch + 1}/{run.cfg.epochs}{' (frozen)' if frozen else ''}, cached maps"
    bar = Bar(len(run.cached_sampler), desc, unit="step", enabled=progress and run.rank == 0)
    for step, idx in enumerate(run.cached_sampler):
        bar.update()
        run.set_lr(epoch * len(run.sampler) + step)
        value = step_net(maps[idx].to(run.device), labels[idx].to(run.device), cats[idx].to(run.device))
        run.opt.zero_grad(set_to_none=True)
        value.backward()
        run.opt.step()
        losses.append(float(value.detach()))
        seen += len(idx) * run.world
    bar.close()
    run.frozen_now = None  # the image path re-wraps if it takes over
    return seen, losses


def image_epoch(
    run: Run, *, epoch: int, frozen: bool, make_net: Any, set_trainable: Any, progress: bool
) -> tuple[int, list[float]]:
    """One epoch on decoded, augmented images: (images seen, per-step losses)."""
    from fashion_match.progress import Bar

    cfg, model = run.cfg, run.model
    if frozen != run.frozen_now:  # (re)wrap when the set of trainable parameters changes
        set_trainable(model, not frozen, cfg.train_blocks)
        run.net, run.frozen_now = make_net(), frozen
    assert run.net is not None
    run.sampler.set_epoch(epoch)
    g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch + 1)
    loader = torch.utils.data.DataLoader(
        run.dataset,
        batch_sampler=run.sampler,
        num_workers=cfg.workers,
        collate_fn=collate_skip_bad,
        generator=g,
        persistent_workers=False,
        pin_memory=run.cuda,
    )
    run.net.train()
    if frozen:
        model.backbone.eval()  # frozen means BatchNorm statistics too
    elif cfg.train_blocks:
        split_backbone(model, cfg.train_blocks)[0].eval()  # and so does a frozen prefix
    desc = f"epoch {epoch + 1}/{cfg.epochs}{' (frozen)' if frozen else ''}"
    bar = Bar(len(run.sampler), desc, unit="step", enabled=progress and run.rank == 0)
    t0, seen, losses = time.perf_counter(), 0, []
    for step, batch in enumerate(loader):
        bar.update()
        if batch is None:
            continue
        x, y, c = (t.to(run.device, non_blocking=True) for t in batch)
        if run.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        run.set_lr(epoch * len(run.sampler) + step)
        with torch.autocast(run.device.type, dtype=run.scaler_dtype, enabled=run.cuda and cfg.amp):
            value = run.net(x, y, c)
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(value).backward()
        run.scaler.step(run.opt)
        run.scaler.update()
        losses.append(float(value.detach()))
        seen += len(x) * run.world
        bar.set_postfix(loss=f"{losses[-1]:.4f}", rate=f"{seen / (time.perf_counter() - t0):.0f} img/s")
    bar.close()
    return seen, losses


def _metrics(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    cat_list = run.cat_vocab if cfg.category_head else None
    if run.map_net is not None and run.eval_maps is not None:  # the prefix is fixed: embed from cached maps
        em, rec_ids, q_set = run.eval_maps
        emb, logits = map_embedder(run.map_net, em, run.device)(list(range(len(rec_ids))))
        qi = [n for n, r in enumerate(rec_ids) if r in q_set]
        gi = [n for n, r in enumerate(rec_ids) if r not in q_set]
        return score(
            run.ds,
            [rec_ids[n] for n in qi],
            emb[qi],
            logits[qi] if logits is not None else None,
            [rec_ids[n] for n in gi],
            emb[gi],
            cat_list,
            subsampled=bool(cfg.eval_queries or cfg.eval_gallery),
        )
    return evaluate(
        run.model, run.ds, run.device, queries=cfg.eval_queries, gallery=cfg.eval_gallery, categories=cat_list
    )


def evaluate_and_save(
    run: Run, *, epoch: int, frozen: bool, seen: int, losses: list[float], train_s: float, progress: bool
) -> None:
    """Rank 0: score the epoch on the protocol, record it, write latest/ (and best/ when it is)."""
    from fashion_match.progress import say, stage

    cfg = run.cfg
    with stage(f"epoch {epoch + 1}/{cfg.epochs}: evaluation", enabled=progress):
        metrics = _metrics(run)
    row = {
        "epoch": epoch + 1,
        "frozen": frozen,
        "loss": float(np.mean(losses)) if losses else float("nan"),
        "images_per_s": seen / max(train_s, 1e-9),
        "train_s": train_s,
        **metrics,
    }
    run.history.append(row)
    info = {
        "epoch": epoch,
        "history": run.history,
        "labels": {"key": label_key(run.ds, cfg.label), "count": len(run.label_vocab)},
        "categories": run.cat_vocab,
        "threshold": metrics.get("threshold"),
        "data": cfg.data,
        "git_commit": git_commit(),
        "metrics": metrics,
        "best_recall_at_1": max(run.best, metrics["recall_at_1"]),
    }
    if metrics["recall_at_1"] > run.best:
        run.best = metrics["recall_at_1"]
        save_training(run.out / "best", run.model, run.loss, run.opt, info)
    save_training(run.out / "latest", run.model, run.loss, run.opt, info)
    line = (
        f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}  R@1 {metrics['recall_at_1']:.4f}  "
        f"mAP@R {metrics['map_at_r']:.4f}  {row['images_per_s']:.0f} img/s"
    )
    if progress:
        say(line)
    else:
        log.info(line)
