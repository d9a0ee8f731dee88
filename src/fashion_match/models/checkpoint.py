"""Model weights as safetensors + the config to rebuild the architecture. Never pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.errors import FmError, ManifestMismatch
from fashion_match.fileio import atomic_open, sha256_file
from fashion_match.models.embedding import EmbeddingModel, create_model


def save_weights(model: EmbeddingModel, path: str | Path) -> dict[str, Any]:
    """Write the state dict (config in the safetensors metadata) atomically; return manifest fields."""
    from safetensors.torch import save

    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save(sd, metadata={"fashion_match_config": json.dumps(model.config())})
    with atomic_open(path, "wb") as f:
        f.write(data)
    return {"sha256": sha256_file(path), "bytes": Path(path).stat().st_size, "config": model.config()}


def load_weights(path: str | Path, config: dict[str, Any]) -> EmbeddingModel:
    """Rebuild the architecture from `config` (random init) and load the safetensors weights.

    A config or a weights file that does not fit (damaged, hand-edited, another model's) is a
    `ManifestMismatch` naming the file, whatever torch or safetensors raised about it."""
    try:
        return _load_weights(path, config)
    except ManifestMismatch:
        raise
    except Exception as e:  # noqa: BLE001 - KeyError, TypeError, SafetensorError, RuntimeError (shapes), ...
        raise ManifestMismatch(f"{path}: cannot rebuild the model from it ({type(e).__name__}: {e})") from None


def _load_weights(path: str | Path, config: dict[str, Any]) -> EmbeddingModel:
    from safetensors.torch import load_file

    model = create_model(
        config["model"],
        config["embedding_dim"] if config.get("projection") else None,
        pretrained=False,
        num_classes=config.get("num_classes"),
        preprocess=PreprocessSpec.from_dict(config["preprocess"]),
    )
    if config.get("category_branch_from") is not None:
        model.add_category_branch(
            int(config["category_branch_from"]),
            float(config.get("category_share", 0.0)),
            bool(config.get("category_mirror", False)),
        )
    if config.get("attribute_branch_from") is not None:
        model.add_attribute_branch(
            int(config["attribute_branch_from"]), tuple(int(t) for t in config.get("attribute_taps", []))
        )
    sd = load_file(str(path))
    if config.get("tags"):
        from fashion_match.models.tag_heads import TagHeads, attributes_of

        try:
            heads = TagHeads(model.head_dim, attributes_of(config["tags"]))
        except (KeyError, TypeError, ValueError, FmError) as e:
            raise FmError(f"{path}: the model config's tags do not describe tag heads ({e})") from None
        model.attach_tags(heads)
    if config.get("spaces"):
        import torch

        from fashion_match.models.attr_spaces import AttributeSpaces, ValueReadout

        sp = config["spaces"]
        try:
            spaces = AttributeSpaces(model.head_dim, len(sp["names"]), int(sp["dim"]))
            model.attach_spaces(spaces, [str(n) for n in sp["names"]], [[str(v) for v in vs] for vs in sp["values"]])
            if sp.get("readout_counts"):  # its buffers come with the weights below
                counts = [int(c) for c in sp["readout_counts"]]
                dim = int(sp["dim"])
                model.attach_readout(
                    ValueReadout(torch.zeros(len(counts), max(counts), dim), counts, torch.ones(len(counts)))
                )
        except (KeyError, TypeError, ValueError) as e:
            raise FmError(f"{path}: the model config's spaces do not describe attribute spaces ({e})") from None
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ManifestMismatch(
            f"{path}: weights do not fit {config['model']} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()


def load_state_into(model: EmbeddingModel, path: str | Path) -> None:
    """Load an fm-train `model.safetensors` into `model` (same architecture, shapes checked)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise ManifestMismatch(f"--init {path}: not a readable safetensors file ({e})") from None
    own = model.state_dict()
    wrong = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if wrong or missing or unexpected:
        raise ManifestMismatch(
            f"--init {path}: weights do not fit this model (shape differs: {wrong[:3]}, "
            f"missing: {missing[:3]}, unexpected: {unexpected[:3]})"
        )
    model.load_state_dict(sd)
