"""Train a category branch for an exported model: its own copy of the last backbone blocks + classifier.

    python scripts/train_category_branch.py --model DIR --out branch.safetensors [--from-block 16]
        [--epochs 4] [--seed 0]

The model's trunk (blocks before `--from-block`) stays frozen and shared, so its outputs for the
60,000 Fashion-MNIST train images are computed once (the runtime's preprocessing) and the branch
trains on those maps: random flips and shifts (`--shift` cells), cross-entropy with label smoothing,
AdamW with a one-cycle schedule. The branch starts from the model's own blocks. Test accuracy is
printed after each epoch and stored in the file's metadata. `make_default_model.py
--category-branch FILE --category-share W` then builds the model that uses it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from fashion_match.data.spec import load_dataset
from fashion_match.fileio import atomic_open, sha256_file
from fashion_match.formats import WEIGHTS
from fashion_match.models.checkpoint import load_weights
from fashion_match.runtime.manifest import load_manifest
from fashion_match.train.cached import augment_maps, prefix_outputs

# oneDNN's depthwise convolutions train 1.4-2x faster on CPU in this layout (measured on the
# block-14 and block-16 branches, batch 128)
CL = torch.channels_last


def maps_and_labels(model: nn.Module, records: list, cats: list[str], desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = model.backbone[: model.branch_from]  # type: ignore[index]
    maps, kept = prefix_outputs(
        prefix,
        pool=False,
        records=records,
        model=model,
        device=torch.device("cpu"),
        progress=True,
        desc=desc,  # type: ignore[arg-type]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="an exported model directory with model.safetensors")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--from-block", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-4, help="branch blocks; the classifier gets 10x")
    ap.add_argument("--shift", type=int, default=1, help="random shift of the maps, in cells")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    manifest = load_manifest(args.model)
    weights = args.model / WEIGHTS
    model = load_weights(weights, manifest.data["architecture"])
    if model.category_branch is not None:
        raise SystemExit(f"{args.model}: this model already has a category branch")
    ds = load_dataset("fashion-mnist")
    cats = list(ds.categories)
    model.classifier = nn.Linear(model.feature_dim, len(cats))  # a fresh classifier for this branch
    model.add_category_branch(args.from_block, 0.0)
    branch, classifier = model.category_branch, model.classifier
    assert branch is not None
    branch.to(memory_format=CL)  # type: ignore[call-overload]
    train = [r for r in ds.records if r.split == "train"]
    test = [r for r in ds.records if r.split == "test"]
    x_train, y_train = maps_and_labels(model, train, cats, "trunk maps (train)")
    x_test, y_test = maps_and_labels(model, test, cats, "trunk maps (test)")

    steps_per_epoch = len(x_train) // args.batch
    opt = torch.optim.AdamW(
        [{"params": branch.parameters(), "lr": args.lr}, {"params": classifier.parameters(), "lr": 10 * args.lr}],
        weight_decay=0.05,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, [args.lr, 10 * args.lr], total_steps=args.epochs * steps_per_epoch, pct_start=0.1
    )
    history = []
    for epoch in range(args.epochs):
        branch.train()
        perm = torch.randperm(len(x_train))
        for s in range(steps_per_epoch):
            i = perm[s * args.batch : (s + 1) * args.batch]
            x = augment_maps(x_train[i], flip=True, shift=args.shift).contiguous(memory_format=CL)
            logits = classifier(branch(x).mean(dim=(2, 3)))
            loss = nn.functional.cross_entropy(logits, y_train[i], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(branch, classifier, x_test, y_test)
        history.append({"epoch": epoch, **acc, "seconds": round(time.perf_counter() - t0)})
        print(json.dumps(history[-1]), flush=True)

    from safetensors.torch import save

    state = {f"category_branch.{k}": v for k, v in branch.state_dict().items()}
    state |= {f"classifier.{k}": v for k, v in classifier.state_dict().items()}
    meta = {
        "from_block": args.from_block,
        "categories": cats,
        "base_model": manifest.model,
        "base_weights_sha256": sha256_file(weights),
        "args": {k: str(v) for k, v in vars(args).items()},
        "history": history,
    }
    data = save(
        {k: v.detach().contiguous() for k, v in state.items()}, metadata={"fashion_match_branch": json.dumps(meta)}
    )
    with atomic_open(args.out, "wb") as f:
        f.write(data)
    print(f"-> {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
