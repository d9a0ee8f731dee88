"""Training on cached backbone outputs: the CPU-friendly path.

When the first part of the backbone never trains, its outputs for every training (and
evaluation) image can be computed once. The rest — the last `train_blocks` backbone blocks, the
pooling, the head, the proxies — then trains on those cached maps at a small fraction of the
cost. With `train_blocks=0` the cache holds pooled features and only the head trains (the
frozen warm-up). Augmentation is limited to what the cached maps allow: random horizontal flips
and, with `map_shift`, random translations by whole map cells (a stand-in for random crops).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from fashion_match.data.images import iter_batches
from fashion_match.errors import UsageError
from fashion_match.models.embedding import EmbeddingModel
from fashion_match.train.augment import eval_batch

log = logging.getLogger(__name__)


def split_backbone(model: EmbeddingModel, train_blocks: int) -> tuple[nn.Module, nn.Sequential]:
    """(frozen prefix, trainable suffix) of a Sequential backbone."""
    bb = model.backbone
    if train_blocks == 0:
        return bb, nn.Sequential()
    if not isinstance(bb, nn.Sequential) or train_blocks >= len(bb):
        raise UsageError(
            f"--train-blocks {train_blocks}: {model.name}'s backbone is not a Sequential of more than that many "
            "blocks (mobilenet_v2 has 19, resnet18/50 have 8)"
        )
    return bb[: len(bb) - train_blocks], bb[len(bb) - train_blocks :]


ORT_MIN_IMAGES = 2000  # below this, exporting the prefix costs more than it saves


def _ort_runner(prefix: nn.Module, size: int) -> Any:
    """The frozen prefix as an ONNX Runtime session. On two cores, caching 1,200 fmnist-c2s images
    through MobileNetV2's first 15 blocks ran at 114 images/s with ONNX Runtime including the
    ~6 s export (about 250 images/s after it), 57 images/s with PyTorch. None if export fails."""
    import os
    import tempfile

    try:
        import onnxruntime as ort
    except ImportError:
        return None
    prefix.eval()  # a Sequential slice starts in training mode even when its blocks do not
    fd, path = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        example = torch.zeros(2, 3, size, size)
        torch.onnx.export(
            prefix,
            (example,),
            path,
            input_names=["x"],
            output_names=["y"],
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
            verbose=False,
        )
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - any export problem just means "use PyTorch"
        log.info("prefix export to ONNX failed (%s); caching with PyTorch", e)
        return None
    finally:
        os.unlink(path)
    return lambda x: torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])


@torch.no_grad()
def prefix_outputs(
    prefix: nn.Module,
    *,
    pool: bool,
    records: list[Any],
    model: EmbeddingModel,
    device: torch.device,
    progress: bool,
    desc: str,
    engine: str = "auto",
) -> tuple[torch.Tensor, list[int]]:
    """Outputs of the frozen prefix for `records` (runtime preprocessing), float32 on the CPU
    (float16 would halve memory, but in a test it moved embeddings to 0.994 cosine).

    engine: "torch", "onnxruntime", or "auto" (ONNX Runtime on CPU for >= ORT_MIN_IMAGES images).
    """
    from fashion_match.progress import Bar

    prefix.eval()
    run = None
    if engine == "onnxruntime" or (engine == "auto" and device.type == "cpu" and len(records) >= ORT_MIN_IMAGES):
        run = _ort_runner(prefix, model.preprocess.size)
    if run is None:
        # channels_last: oneDNN's depthwise kernels run ~2x faster on CPU in this layout
        prefix.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

        def run(x: torch.Tensor) -> torch.Tensor:
            return prefix(x.to(device).contiguous(memory_format=torch.channels_last)).contiguous().cpu()

    # filled in place, not concatenated at the end: the maps of a large training set are most of
    # the memory there is, and a concatenation would need them twice
    out: torch.Tensor | None = None
    kept: list[int] = []
    bar = Bar(len(records), desc, enabled=progress)
    for b in iter_batches([r.source for r in records], model.preprocess, 64, bboxes=[r.bbox for r in records]):
        if b.indices:
            y = run(eval_batch(b.pixels, model.preprocess))
            if pool:
                y = y.mean(dim=(2, 3), keepdim=True)
            if out is None:
                out = torch.empty((len(records), *y.shape[1:]), dtype=torch.float32)
            out[len(kept) : len(kept) + len(y)] = y
            kept += b.indices
        for e in b.bad:
            log.warning("skipping %s", e)
        bar.update(len(b.indices) + len(b.bad))
    bar.close()
    # back to the default layout: later training must run the same kernels as a resumed run
    prefix.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    if out is None:
        raise UsageError(f"{desc}: none of the {len(records)} images could be read")
    return out[: len(kept)], kept


class HeadMaps(nn.Module):
    """The frozen model up to the maps its tag heads and spaces read (models.embedding.head_maps)."""

    def __init__(self, model: EmbeddingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.head_maps(x)


def backbone_outputs(
    model: EmbeddingModel, records: list[Any], *, pool: bool, desc: str, progress: bool = True
) -> tuple[torch.Tensor, list[int]]:
    """The frozen maps (or pooled features, flattened) that `model`'s heads read for `records`: its
    attribute branch's when it has one, else the backbone's; on the CPU."""
    prefix = HeadMaps(model) if model.attr_branch is not None else model.backbone
    out, kept = cpu_outputs(prefix, model, records, pool=pool, desc=desc, progress=progress)
    return (out.flatten(1) if pool else out), kept


def cpu_outputs(
    prefix: nn.Module, model: EmbeddingModel, records: list[Any], *, pool: bool, desc: str, progress: bool
) -> tuple[torch.Tensor, list[int]]:
    """`prefix_outputs` of a frozen `prefix` of `model` on the CPU (runtime preprocessing)."""
    return prefix_outputs(
        prefix, pool=pool, records=records, model=model, device=torch.device("cpu"), progress=progress, desc=desc
    )


def shift_maps(maps: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Each map (N, C, H, W) moved by (dy[i], dx[i]) cells; uncovered cells repeat the edge.

    Edge replication rather than zeros: a cached map's border is the prefix's response to the
    image background, and zero is not what any background produces."""
    n, _, h, w = maps.shape
    rows = (torch.arange(h, device=maps.device)[None, :] - dy[:, None]).clamp(0, h - 1)  # (N, H)
    cols = (torch.arange(w, device=maps.device)[None, :] - dx[:, None]).clamp(0, w - 1)  # (N, W)
    idx = torch.arange(n, device=maps.device)[:, None, None]
    return maps.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def augment_maps(maps: torch.Tensor, flip: bool, shift: int) -> torch.Tensor:
    """Cached maps' stand-in for image augmentation: a random horizontal flip of each map (when
    `flip`), then a random shift by up to `shift` cells. Draws the random numbers in that order."""
    if maps.shape[-1] <= 1:
        return maps
    if flip:
        flipped = torch.rand(len(maps), device=maps.device) < 0.5
        maps = torch.where(flipped[:, None, None, None], maps.flip(-1), maps)
    if shift > 0:
        dy, dx = torch.randint(-shift, shift + 1, (2, len(maps)), device=maps.device)
        maps = shift_maps(maps, dy, dx)
    return maps


