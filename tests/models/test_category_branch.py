"""The optional category branch: its own blocks feed the classifier, its probabilities join the embedding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.errors import UsageError
from fashion_match.models import create_model
from fashion_match.models.checkpoint import load_weights, save_weights
from fashion_match.models.embedding import EmbeddingModel

SPEC = PreprocessSpec(size=64, resize="squash")


def _x(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _model(share: float = 0.3, from_block: int = 16, mirror: bool = False) -> EmbeddingModel:
    torch.manual_seed(0)
    m = create_model("mobilenet_v2", 32, pretrained=False, num_classes=5, preprocess=SPEC)
    m.add_category_branch(from_block, share, mirror)
    assert m.category_branch is not None
    with torch.no_grad():  # make the branch differ from the item blocks it was copied from
        for p in m.category_branch.parameters():
            p.add_(0.05 * torch.randn_like(p))
        # batch-norm statistics of real activations: with the initial ones a random network's
        # deep activations fade to ~1e-7 and every input gets the same logits
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.reset_running_stats()
                bn.momentum = None
        m.train().forward_with_logits(_x(16))
    return m.eval()


def test_similarity_is_the_share_weighted_mean_of_item_and_category_cosines() -> None:
    m, x = _model(0.3), _x()
    with torch.no_grad():
        out = m(x)
        item, logits = m.forward_with_logits(x)
    assert out.shape == (4, 32 + 5) and m.output_dim == 37
    assert torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-5)
    assert logits is not None
    p = F.normalize(torch.softmax(logits, dim=1), dim=1)
    expected = 0.7 * item @ item.T + 0.3 * p @ p.T
    assert torch.allclose(out @ out.T, expected, atol=1e-5)


def test_item_part_uses_the_original_blocks_and_the_classifier_the_branch() -> None:
    plain = create_model("mobilenet_v2", 32, pretrained=False, num_classes=5, preprocess=SPEC)
    m = _model(0.3)
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("category_branch.")})
    plain.eval()
    x = _x()
    with torch.no_grad():
        item, logits = m.forward_with_logits(x)
        plain_item, plain_logits = plain.forward_with_logits(x)
        branch_logits = m.classifier(m.category_branch(m.backbone[:16](x)).mean(dim=(2, 3)))  # type: ignore[misc]
    assert torch.allclose(item, plain_item, atol=1e-6)  # the item embedding is untouched
    assert logits is not None and plain_logits is not None
    assert torch.allclose(logits, branch_logits, atol=1e-5)
    assert not torch.allclose(logits, plain_logits, atol=1e-3)  # the classifier reads the branch


def test_mirror_averages_the_logits_of_the_maps_and_their_mirror_image() -> None:
    m = _model(0.3, from_block=14, mirror=True)
    x = _x()
    with torch.no_grad():
        item, logits = m.forward_with_logits(x)
        trunk = m.backbone[:14](x)  # type: ignore[index]
        one, other = (m.classifier(m.category_branch(t).mean(dim=(2, 3))) for t in (trunk, trunk.flip(-1)))  # type: ignore[misc]
        m.category_mirror = False
        _, one_view = m.forward_with_logits(x)
        plain_item = F.normalize(m.head(m.backbone(x).mean(dim=(2, 3))), dim=1)
    assert logits is not None and one_view is not None
    assert torch.allclose(logits, (one + other) / 2, atol=1e-5)
    assert torch.allclose(one_view, one, atol=1e-5)
    assert not torch.allclose(logits, one_view, atol=1e-3)  # mirroring changes the logits
    assert torch.allclose(item, plain_item, atol=1e-6)  # the item part does not mirror


def test_share_zero_keeps_the_plain_embedding() -> None:
    m = _model(0.0)
    with torch.no_grad():
        assert m(_x()).shape == (4, 32) and m.output_dim == 32


@pytest.mark.parametrize("mirror", [False, True])
def test_weights_round_trip_rebuilds_the_branch(tmp_path: Path, mirror: bool) -> None:
    m = _model(0.25, from_block=15, mirror=mirror)
    info = save_weights(m, tmp_path / "w.safetensors")
    assert info["config"]["category_branch_from"] == 15 and info["config"]["category_share"] == 0.25
    assert info["config"]["category_mirror"] is mirror
    back = load_weights(tmp_path / "w.safetensors", json.loads(json.dumps(info["config"])))
    with torch.no_grad():
        np.testing.assert_allclose(back(_x()).numpy(), m(_x()).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"from_block": 0, "share": 0.1}, "no such block"),
        ({"from_block": 19, "share": 0.1}, "no such block"),
        ({"from_block": 16, "share": 1.0}, "share"),
        ({"from_block": 16, "share": -0.1}, "share"),
    ],
)
def test_bad_branch_arguments_are_usage_errors(kwargs: dict, message: str) -> None:
    m = create_model("mobilenet_v2", 32, pretrained=False, num_classes=5, preprocess=SPEC)
    with pytest.raises(UsageError, match=message):
        m.add_category_branch(**kwargs)


def test_branch_needs_a_classifier() -> None:
    m = create_model("mobilenet_v2", 32, pretrained=False, preprocess=SPEC)
    with pytest.raises(UsageError, match="classifier"):
        m.add_category_branch(16, 0.1)


@pytest.mark.parametrize("mirror", [False, True])
def test_export_writes_the_wider_embedding_and_matches_torch(tmp_path: Path, mirror: bool) -> None:
    from fashion_match.export.torch2onnx import torch2onnx
    from fashion_match.runtime import Matcher

    m = _model(0.2, mirror=mirror)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    man = torch2onnx(m, tmp_path / "model", threshold=0.5, parity_sources=images)
    assert man["embedding_dim"] == 37 and man["architecture"]["category_branch_from"] == 16
    assert man["architecture"]["category_mirror"] is mirror
    with Matcher(tmp_path / "model", backend="onnxruntime") as mt:
        got = mt.embed_strict(images)
    with Matcher(tmp_path / "model", backend="torch") as mt:
        ref = mt.embed_strict(images)
    assert got.shape == (3, 37)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_a_trained_branch_file_attaches_to_its_model(tmp_path: Path, tiny_fmnist: Path) -> None:
    """train.branch end to end on a small MobileNetV2 and a 20-image Fashion-MNIST: the file holds
    the branch, the classifier and its history, and models.merge.add_branch rebuilds the model."""
    from fashion_match.export.torch2onnx import torch2onnx
    from fashion_match.models.merge import add_branch
    from fashion_match.train.branch import train_category_branch
    from tests.conftest import encode, photo

    torch.manual_seed(0)
    base = create_model("mobilenet_v2", 32, pretrained=False, num_classes=10, preprocess=PreprocessSpec(size=64))
    model_dir = tmp_path / "model"
    sources = [encode(photo(80, 64, seed=i), "PNG") for i in range(4)]
    torch2onnx(base, model_dir, threshold=0.5, parity_sources=sources)
    out = tmp_path / "branch.safetensors"
    meta = train_category_branch(
        model_dir, out, from_block=16, epochs=2, batch=8, data=f"fashion-mnist:{tiny_fmnist}", progress=False
    )
    assert meta["from_block"] == 16 and len(meta["history"]) == 2 and len(meta["categories"]) == 10
    assert 0.0 <= meta["history"][-1]["test_top1"] <= 1.0
    again = load_weights(
        model_dir / "model.safetensors", json.loads((model_dir / "manifest.json").read_text())["architecture"]
    )
    record = add_branch(again, out, share=0.1, mirror=False)
    assert record["from_block"] == 16 and again.category_branch is not None
    emb = again.eval()(_x(2))
    assert emb.shape == (2, 32 + 10) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    torch2onnx(again, tmp_path / "with branch", threshold=0.5, parity_sources=sources)
    with pytest.raises(UsageError, match="already has a category branch"):
        train_category_branch(tmp_path / "with branch", tmp_path / "x.safetensors", data=f"fashion-mnist:{tiny_fmnist}")


def test_fm_train_branch_for_trains_attaches_and_exports(
    tmp_path: Path, tiny_fmnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fm-train --branch-for DIR` writes the branch file and a model directory with the branch
    attached at the asked share, its threshold calibrated again on the base model's calibration data."""
    from fashion_match.cli.train import main
    from fashion_match.export.torch2onnx import torch2onnx
    from fashion_match.runtime import Matcher
    from tests.conftest import encode, photo, run_cli

    torch.manual_seed(0)
    base = create_model("mobilenet_v2", 32, pretrained=False, num_classes=10, preprocess=PreprocessSpec(size=64))
    sources = [encode(photo(80, 64, seed=i), "PNG") for i in range(4)]
    c2s = f"fmnist-c2s:{tiny_fmnist}"
    torch2onnx(base, tmp_path / "base", calibration_data=c2s, calibration_items=6, parity_sources=sources)
    args = ("--branch-for", str(tmp_path / "base"), "--data", f"fashion-mnist:{tiny_fmnist}", "--epochs", "1")
    code, out, err = run_cli(
        capsys, main, *args, "--batch", "8", "--category-share", "0.25", "--out", str(tmp_path / "b"), "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert len(result["branch"]["history"]) == 1
    man = json.loads((tmp_path / "b" / "model" / "manifest.json").read_text())
    assert man["source"]["category_branch"]["share"] == 0.25
    assert man["source"]["category_branch"]["from_block"] == 16
    assert man["calibration"]["data"] == c2s and man["calibration"]["queries"] == 6
    assert man["calibration"]["rule"] != "given by the user"
    assert man["embedding_dim"] == 32 + 10
    with Matcher(tmp_path / "b" / "model", backend="onnxruntime") as m:
        assert m.embed_strict(sources[:2]).shape == (2, 42)
    # a model directory is never written over, and a new model's options are refused, not ignored
    code, _, err = run_cli(capsys, main, *args, "--out", str(tmp_path / "b"))
    assert code == 2 and "exists" in err
    code, _, err = run_cli(capsys, main, *args, "--loss", "ce_triplet", "--out", str(tmp_path / "c"))
    assert code == 2 and "--loss" in err
    code, _, err = run_cli(capsys, main, *args, "--batch", "8x2", "--out", str(tmp_path / "c"))
    assert code == 2 and "plain batch size" in err
