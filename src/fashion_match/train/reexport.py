"""Re-exporting an exported model with something added (tag heads, attribute spaces): the same
weights, the same item embedding and threshold, the new head attached, its file recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def read_head_file(path: Path, key: str, made_by: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, tensors) of a head file written by fm-train (safetensors, metadata under `key`)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from fashion_match.errors import UsageError

    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get(key, "null") or "null")
    if not meta:
        raise UsageError(f"{path}: not a file from {made_by}")
    return meta, load_file(str(path))


def reexport_with(
    model_dir: Path, head_file: Path, out: Path, what: str, suffix: str, attach: Callable[[Any], None], **export: Any
) -> dict[str, Any]:
    """Load the model in `model_dir`, let `attach` add its head, export it to `out` (FP32 ONNX,
    parity-checked) keeping the base threshold; the manifest's source names the base and the head file."""
    from fashion_match.export.torch2onnx import torch2onnx
    from fashion_match.fileio import sha256_file
    from fashion_match.formats import WEIGHTS
    from fashion_match.models.checkpoint import load_weights
    from fashion_match.runtime.manifest import load_manifest

    manifest = load_manifest(model_dir)
    model = load_weights(model_dir / WEIGHTS, manifest.data["architecture"])
    attach(model)
    return torch2onnx(
        model,
        out,
        threshold=manifest.threshold,
        threshold_rule=f"the base model's: {what} leave the item embedding unchanged",
        source={
            "base_model": manifest.model,
            "base_weights_sha256": sha256_file(model_dir / WEIGHTS),
            "base_source": manifest.data.get("source"),
            what.replace(" ", "_"): {"file": head_file.name, "sha256": sha256_file(head_file)},
        },
        display_name=f"{manifest.model}+{suffix}",
        **export,
    )
