"""Merging weights: WiSE interpolation with ImageNet, model soups and mixes of runs, category branches.

Weight-space ensembling (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models" and "Model
soups"): averaging the weights of runs of one lineage keeps much of each one's strengths. Used by
`scripts/make_default_model.py` and `benchmarks/wise_sweep.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fashion_match.errors import UsageError
from fashion_match.fileio import sha256_file
from fashion_match.models.embedding import EmbeddingModel, create_model


def _lerp(ours: dict[str, Any], theirs: dict[str, Any], weight: float) -> dict[str, Any]:
    """(1 - weight) * ours + weight * theirs for floating-point tensors; integer counters stay ours."""
    return {
        k: ((1 - weight) * v.float() + weight * theirs[k].float()).to(v.dtype) if v.is_floating_point() else v
        for k, v in ours.items()
    }


def interpolate_with_imagenet(model: EmbeddingModel, alpha: float) -> None:
    """Backbone <- alpha * trained + (1 - alpha) * ImageNet (floating-point tensors; counters stay)."""
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--wise {alpha}: expected a value between 0 and 1")
    imagenet = create_model(model.name, None, pretrained=True).backbone.state_dict()
    trained = model.backbone.state_dict()
    model.backbone.load_state_dict(_lerp(trained, imagenet, 1 - alpha))


def mix_with_run(model: EmbeddingModel, other: Path, beta: float) -> None:
    """Every weight <- (1 - beta) * model + beta * `other`'s weights (its best checkpoint, or the
    RUN/latest folder given): a model soup of two runs.

    Meaningful only for runs of one lineage (one started from the other's weights): they share a
    basin, so the straight line between them keeps both runs' strengths to a degree."""
    if not 0.0 <= beta <= 1.0:
        raise UsageError(f"--mix {other} {beta}: expected a weight between 0 and 1")
    ours = model.state_dict()
    theirs = load_checkpoint(other)[0].state_dict()
    _refuse_other_tensors(ours, theirs, f"--mix {other}")
    model.load_state_dict(_lerp(ours, theirs, beta))


def _refuse_other_tensors(ours: dict[str, Any], theirs: dict[str, Any], what: str) -> None:
    if ours.keys() != theirs.keys() or any(ours[k].shape != theirs[k].shape for k in ours):
        raise UsageError(f"{what}: its model does not have the same tensors")


def load_checkpoint(path: Path) -> tuple[EmbeddingModel, dict[str, Any], Path]:
    """(model, state.json, run directory) for an fm-train run directory (its best/ checkpoint)
    or one of its checkpoint folders (RUN/best, RUN/latest)."""
    from fashion_match.train.checkpoint import load_for_export

    if (path / "state.json").is_file():
        model, info = load_for_export(path.parent, path.name)
        return model, info, path.parent
    model, info = load_for_export(path, "best")
    return model, info, path


def soup_with(model: EmbeddingModel, folders: list[Path]) -> list[dict[str, Any]]:
    """Every weight <- the uniform average of `model` and the checkpoints in `folders` (a uniform
    model soup, Wortsman et al. 2022, "Model soups"). Like --mix, only for runs of one lineage."""
    ours = model.state_dict()
    total = {k: v.float().clone() for k, v in ours.items() if v.is_floating_point()}
    used = []
    for folder in folders:
        other, info, run = load_checkpoint(folder)
        theirs = other.state_dict()
        _refuse_other_tensors(ours, theirs, f"--soup {folder}")
        for k in total:
            total[k] += theirs[k].float()
        used.append({"fm_train_run": run.name, "checkpoint": folder.name, "epoch": info.get("epoch")})
    n = len(folders) + 1
    model.load_state_dict({k: (total[k] / n).to(v.dtype) if k in total else v for k, v in ours.items()})
    return used


def add_branch(model: EmbeddingModel, path: Path, share: float, mirror: bool) -> dict[str, Any]:
    """Attach the category branch in `path` (its own blocks + classifier) with similarity share `share`
    (and on the mirrored maps too when `mirror`)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("fashion_match_branch", "null") or "null")
    if not meta:
        raise UsageError(f"--category-branch {path}: not a branch file from fm-train --branch-for")
    model.add_category_branch(int(meta["from_block"]), share, mirror)
    sd = model.state_dict()
    theirs = load_file(str(path))
    wrong = [k for k, v in theirs.items() if k not in sd or sd[k].shape != v.shape]
    if wrong or not any(k.startswith("category_branch.") for k in theirs):
        raise UsageError(f"--category-branch {path}: its tensors do not fit this model ({wrong[:3]})")
    model.load_state_dict(sd | theirs)
    return {"file": path.name, "sha256": sha256_file(path), "share": share, "mirror": mirror} | meta
