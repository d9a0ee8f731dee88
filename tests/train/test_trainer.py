from __future__ import annotations

import json
import logging
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from fashion_match.errors import UsageError
from fashion_match.formats import WEIGHTS
from fashion_match.train.config import TrainConfig, parse_batch
from fashion_match.train.sampler import PKBatchSampler
from fashion_match.train.trainer import train


def tiny_cfg(data: str, out: Path, **kw: object) -> TrainConfig:
    base: dict = dict(
        data=data,
        model="tiny",
        pretrained="none",
        embedding_dim=16,
        epochs=2,
        freeze_epochs=1,
        p=5,
        k=2,
        workers=0,
        steps_per_epoch=3,
        out=str(out),
        loss="proxy_anchor",
    )
    base.update(kw)
    return TrainConfig(**base)


def initial_and_trained(cfg: TrainConfig) -> tuple[dict, dict, int]:
    """State dicts of the run's initial model (same seed) and of its latest checkpoint, and the block count."""
    from fashion_match.models.checkpoint import load_weights
    from fashion_match.train.trainer import _seed_all, build

    _seed_all(cfg.seed)
    *_, init, _ = build(cfg)
    latest = Path(cfg.out) / "latest"
    state = json.loads((latest / "state.json").read_text())
    trained = load_weights(latest / WEIGHTS, state["model_config"])
    return init.state_dict(), trained.state_dict(), len(init.backbone)


