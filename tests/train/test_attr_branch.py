"""The attribute branch: its own fine-tuned blocks and early-block taps feed tag heads and spaces;
the cached training path computes what the exported graph computes; runs resume exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.errors import UsageError
from fashion_match.models import create_model
from fashion_match.models.checkpoint import load_weights, save_weights

SPEC = PreprocessSpec(size=64, resize="squash")


def _model(category_branch: bool = False):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    m = create_model("mobilenet_v2", 16, pretrained=False, num_classes=10 if category_branch else None, preprocess=SPEC)
    if category_branch:
        m.add_category_branch(14, 0.1)
    for bn in m.modules():  # real batch-norm statistics, or a random network's deep maps fade to ~0
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None
    m.train()(torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    return m.eval()


def test_branch_and_taps_feed_the_heads_and_leave_the_item_path_alone(tmp_path: Path) -> None:
    from fashion_match.models.attr_spaces import AttributeSpaces

    m = _model()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        before = m(x)
        m.add_attribute_branch(14, (3, 6))
        assert m.head_dim == 1280 + 24 + 32  # the branch's channels, then block 3's and block 6's
        for p in m.attr_branch.parameters():  # type: ignore[union-attr]
            p.add_(0.05 * torch.randn_like(p))
        maps = m.head_maps(x)
        assert maps.shape == (3, m.head_dim, 2, 2)
        assert torch.equal(m(x), before)  # the item embedding does not read the branch
        # the tap channels are block 3's output, average-pooled onto the branch's 2 x 2 grid
        tap3 = m.backbone[:4](x)
        assert torch.allclose(maps[:, 1280 : 1280 + 24], torch.nn.functional.avg_pool2d(tap3, 8), atol=1e-5)
        assert not torch.allclose(maps[:, :1280], m.backbone(x), atol=1e-3)  # its own blocks, not the item's
        m.attach_spaces(AttributeSpaces(m.head_dim, 2, 8).eval(), ["colour", "pattern"], [["a", "b"], ["c", "d"]])
        from fashion_match.data.attributes import Attribute
        from fashion_match.models.tag_heads import TagHeads

        heads = TagHeads(m.head_dim, [Attribute("style", "multi", ("a", "b", "c"))]).eval()
        m.attach_tags(heads)
        emb, tags, spaces = m.forward_outputs(x)
        assert torch.allclose(emb, before, atol=1e-6) and spaces.shape == (3, 2, 8)
        assert torch.allclose(tags, heads.flat(maps.mean(dim=(2, 3))), atol=1e-6)  # tags read the head maps too
    save_weights(m, tmp_path / "w.safetensors")
    again = load_weights(tmp_path / "w.safetensors", m.config())
    assert again.attr_taps == (3, 6) and again.attr_from == 14
    with torch.no_grad():
        assert torch.allclose(again.forward_outputs(x)[2], spaces, atol=1e-6)
    with pytest.raises(UsageError, match="each must be a block before 14"):
        _model().add_attribute_branch(14, (14,))


def test_the_cached_path_computes_what_the_model_computes() -> None:
    from fashion_match.data.attributes import Attribute
    from fashion_match.train import attr_branch as ab

    m = _model()
    attrs = [Attribute("colour", "single", ("a", "b", "c"))]
    origin = ab.prepare(m, 14, (3,), attrs, 8)
    assert origin.startswith("the item path's blocks 14")
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        cached = ab.TrunkAndTaps(m)(x)
        net = ab.BranchSpaces(m, ab._trunk_channels(m)).eval()
        assert torch.allclose(net(cached), m.attr_spaces(m.head_maps(x)), atol=1e-5)  # type: ignore[misc]
    assert ab.prepare(_model(category_branch=True), 14, (), attrs, 8).startswith("the category branch")


@pytest.fixture(scope="module")
def branched_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64-px MobileNetV2 with a category branch (share 0.1), exported with a threshold calibrated on
    a tiny fmnist-c2s, so that replacing the branch can calibrate again on the same data."""
    from fashion_match.export.torch2onnx import torch2onnx
    from tests.conftest import encode, photo

    root = tmp_path_factory.mktemp("branched")
    fm = _tiny_fmnist(root)
    out = root / "base"
    torch2onnx(
        _model(category_branch=True),
        out,
        calibration_data=f"fmnist-c2s:{fm}",
        calibration_items=4,
        parity_sources=[encode(photo(64, 64, seed=i), "JPEG") for i in range(6)],
    )
    return out


