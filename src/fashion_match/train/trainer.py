"""The metric-learning trainer behind `fm-train`.

Schedule (the seed projects' freeze-then-unfreeze): `freeze_epochs` with the backbone frozen
(BatchNorm statistics too) so the new head and proxies settle, then the whole network with the
backbone at `lr` and head/proxies at `lr * head_lr_mult`. AdamW, cosine decay per step.
Mixed precision and channels_last on GPU. Deterministic for a given --seed: every epoch reseeds
from (seed, epoch), so a run resumed from its last checkpoint ends with the same weights as an
uninterrupted one. Multi-GPU / multi-node through torchrun (DDP); evaluation and checkpoints
happen on rank 0.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from fashion_match.data.spec import load_dataset
from fashion_match.errors import UsageError
from fashion_match.models.embedding import EmbeddingModel, create_model
from fashion_match.train.augment import train_transform
from fashion_match.train.cached import MapNet, prefix_outputs, split_backbone
from fashion_match.train.checkpoint import load_training
from fashion_match.train.config import TrainConfig
from fashion_match.train.dataset import RecordDataset, encode, label_key, training_records
from fashion_match.train.distributed import average_buffers, process_group, ranks
from fashion_match.train.epochs import Run, cached_epoch, evaluate_and_save, image_epoch
from fashion_match.train.evaluate import eval_indices
from fashion_match.train.losses import MetricLoss
from fashion_match.train.sampler import PKBatchSampler

log = logging.getLogger(__name__)


class TrainNet(nn.Module):
    """Model + loss in one module, so DDP synchronises proxies and classifiers as well."""

    def __init__(self, model: EmbeddingModel, loss: MetricLoss, category_weight: float) -> None:
        super().__init__()
        self.model, self.loss, self.category_weight = model, loss, category_weight

    def forward(self, x: torch.Tensor, labels: torch.Tensor, cats: torch.Tensor) -> torch.Tensor:
        emb, logits = self.model.forward_with_logits(x)
        out = self.loss(emb.float(), labels, cats)
        if logits is not None and (cats >= 0).any():
            ok = cats >= 0
            out = out + self.category_weight * nn.functional.cross_entropy(logits[ok].float(), cats[ok])
        return out


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _set_backbone_trainable(model: EmbeddingModel, trainable: bool, train_blocks: int | None) -> None:
    """Frozen: nothing in the backbone learns. Otherwise all of it, or only its last train_blocks."""
    for p in model.backbone.parameters():
        p.requires_grad_(trainable and train_blocks is None)
    if trainable and train_blocks:
        for p in split_backbone(model, train_blocks)[1].parameters():
            p.requires_grad_(True)


def build(cfg: TrainConfig) -> tuple[Any, ...]:
    ds = load_dataset(cfg.data)
    recs = training_records(ds, cfg.train_limit)
    key = label_key(ds, cfg.label)
    labels, label_vocab = encode([getattr(r, key) for r in recs])
    if (labels < 0).any():
        raise UsageError(f"--label {cfg.label}: some training images have no {key}")
    cats, cat_vocab = encode([r.category for r in recs])
    if cfg.category_head and not cat_vocab:
        raise UsageError(f"--category-head: {ds.format} has no categories")
    pretrained: bool | str = {"imagenet": True, "none": False}.get(cfg.pretrained, cfg.pretrained)
    model = create_model(
        cfg.model, cfg.embedding_dim, pretrained=pretrained, num_classes=len(cat_vocab) if cfg.category_head else None
    )
    if cfg.image_size:
        model.preprocess = replace(model.preprocess, size=cfg.image_size)
    if cfg.init:
        from fashion_match.models.checkpoint import load_state_into

        load_state_into(model, cfg.init)
    loss = MetricLoss(cfg.loss, len(label_vocab), model.embedding_dim)
    if cfg.category_metric_weight > 0:
        if not cat_vocab:
            raise UsageError(f"--category-metric-weight: {ds.format} has no categories")
        loss.add_category_loss(len(cat_vocab), model.embedding_dim, cfg.category_metric_weight)
    return ds, recs, labels, label_vocab, cats, cat_vocab, model, loss


def train(
    cfg: TrainConfig, *, resume: bool = False, stop_after_epochs: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume) training into cfg.out; returns the final summary (rank 0).

    Under torchrun (WORLD_SIZE > 1) it starts the process group unless the caller did, and then
    also ends it: every rank meets at a barrier first, so none tears down while another still
    talks to it."""
    with process_group():
        return _train(cfg, resume=resume, stop_after_epochs=stop_after_epochs, progress=progress)


