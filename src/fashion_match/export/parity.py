"""The parity gate: an exported graph must embed real images as PyTorch does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.errors import ExportError
from fashion_match.export.onnx_cpu import onnx_embedder

MIN_COSINE = 0.9999


def nearest_neighbours(emb: np.ndarray) -> np.ndarray:
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    return np.argmax(sims, axis=1)


def compare_embeddings(ref: np.ndarray, got: np.ndarray, min_cosine: float = MIN_COSINE) -> dict[str, Any]:
    """Cosine agreement and nearest-neighbour agreement between two embedding sets of the same images."""
    if ref.shape != got.shape:
        raise ExportError(f"parity: exported output shape {got.shape} differs from PyTorch's {ref.shape}")
    if not np.all(np.isfinite(got)):
        raise ExportError("parity: exported model produced NaN or Inf embeddings")
    refn = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    gotn = got / np.maximum(np.linalg.norm(got, axis=1, keepdims=True), 1e-12)
    cos = np.sum(refn * gotn, axis=1)
    nn_ref, nn_got = nearest_neighbours(refn), nearest_neighbours(gotn)
    return {
        "images": int(len(ref)),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "nn_agreement": float(np.mean(nn_ref == nn_got)),
        "required_min_cosine": min_cosine,
    }


def check_parity(torch_model: Any, onnx_path: str | Path, pixels: np.ndarray, min_cosine: float = MIN_COSINE) -> dict:
    """Run both on the same uint8 pixels; `ExportError` unless cosines >= min_cosine and NNs identical."""
    import torch

    with torch.no_grad():
        ref = torch_model(torch.from_numpy(pixels)).float().numpy()
    got = onnx_embedder(onnx_path)(pixels)
    figures = compare_embeddings(ref, np.asarray(got, np.float32), min_cosine)
    if figures["min_cosine"] < min_cosine or figures["nn_agreement"] < 1.0:
        raise ExportError(
            f"{onnx_path}: parity gate failed on {figures['images']} real images: min cosine "
            f"{figures['min_cosine']:.6f} (need >= {min_cosine}), nearest neighbours identical for "
            f"{figures['nn_agreement']:.1%} (need 100%)"
        )
    return figures


def parity_images(fmnist_items: int = 12) -> list[Any]:
    """Real images for the gate: the package's background photos plus Fashion-MNIST items
    (shop and consumer photos of the stand-in) when the dataset is installed."""
    from importlib import resources

    folder = resources.files("fashion_match.data") / "assets" / "backgrounds"
    entries = sorted(folder.iterdir(), key=lambda e: e.name)
    sources: list[Any] = [e.read_bytes() for e in entries if e.name.endswith(".jpg")]
    try:
        from fashion_match.data.fmnist_c2s import load_fmnist_c2s

        ds = load_fmnist_c2s(None)
    except Exception:  # noqa: BLE001 - Fashion-MNIST is optional here
        return sources
    for q, g in zip(ds.protocol.queries[:fmnist_items], ds.protocol.gallery[:fmnist_items], strict=True):
        sources += [ds.records[q].source, ds.records[g].source]  # a consumer photo and a shop photo
    return sources
