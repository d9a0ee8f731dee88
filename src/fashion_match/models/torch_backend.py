"""PyTorch reference backend: the eager model as a user would run it without export.

Lives outside `fashion_match.runtime` so the lean runtime never imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.errors import BackendUnavailable
from fashion_match.runtime.backend import BackendInfo, BaseBackend, device_index
from fashion_match.runtime.manifest import Manifest


class TorchBackend(BaseBackend):
    @staticmethod
    def unavailable_reason(device: str = "auto") -> str | None:
        try:
            import torch
        except ImportError:
            return "torch is not installed: pip install 'fashion-match[train]'"
        if device.startswith("cuda") and not torch.cuda.is_available():
            return "device cuda: torch sees no CUDA GPU"
        if device.startswith("cuda") and device_index(device) >= torch.cuda.device_count():
            return f"no CUDA device {device_index(device)} ({torch.cuda.device_count()} visible)"
        return None

    def __init__(
        self, path: Path, entry: dict[str, Any], manifest: Manifest, *, device: str = "auto", threads: int | None = None
    ) -> None:
        import torch

        from fashion_match.models.checkpoint import load_weights
        from fashion_match.models.ingraph import InGraphPreprocess

        if threads:
            torch.set_num_threads(threads)
        on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        dev = f"cuda:{device_index(device)}" if on_cuda else "cpu"
        model = load_weights(path, entry["config"])
        if model.output_dim != manifest.embedding_dim:
            raise BackendUnavailable(f"{path}: embedding dim {model.output_dim} != manifest {manifest.embedding_dim}")
        self.torch = torch
        self.device = torch.device(dev)
        self.net = InGraphPreprocess(model).eval().to(self.device)
        self.info = BackendInfo(
            backend="torch",
            precision="fp32",
            device=str(self.device),
            artifact=path.name,
            embedding_dim=manifest.embedding_dim,
            input_size=manifest.preprocess.size,
            detail=f"torch {torch.__version__} threads={torch.get_num_threads() or os.cpu_count()}",
        )

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        self.check_input(pixels)
        with self.torch.inference_mode():
            out = self.net(self.torch.from_numpy(pixels).to(self.device))
        return out.float().cpu().numpy()