def _setup(cfg: TrainConfig, *, resume: bool, progress: bool) -> Run:
    """Data, model, loss, optimiser, samplers, the resumed state and the caches of the frozen prefix."""
    rank, world, local = ranks()
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if not cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)
    _seed_all(cfg.seed)
    out = Path(cfg.out)
    ds, recs, labels, label_vocab, cats, cat_vocab, model, loss = build(cfg)
    model.to(device)
    loss.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    head_params = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    groups = [
        {"params": list(model.backbone.parameters()), "base_lr": cfg.lr, "name": "backbone"},
        {"params": head_params + list(loss.parameters()), "base_lr": cfg.lr * cfg.head_lr_mult, "name": "head"},
    ]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = PKBatchSampler(labels, cfg.p, cfg.k, seed=cfg.seed, steps=cfg.steps_per_epoch, rank=rank, world=world)
    wants_cats = cfg.category_head or cfg.category_metric_weight > 0
    dataset = RecordDataset(recs, labels, cats if wants_cats else None, train_transform(model.preprocess, cfg.augment))
    scaler_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg.amp and scaler_dtype == torch.float16)
    run = Run(
        cfg=cfg,
        out=out,
        rank=rank,
        world=world,
        local=local,
        device=device,
        ds=ds,
        model=model,
        loss=loss,
        opt=opt,
        sampler=sampler,
        dataset=dataset,
        label_vocab=label_vocab,
        cat_vocab=cat_vocab,
        scaler=scaler,
        scaler_dtype=scaler_dtype,
    )
    if resume:
        info = load_training(out / "latest", model, loss, opt)
        run.start_epoch, run.history, run.best = info["epoch"] + 1, info["history"], info["best_recall_at_1"]
        if rank == 0:
            log.info("resuming %s after epoch %d", out, info["epoch"] + 1)
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")
    n_train = run.train_blocks
    use_cache = cfg.cache_frozen and (n_train > 0 or run.start_epoch < cfg.freeze_epochs)
    if cfg.train_blocks is not None or use_cache:
        prefix, suffix = split_backbone(model, n_train)  # fails early when the backbone cannot be split
    if use_cache:
        show = progress and rank == 0
        maps, kept = prefix_outputs(
            prefix,
            pool=n_train == 0,
            records=recs,
            model=model,
            device=device,
            progress=show,
            desc="caching frozen outputs",
        )
        cat_codes = cats if wants_cats else np.full(len(recs), -1)
        run.cache = (maps, torch.as_tensor(labels[kept]), torch.as_tensor(cat_codes[kept]))
        run.cached_sampler = PKBatchSampler(
            labels[kept], cfg.p, cfg.k, seed=cfg.seed, steps=len(sampler), rank=rank, world=world
        )
        run.map_net = MapNet(suffix, model, loss, cfg.category_weight, shift=cfg.map_shift)
        if n_train > 0 and rank == 0:  # the prefix never changes: cache the evaluation images too
            q_idx, g_idx = eval_indices(ds, cfg.eval_queries, cfg.eval_gallery)
            eval_recs = [ds.records[i] for i in q_idx + g_idx]
            em, ek = prefix_outputs(
                prefix,
                pool=False,
                records=eval_recs,
                model=model,
                device=device,
                progress=progress,
                desc="caching evaluation outputs",
            )
            run.eval_maps = (em, [(q_idx + g_idx)[i] for i in ek], set(q_idx))
    return run


def _train(cfg: TrainConfig, *, resume: bool, stop_after_epochs: int | None, progress: bool) -> dict[str, Any]:
    run = _setup(cfg, resume=resume, progress=progress)
    model, loss, world = run.model, run.loss, run.world

    def make_net() -> nn.Module:
        base = TrainNet(model, loss, cfg.category_weight)
        if world > 1:
            return nn.parallel.DistributedDataParallel(base, device_ids=[run.local] if run.cuda else None)
        return base

    ran = 0
    for epoch in range(run.start_epoch, cfg.epochs):
        frozen = epoch < cfg.freeze_epochs
        _seed_all(cfg.seed * 1000 + epoch + 1)
        t0 = time.perf_counter()
        if run.uses_cache(frozen):
            seen, losses = cached_epoch(run, epoch=epoch, frozen=frozen, progress=progress)
        else:
            seen, losses = image_epoch(
                run,
                epoch=epoch,
                frozen=frozen,
                make_net=make_net,
                set_trainable=_set_backbone_trainable,
                progress=progress,
            )
        train_s = time.perf_counter() - t0
        if world > 1:
            average_buffers(model, world)
        if run.rank == 0:
            evaluate_and_save(
                run, epoch=epoch, frozen=frozen, seen=seen, losses=losses, train_s=train_s, progress=progress
            )
        if world > 1:
            dist.barrier()
        ran += 1
        if stop_after_epochs is not None and ran >= stop_after_epochs:
            break
    return {
        "out": str(run.out),
        "history": run.history,
        "best_recall_at_1": run.best,
        "rank": run.rank,
        "weights_sha256": weights_digest(model, loss),
    }


def weights_digest(*modules: nn.Module) -> str:
    """sha256 over every parameter and buffer: equal digests mean bit-identical weights."""
    import hashlib

    h = hashlib.sha256()
    for m in modules:
        for name, t in sorted(m.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def summary_table(history: list[dict[str, Any]]) -> str:
    cats = any("category_top1" in h for h in history)
    head = "epoch  loss     R@1     R@10    mAP@R   AUC     img/s" + ("  cat top1/3/5" if cats else "")
    rows = []
    for h in history:
        row = (
            f"{h['epoch']:>5}  {h['loss']:<7.4f}  {h['recall_at_1']:<6.4f}  {h['recall_at_10']:<6.4f}  "
            f"{h['map_at_r']:<6.4f}  {h.get('pair_auc', float('nan')):<6.4f}  {h['images_per_s']:<5.0f}"
        )
        if cats:
            row += f"  {h.get('category_top1', 0):.3f}/{h.get('category_top3', 0):.3f}/{h.get('category_top5', 0):.3f}"
        rows.append(row)
    return "\n".join([head, *rows])