@pytest.mark.parametrize("cache_frozen", [False, True])
def test_resume_ends_with_the_same_weights(tiny_fmnist: Path, tmp_path: Path, cache_frozen: bool) -> None:
    data = f"fashion-mnist:{tiny_fmnist}"
    whole = train(tiny_cfg(data, tmp_path / "whole", category_head=True, cache_frozen=cache_frozen), progress=False)
    cut = tiny_cfg(data, tmp_path / "cut", category_head=True, cache_frozen=cache_frozen)
    first = train(cut, stop_after_epochs=1, progress=False)
    assert len(first["history"]) == 1 and first["weights_sha256"] != whole["weights_sha256"]
    resumed = train(cut, resume=True, progress=False)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["weights_sha256"] == whole["weights_sha256"]
    a = load_file(str(tmp_path / "whole" / "latest" / WEIGHTS))
    b = load_file(str(tmp_path / "cut" / "latest" / WEIGHTS))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_checkpoints_are_safetensors_and_json(tiny_fmnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = train(tiny_cfg(f"fashion-mnist:{tiny_fmnist}", out, epochs=1, loss="multi_similarity"), progress=False)
    assert sorted(p.name for p in (out / "best").iterdir()) == [WEIGHTS, "state.json", "state.safetensors"]
    state = json.loads((out / "best" / "state.json").read_text())
    assert state["data"] == f"fashion-mnist:{tiny_fmnist}" and state["labels"]["key"] == "category"
    assert -1 <= state["threshold"] <= 1 and state["model_config"]["embedding_dim"] == 16
    h = r["history"][0]
    for key in ("recall_at_1", "recall_at_10", "recall_at_50", "map_at_r", "pair_auc", "threshold"):
        assert key in h
    assert TrainConfig.load(out / "config.json").loss == "multi_similarity"


def test_one_line_per_epoch_when_stderr_is_not_a_terminal(
    tiny_fmnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = train(tiny_cfg(f"fashion-mnist:{tiny_fmnist}", tmp_path / "run"), progress=True)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if re.match(r"epoch \d+/\d+: loss", ln)]
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/2", "epoch 2/2"]
    assert f"R@1 {r['history'][1]['recall_at_1']:.4f}" in lines[1]


def test_epoch_lines_go_to_the_log_when_progress_is_off(
    tiny_fmnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fashion_match")
    train(tiny_cfg(f"fashion-mnist:{tiny_fmnist}", tmp_path / "run", epochs=1), progress=False)
    assert not re.search(r"epoch \d+/\d+: loss", capsys.readouterr().err)  # --json: stderr stays quiet
    assert [r.getMessage().split(":")[0] for r in caplog.records if ": loss" in r.getMessage()] == ["epoch 1/1"]


def test_item_labels_and_triplet_baseline_on_c2s(tiny_fmnist: Path, tmp_path: Path) -> None:
    r = train(tiny_cfg(f"fmnist-c2s:{tiny_fmnist}", tmp_path / "c2s", epochs=1, loss="ce_triplet"), progress=False)
    state = json.loads((tmp_path / "c2s" / "latest" / "state.json").read_text())
    assert state["labels"] == {"key": "item_id", "count": 20}  # 20 train items, shop + consumer each
    assert r["history"][0]["queries"] == 10


def test_bad_training_image_is_skipped(odd_dir: Path, tmp_path: Path) -> None:
    from tests.conftest import photo

    for item in range(6):
        (odd_dir / f"sku {item}").mkdir()
        for v in range(2):
            photo(40, 40, seed=item * 10 + v).save(odd_dir / f"sku {item}" / f"{v}.png")
    (odd_dir / "sku 0" / "broken.jpg").write_bytes(b"\xff\xd8\xff nope")
    r = train(tiny_cfg(f"folder:{odd_dir}", tmp_path / "f", epochs=1, p=3), progress=False)
    assert len(r["history"]) == 1 and np.isfinite(r["history"][0]["loss"])


def test_sampler_pk_deterministic_and_rank_disjoint() -> None:
    labels = np.repeat(np.arange(10), 5)
    s = PKBatchSampler(labels, 4, 3, seed=1, steps=6)
    s.set_epoch(2)
    a, b = list(s), list(s)
    assert a == b and len(a) == 6
    for batch in a:
        lab = labels[batch]
        assert len(batch) == 12 and len(set(lab)) == 4 and all((lab == c).sum() == 3 for c in set(lab))
    s.set_epoch(3)
    assert list(s) != a
    r0 = PKBatchSampler(labels, 4, 3, seed=1, steps=3, rank=0, world=2)
    r1 = PKBatchSampler(labels, 4, 3, seed=1, steps=3, rank=1, world=2)
    r0.set_epoch(2)
    r1.set_epoch(2)
    assert list(r0) == a[0::2] and list(r1) == a[1::2]


def test_config_errors() -> None:
    with pytest.raises(UsageError, match="PxK"):
        parse_batch("32")
    assert parse_batch("32×4") == (32, 4)
    with pytest.raises(UsageError, match="--loss"):
        TrainConfig(data="x", loss="arcface")
    with pytest.raises(UsageError, match="K >= 2"):
        TrainConfig(data="x", loss="multi_similarity", k=1)
    with pytest.raises(UsageError, match="--map-shift"):
        TrainConfig(data="x", map_shift=1, train_blocks=2)  # no cache: nothing to shift
    with pytest.raises(UsageError, match="--map-shift"):
        TrainConfig(data="x", map_shift=-1)


def _ddp_worker(rank: int, port: int, data: str, out: str, results: str) -> None:
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    cfg = tiny_cfg(data, Path(out), epochs=1, freeze_epochs=0, steps_per_epoch=1)
    r = train(cfg, progress=False)  # starts and ends the process group itself, as under torchrun
    Path(results, f"rank{rank}.json").write_text(json.dumps({"sha": r["weights_sha256"]}))
    import torch.distributed as dist

    assert not dist.is_initialized()


def test_ddp_two_ranks_hold_identical_weights(tiny_fmnist: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(
        _ddp_worker,
        args=(port, f"fashion-mnist:{tiny_fmnist}", str(tmp_path / "ddp"), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    r0 = json.loads((tmp_path / "rank0.json").read_text())["sha"]
    r1 = json.loads((tmp_path / "rank1.json").read_text())["sha"]
    assert r0 == r1, "DDP ranks diverged after a step"
    # and a step was taken: the weights are not the initial ones
    from fashion_match.train.trainer import _seed_all, build, weights_digest

    cfg = tiny_cfg(f"fashion-mnist:{tiny_fmnist}", tmp_path / "init", epochs=1, freeze_epochs=0)
    _seed_all(cfg.seed)
    *_, model, loss = build(cfg)
    assert r0 != weights_digest(model, loss)


def test_train_blocks_with_cache_trains_only_the_last_blocks(tiny_fmnist: Path, tmp_path: Path) -> None:
    from fashion_match.models.checkpoint import load_weights

    cfg = tiny_cfg(
        f"fashion-mnist:{tiny_fmnist}",
        tmp_path / "tb",
        model="mobilenet_v2",
        image_size=64,
        cache_frozen=True,
        train_blocks=2,
        epochs=2,
        freeze_epochs=1,
        category_head=True,
    )
    r = train(cfg, progress=False)
    assert len(r["history"]) == 2 and "category_top1" in r["history"][0]
    a, b, n = initial_and_trained(cfg)
    frozen = [k for k in a if k.startswith("backbone.") and int(k.split(".")[1]) < n - 2]
    learned = [k for k in a if k.startswith(f"backbone.{n - 1}.") and k.endswith("weight")]
    assert frozen and all((a[k] == b[k]).all() for k in frozen), "the cached prefix must not change"
    assert any(not (a[k] == b[k]).all() for k in learned), "the last blocks must train"
    latest = tmp_path / "tb" / "latest"
    state = json.loads((latest / "state.json").read_text())
    assert load_weights(latest / WEIGHTS, state["model_config"]).preprocess.size == 64


def test_shift_maps_moves_whole_cells_and_repeats_the_edge() -> None:
    import torch

    from fashion_match.train.cached import shift_maps

    m = torch.arange(2 * 2 * 3 * 4, dtype=torch.float32).reshape(2, 2, 3, 4)
    out = shift_maps(m, torch.tensor([1, 0]), torch.tensor([0, -2]))
    # sample 0 moves down one row (the top row repeats); sample 1 moves left two columns
    assert torch.equal(out[0, :, 1:], m[0, :, :2]) and torch.equal(out[0, :, 0], m[0, :, 0])
    assert torch.equal(out[1, :, :, :2], m[1, :, :, 2:])
    assert torch.equal(out[1, :, :, 2], m[1, :, :, 3]) and torch.equal(out[1, :, :, 3], m[1, :, :, 3])
    assert torch.equal(shift_maps(m, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)), m)


def test_map_shift_changes_training_and_resumes_exactly(tiny_fmnist: Path, tmp_path: Path) -> None:
    kw: dict = dict(model="mobilenet_v2", image_size=64, cache_frozen=True, train_blocks=3, freeze_epochs=0)
    data = f"fashion-mnist:{tiny_fmnist}"
    plain = train(tiny_cfg(data, tmp_path / "plain", **kw), progress=False)
    whole = train(tiny_cfg(data, tmp_path / "whole", map_shift=1, **kw), progress=False)
    assert whole["weights_sha256"] != plain["weights_sha256"], "--map-shift must change what trains"
    cut = tiny_cfg(data, tmp_path / "cut", map_shift=1, **kw)
    train(cut, stop_after_epochs=1, progress=False)
    assert train(cut, resume=True, progress=False)["weights_sha256"] == whole["weights_sha256"]


def test_train_blocks_needs_a_sequential_backbone(tiny_fmnist: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a Sequential"):
        train(
            tiny_cfg(f"fashion-mnist:{tiny_fmnist}", tmp_path / "x", cache_frozen=True, train_blocks=1), progress=False
        )


def test_cached_maps_embed_like_the_full_model(tiny_fmnist: Path) -> None:
    import torch

    from fashion_match.data.spec import load_dataset
    from fashion_match.models import create_model
    from fashion_match.train.cached import MapNet, map_embedder, prefix_outputs, split_backbone
    from fashion_match.train.evaluate import embed_records

    torch.manual_seed(0)
    model = create_model("mobilenet_v2", 16, pretrained=False, num_classes=10).eval()
    model.preprocess = model.preprocess.__class__(size=64)
    recs = load_dataset(f"fashion-mnist:{tiny_fmnist}").records[:12]
    prefix, suffix = split_backbone(model, 3)
    maps, kept = prefix_outputs(
        prefix, pool=False, records=recs, model=model, device=torch.device("cpu"), progress=False, desc=""
    )
    emb, logits = map_embedder(MapNet(suffix, model, torch.nn.Identity(), 0.5), maps, torch.device("cpu"))(
        list(range(len(kept)))
    )
    ref, ref_logits, ref_kept = embed_records(model, recs, torch.device("cpu"))
    assert kept == ref_kept == list(range(12))
    assert (emb * ref).sum(1).min() > 0.9999
    assert logits is not None and ref_logits is not None and abs(logits - ref_logits).max() < 1e-3


def test_train_blocks_without_cache_keeps_the_prefix_frozen(tiny_fmnist: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(
        f"fashion-mnist:{tiny_fmnist}",
        tmp_path / "img",
        model="mobilenet_v2",
        image_size=64,
        train_blocks=1,
        epochs=2,
        freeze_epochs=1,
        steps_per_epoch=2,
    )
    train(cfg, progress=False)
    a, b, n = initial_and_trained(cfg)
    prefix_weights = [k for k in a if k.startswith("backbone.") and int(k.split(".")[1]) < n - 1]  # BN stats too
    last_weights = [k for k in a if k.startswith(f"backbone.{n - 1}.") and k.endswith("weight")]
    assert all((a[k] == b[k]).all() for k in prefix_weights)
    assert any(not (a[k] == b[k]).all() for k in last_weights)


def test_onnxruntime_prefix_cache_equals_torch(tiny_fmnist: Path) -> None:
    import torch

    from fashion_match.data.spec import load_dataset
    from fashion_match.models import create_model
    from fashion_match.train.cached import _ort_runner, prefix_outputs, split_backbone

    torch.manual_seed(0)
    model = create_model("mobilenet_v2", 16, pretrained=False).eval()
    model.preprocess = model.preprocess.__class__(size=64)
    recs = load_dataset(f"fashion-mnist:{tiny_fmnist}").records[:6]
    prefix, _ = split_backbone(model, 4)
    assert _ort_runner(prefix, 64) is not None, "the prefix must export to ONNX, or this test compares torch to torch"
    cpu = torch.device("cpu")
    a, ka = prefix_outputs(
        prefix, pool=False, records=recs, model=model, device=cpu, progress=False, desc="", engine="torch"
    )
    b, kb = prefix_outputs(
        prefix, pool=False, records=recs, model=model, device=cpu, progress=False, desc="", engine="onnxruntime"
    )
    assert ka == kb and a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cache_frozen", [False, True])
def test_category_metric_loss_trains_category_proxies(tiny_fmnist: Path, tmp_path: Path, cache_frozen: bool) -> None:
    """Item loss plus Proxy-Anchor over categories: the category proxies exist, learn, and are checkpointed."""
    from fashion_match.train.losses import MetricLoss
    from fashion_match.train.trainer import _seed_all, build

    cfg = tiny_cfg(
        f"fmnist-c2s:{tiny_fmnist}",
        tmp_path / "cat",
        loss="multi_similarity",
        category_metric_weight=1.0,
        cache_frozen=cache_frozen,  # epoch 1 (frozen) on cached features: the MapNet path; epoch 2: TrainNet
    )
    train(cfg, progress=False)
    state = load_file(str(tmp_path / "cat" / "latest" / "state.safetensors"))
    proxies = state["loss.category_loss.proxies"]
    n_categories = len({r.category for r in build(cfg)[1]})
    assert proxies.shape == (n_categories, 16)
    # the same seed builds the same initial proxies: training moved them

    _seed_all(cfg.seed)
    *_, loss = build(cfg)
    assert isinstance(loss, MetricLoss)
    assert not torch.equal(loss.category_loss.proxies.detach(), proxies)
    # a loss with the category term differs from the item loss alone on the same batch
    emb = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    items, cats = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert not torch.isclose(loss(emb, items, cats), loss(emb, items))


def test_init_loads_weights_and_refuses_another_architecture(tiny_fmnist: Path, tmp_path: Path) -> None:
    data = f"fashion-mnist:{tiny_fmnist}"
    train(tiny_cfg(data, tmp_path / "a", epochs=1), progress=False)
    weights = tmp_path / "a" / "latest" / WEIGHTS
    from fashion_match.train.trainer import build

    *_, model, _ = build(tiny_cfg(data, tmp_path / "b", init=str(weights)))
    saved = load_file(str(weights))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    with pytest.raises(Exception, match="do not fit"):
        build(tiny_cfg(data, tmp_path / "c", embedding_dim=8, init=str(weights)))


def test_sampler_with_more_classes_per_batch_than_the_data_has_is_a_usage_error() -> None:
    from fashion_match.errors import UsageError

    with pytest.raises(UsageError, match="--batch 8x2: 8 classes per batch, but the training data has 3"):
        PKBatchSampler(np.array([0, 0, 1, 1, 2, 2]), 8, 2)


def test_fm_train_help_lists_the_backbone_registry() -> None:
    from click.testing import CliRunner

    from fashion_match.cli.train import cli
    from fashion_match.models import list_models

    text = " ".join(CliRunner().invoke(cli, ["--help"]).output.split())
    assert all(name in text for name in list_models()) and "tiny is a 32-px test network" in text


def test_every_fm_train_option_reaches_the_config() -> None:
    """fm-train passes options named like TrainConfig fields straight through: each of its other
    options must be one the command translates itself, or a run would fail on an unknown field."""
    from dataclasses import fields

    from fashion_match.cli.train import cli
    from fashion_match.train.config import TrainConfig

    translated = {"data", "batch", "init", "no_amp", "out", "resume", "as_json"}
    translated |= {"branch_for", "from_block", "category_share", "category_mirror"}  # --branch-for's own
    translated |= {"tags_for", "tag_loss", "eval_limit", "spaces_for", "taps", "readout_for"}  # the head modes' own
    names = {p.name for p in cli.params if p.expose_value}
    config = {f.name for f in fields(TrainConfig)}
    assert names - translated <= config, names - translated - config
    assert {"p", "k", "amp", "category_weight"} - names  # config fields the command sets otherwise (or not at all)