def _tiny_fmnist(root: Path) -> Path:
    from fashion_match.data.fashion_mnist import DEFAULT_DIR, load_arrays
    from tests.conftest import write_idx

    folder = root / "fmnist"
    folder.mkdir()
    if not (Path(DEFAULT_DIR) / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("needs Fashion-MNIST (apt install dataset-fashion-mnist)")
    tr, trl = load_arrays(str(DEFAULT_DIR), "train")
    te, tel = load_arrays(str(DEFAULT_DIR), "test")
    write_idx(folder, "train", tr[:40], trl[:40])
    write_idx(folder, "test", te[:16], tel[:16])
    return folder


def test_fm_train_spaces_with_an_attribute_branch_replaces_the_category_branch_and_resumes(
    branched_base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fashion_match.cli.train import main
    from fashion_match.runtime import Matcher
    from fashion_match.train import attr_branch as ab
    from tests.conftest import run_cli

    fm = branched_base.parent / "fmnist"
    args = ("--spaces-for", str(branched_base), "--data", f"fmnist-attr:{fm}", "--from-block", "14", "--taps", "3")
    args += ("--epochs", "2", "--embedding-dim", "8", "--json")
    code, out, err = run_cli(capsys, main, *args, "--out", str(tmp_path / "a"))
    assert code == 0, err
    model = tmp_path / "a" / "model"
    man = json.loads((model / "manifest.json").read_text())
    arch = man["architecture"]
    assert arch["attribute_branch_from"] == 14 and arch["attribute_taps"] == [3]
    assert "category_branch_from" not in arch and man["embedding_dim"] == 16  # a pure item cosine again
    assert man["calibration"]["data"] == f"fmnist-c2s:{fm}"  # so its threshold was calibrated again
    assert man["spaces"]["parity_max_abs_diff"] <= 1e-3
    meta = man["source"]["attribute_spaces"]["attribute_branch"]
    assert meta["started_from"].startswith("the category branch")
    with Matcher(model) as m, Matcher(branched_base) as base:
        px = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
        e, b = m.backend.embed(px), base.backend.embed(px)[:, :16]
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        assert np.allclose(e, b, atol=1e-4)  # the item part of the old embedding, renormalised

    # interrupted after its first epoch, the same run goes on from there to the same weights
    real = ab.fit_branch
    calls = {"n": 0}

    def crash_in_epoch_2(*a, **k):  # type: ignore[no-untyped-def]
        evaluate = a[6]

        def ev(net):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return evaluate(net)

        return real(*a[:6], ev, *a[7:], **k)

    from fashion_match.train.attr_spaces import train_spaces_for

    def again() -> dict:
        spec = f"fmnist-attr:{fm}"
        return train_spaces_for(
            branched_base, spec, tmp_path / "b" / "spaces.safetensors", dim=8, epochs=2, branch_from=14, taps=(3,)
        )

    monkeypatch.setattr(ab, "fit_branch", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        again()
    assert json.loads((tmp_path / "b" / "latest" / "state.json").read_text())["epoch"] == 0
    # and lets go of the training maps before the thresholds (a full split's maps fill a 24 GB machine)
    import gc
    import weakref

    from fashion_match.train import attr_spaces as asp

    train_maps: list[weakref.ref] = []

    def fit_and_watch(model, x, *a, **k):  # type: ignore[no-untyped-def]
        train_maps.append(weakref.ref(x["train"]))
        return real(model, x, *a, **k)

    real_thresholds = asp.space_thresholds

    def thresholds_after_release(*a, **k):  # type: ignore[no-untyped-def]
        gc.collect()
        assert train_maps and train_maps[0]() is None, "the training maps are still held"
        return real_thresholds(*a, **k)

    monkeypatch.setattr(ab, "fit_branch", fit_and_watch)
    monkeypatch.setattr(asp, "space_thresholds", thresholds_after_release)
    capsys.readouterr()
    resumed = again()
    assert len(resumed["history"]) == 2 and resumed["images"]["train"] > 0
    err = capsys.readouterr().err
    assert "resuming" in err and "space thresholds on" in err  # the minutes-long step says so
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / d / "spaces.safetensors")) for d in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # killed after its last epoch (before the file was written), it writes the same file without a step
    monkeypatch.setattr(ab, "augment_maps", None)  # a training step would call it
    (tmp_path / "b" / "spaces.safetensors").unlink()
    assert len(again()["history"]) == 2 and "after all 2 epochs" in capsys.readouterr().err
    c = load_file(str(tmp_path / "b" / "spaces.safetensors"))
    assert c.keys() == a.keys() and all(torch.equal(a[k], c[k]) for k in a)
    # a branch on a branch is refused (frozen spaces on that branch stay possible)
    with pytest.raises(UsageError, match="already has an attribute branch"):
        train_spaces_for(model, f"fmnist-attr:{fm}", tmp_path / "c" / "x.safetensors", dim=8, epochs=1, branch_from=14)
    # the same folder with other settings is refused, not mixed into
    with pytest.raises(UsageError, match="holds an attribute-branch run with other settings"):
        train_spaces_for(
            branched_base, f"fmnist-attr:{fm}", tmp_path / "b" / "x.safetensors", dim=8, epochs=3, branch_from=14
        )


def _branch_ddp_worker(rank: int, port: int, base: str, data: str, out: str, results: str) -> None:
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    from fashion_match.train import attr_branch as ab
    from fashion_match.train.attr_spaces import train_spaces_for
    from fashion_match.train.distributed import process_group
    from fashion_match.train.trainer import weights_digest

    digests = []
    real = ab.fit_branch

    def fit_and_record(model, *a, **k):  # type: ignore[no-untyped-def]
        history = real(model, *a, **k)
        digests.append(weights_digest(model.attr_branch, model.attr_spaces))
        return history

    ab.fit_branch = fit_and_record  # a spawned process: nothing else sees the change
    with process_group():
        meta = train_spaces_for(Path(base), data, Path(out) / "spaces.safetensors", dim=8, epochs=2, branch_from=14)
    Path(results, f"branch_rank{rank}.json").write_text(json.dumps({"sha": digests[0], "keys": sorted(meta)}))


def test_the_branch_trains_across_two_ranks_and_rank_0_writes(branched_base: Path, tmp_path: Path) -> None:
    """torchrun with two ranks (gloo, CPU): each rank takes half of every step's batch, DDP keeps them
    equal, and only rank 0 evaluates and writes the checkpoint and the spaces file."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = f"fmnist-attr:{branched_base.parent / 'fmnist'}"
    mp.spawn(
        _branch_ddp_worker,
        args=(port, str(branched_base), data, str(tmp_path / "ddp"), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    r0, r1 = (json.loads((tmp_path / f"branch_rank{r}.json").read_text()) for r in (0, 1))
    assert r0["sha"] == r1["sha"], "the ranks' branches diverged"
    assert "test_map" in r0["keys"] and r1["keys"] == ["history", "rank"]  # rank 1 wrote nothing
    assert (tmp_path / "ddp" / "spaces.safetensors").is_file()
    state = json.loads((tmp_path / "ddp" / "latest" / "state.json").read_text())
    assert state["epoch"] == 1 and all("test_map" in h for h in state["history"])
    # and it learned something: not the weights a single process starts from
    from fashion_match.data.spec import load_dataset
    from fashion_match.models.checkpoint import load_weights
    from fashion_match.runtime.manifest import load_manifest
    from fashion_match.train import attr_branch as ab
    from fashion_match.train.attr_spaces import single_attributes
    from fashion_match.train.trainer import weights_digest

    model = load_weights(branched_base / "model.safetensors", load_manifest(branched_base).data["architecture"])
    torch.manual_seed(0)
    ab.prepare(model, 14, (), single_attributes(load_dataset(data).attributes), 8)
    assert weights_digest(model.attr_branch, model.attr_spaces) != r0["sha"]
