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
    model_dir: Path,
    out: Path,
    what: str,
    suffix: str,
    attach: Callable[[Any], dict[str, Any]],
    *,
    changes_similarity: bool = False,
    **export: Any,
) -> dict[str, Any]:
    """Load the model in `model_dir`, let `attach` add its head (and return the record of what it
    added), export it to `out` (FP32 ONNX, parity-checked). A head beside the item embedding keeps
    the base threshold; one that `changes_similarity` (a category share) has it calibrated again, on
    the data and number of items the base threshold came from (fmnist-c2s and 1000 when it was
    given by hand). The manifest's source names the base model and the record."""
    from fashion_match.export.torch2onnx import torch2onnx
    from fashion_match.fileio import sha256_file
    from fashion_match.formats import WEIGHTS
    from fashion_match.models.checkpoint import load_weights
    from fashion_match.runtime.manifest import load_manifest

    manifest = load_manifest(model_dir)
    model = load_weights(model_dir / WEIGHTS, manifest.data["architecture"])
    record = attach(model)
    export |= {k: v for k, v in kept_heads(manifest.data).items() if k not in export}
    if changes_similarity:
        base_cal = manifest.data.get("calibration") or {}
        export |= {
            "calibration_data": str(base_cal.get("data") or "fmnist-c2s"),
            "calibration_items": int(base_cal.get("queries") or 1000),
        }
    else:
        export |= {
            "threshold": manifest.threshold,
            "threshold_rule": f"the base model's: {what} leave the item embedding unchanged",
            "kept_calibration": manifest.data.get("calibration"),
        }
    return torch2onnx(
        model,
        out,
        source={
            "base_model": manifest.model,
            "base_weights_sha256": sha256_file(model_dir / WEIGHTS),
            "base_source": manifest.data.get("source"),
            what.replace(" ", "_"): record,
        },
        display_name=f"{manifest.model}+{suffix}",
        **export,
    )


def kept_heads(data: dict[str, Any]) -> dict[str, Any]:
    """torch2onnx's `tags` / `spaces` arguments for the heads the base model already has, so that
    adding one head keeps the other's thresholds and records."""
    out: dict[str, Any] = {}
    if data.get("tags"):
        out["tags"] = {
            k: v for k, v in data["tags"].items() if k not in ("output", "attributes", "parity_max_abs_diff")
        }
    if data.get("spaces"):
        block = data["spaces"]
        out["spaces"] = {
            k: v for k, v in block.items() if k not in ("output", "attributes", "dim", "parity_max_abs_diff")
        }
        out["spaces"]["thresholds"] = {
            a["name"]: a["threshold"] for a in block["attributes"] if a.get("threshold") is not None
        }
    return out


def file_record(path: Path) -> dict[str, Any]:
    from fashion_match.fileio import sha256_file

    return {"file": path.name, "sha256": sha256_file(path)}
