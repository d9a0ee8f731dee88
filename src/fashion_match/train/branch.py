"""Training a category branch for an exported model: its own copy of the last backbone blocks + classifier.

The model's trunk (blocks before `from_block`) stays frozen and shared, so its outputs for the
training images are computed once (the runtime's preprocessing) and the branch trains on those
maps: random flips and shifts (`shift` cells), cross-entropy with label smoothing, AdamW with a
one-cycle schedule. The branch starts from the model's own blocks. Test accuracy is measured after
each epoch and stored in the file's metadata; `attach_and_export` (`fm-train --branch-for DIR`)
attaches the file to the model and exports the result as a new model directory.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fashion_match.data.spec import load_dataset
from fashion_match.errors import UsageError
from fashion_match.fileio import atomic_open, sha256_file
from fashion_match.formats import WEIGHTS
from fashion_match.models.checkpoint import load_weights
from fashion_match.models.embedding import EmbeddingModel
from fashion_match.runtime.manifest import load_manifest
from fashion_match.train.cached import augment_maps, prefix_outputs

log = logging.getLogger(__name__)

# oneDNN's depthwise convolutions train 1.4-2x faster on CPU in this layout (measured on the
# block-14 and block-16 branches, batch 128)
CL = torch.channels_last


def maps_and_labels(
    model: EmbeddingModel, records: list[Any], cats: list[str], desc: str, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    prefix: nn.Module = model.backbone[: model.branch_from]  # type: ignore[index]
    maps, kept = prefix_outputs(
        prefix, pool=False, records=records, model=model, device=torch.device("cpu"), progress=progress, desc=desc
    )
    return maps, torch.tensor([cats.index(records[i].category) for i in kept])


@torch.no_grad()
def accuracy(branch: nn.Module, classifier: nn.Module, maps: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Test top-1, and with the mean logits of each map and its mirror image (flip test-time
    augmentation), which tells whether mirroring inside the model would pay for its cost."""
    branch.eval()
    logits, flipped = [], []
    for s in range(0, len(maps), 500):
        x = maps[s : s + 500].contiguous(memory_format=CL)
        logits.append(classifier(branch(x).mean(dim=(2, 3))))
        flipped.append(classifier(branch(x.flip(-1).contiguous(memory_format=CL)).mean(dim=(2, 3))))
    plain, mirrored = torch.cat(logits), torch.cat(flipped)
    return {
        "test_top1": float((plain.argmax(1) == labels).float().mean()),
        "test_top1_flip_tta": float(((plain + mirrored).argmax(1) == labels).float().mean()),
    }


def train_category_branch(
    model_dir: Path,
    out: Path,
    *,
    from_block: int = 16,
    epochs: int = 4,
    batch: int = 128,
    lr: float = 3e-4,
    shift: int = 1,
    seed: int = 0,
    data: str = "fashion-mnist",
    progress: bool = True,
) -> dict[str, Any]:
    """Train a branch for the model in `model_dir` on `data`'s train split; write it to `out`
    (safetensors, metadata included) and return that metadata."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    manifest = load_manifest(model_dir)
    weights = model_dir / WEIGHTS
    model = load_weights(weights, manifest.data["architecture"])
    if model.category_branch is not None:
        raise UsageError(f"{model_dir}: this model already has a category branch")
    ds = load_dataset(data)
    cats = list(ds.categories)
    if not cats:
        raise UsageError(f"{data}: no categories to train a category branch on")
    model.classifier = nn.Linear(model.feature_dim, len(cats))  # a fresh classifier for this branch
    model.add_category_branch(from_block, 0.0)
    branch, classifier = model.category_branch, model.classifier
    assert branch is not None
    branch.to(memory_format=CL)  # type: ignore[call-overload]
    train = [r for r in ds.records if r.split == "train"]
    test = [r for r in ds.records if r.split == "test"]
    x_train, y_train = maps_and_labels(model, train, cats, "trunk maps (train)", progress)
    x_test, y_test = maps_and_labels(model, test, cats, "trunk maps (test)", progress)
    steps_per_epoch = max(1, len(x_train) // batch)
    opt = torch.optim.AdamW(
        [{"params": branch.parameters(), "lr": lr}, {"params": classifier.parameters(), "lr": 10 * lr}],
        weight_decay=0.05,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, [lr, 10 * lr], total_steps=epochs * steps_per_epoch, pct_start=0.1)
    history = []
    for epoch in range(epochs):
        branch.train()
        perm = torch.randperm(len(x_train))
        for s in range(steps_per_epoch):
            i = perm[s * batch : (s + 1) * batch]
            x = augment_maps(x_train[i], flip=True, shift=shift).contiguous(memory_format=CL)
            logits = classifier(branch(x).mean(dim=(2, 3)))
            loss = nn.functional.cross_entropy(logits, y_train[i], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(branch, classifier, x_test, y_test)
        history.append({"epoch": epoch, **acc, "seconds": round(time.perf_counter() - t0)})
        log.info("category branch: %s", json.dumps(history[-1]))
    from safetensors.torch import save

    state = {f"category_branch.{k}": v for k, v in branch.state_dict().items()}
    state |= {f"classifier.{k}": v for k, v in classifier.state_dict().items()}
    meta = {
        "from_block": from_block,
        "categories": cats,
        "base_model": manifest.model,
        "base_weights_sha256": sha256_file(weights),
        "args": {"epochs": epochs, "batch": batch, "lr": lr, "shift": shift, "seed": seed, "data": data},
        "history": history,
    }
    blob = save(
        {k: v.detach().contiguous() for k, v in state.items()}, metadata={"fashion_match_branch": json.dumps(meta)}
    )
    with atomic_open(out, "wb") as f:
        f.write(blob)
    return meta


def attach_and_export(
    model_dir: Path, branch_file: Path, out: Path, *, share: float, mirror: bool = False
) -> dict[str, Any]:
    """Write a model directory `out`: `model_dir`'s model with the branch in `branch_file` attached
    at similarity share `share`, exported to FP32 ONNX. The category share changes the similarity,
    so the match threshold is calibrated again (see `train.reexport.reexport_with`)."""
    from fashion_match.models.merge import add_branch
    from fashion_match.train.reexport import reexport_with

    def attach(model: Any) -> dict[str, Any]:
        return add_branch(model, branch_file, share, mirror)

    return reexport_with(
        Path(model_dir), Path(out), "category branch", "category-branch", attach, changes_similarity=True
    )