class MapNet(nn.Module):
    """Suffix blocks -> pooling -> head (+ classifier) -> loss, on cached prefix outputs."""

    def __init__(
        self,
        suffix: nn.Sequential,
        model: EmbeddingModel,
        loss: nn.Module,
        category_weight: float,
        flip: bool = True,
        shift: int = 0,
    ) -> None:
        super().__init__()
        self.suffix, self.head, self.classifier, self.loss = suffix, model.head, model.classifier, loss
        self.category_weight, self.flip, self.shift = category_weight, flip, shift

    def embed(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        f = self.suffix(maps.float()).mean(dim=(2, 3))
        logits = self.classifier(f) if self.classifier is not None else None
        return nn.functional.normalize(self.head(f), dim=1), logits

    def forward(self, maps: torch.Tensor, labels: torch.Tensor, cats: torch.Tensor) -> torch.Tensor:
        if self.training:
            maps = augment_maps(maps, self.flip, self.shift)
        emb, logits = self.embed(maps)
        out: torch.Tensor = self.loss(emb, labels, cats)
        if logits is not None and (cats >= 0).any():
            ok = cats >= 0
            out = out + self.category_weight * nn.functional.cross_entropy(logits[ok], cats[ok])
        return out


def map_embedder(net: MapNet, maps: torch.Tensor, device: torch.device):  # type: ignore[no-untyped-def]
    """An `embed_fn` for `evaluate`: record positions -> embeddings from cached maps."""

    @torch.no_grad()
    def embed(rows: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        net.eval()
        embs, logits = [], []
        for s in range(0, len(rows), 512):
            e, lg = net.embed(maps[rows[s : s + 512]].to(device))
            embs.append(e.cpu().numpy())
            if lg is not None:
                logits.append(lg.cpu().numpy())
        return np.concatenate(embs), (np.concatenate(logits) if logits else None)

    return embed
