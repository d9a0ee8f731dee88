"""models.merge's weight averaging: --soup (uniform), --mix, and the checkpoint folders they read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fashion_match.errors import UsageError
from fashion_match.models.merge import load_checkpoint, mix_with_run, soup_with
from fashion_match.train.trainer import train
from tests.train.test_trainer import tiny_cfg


def test_soup_is_the_uniform_average_of_the_checkpoints(tiny_fmnist: Path, tmp_path: Path) -> None:
    data = f"fashion-mnist:{tiny_fmnist}"
    for name, seed in (("a", 0), ("b", 1), ("c", 2)):
        train(tiny_cfg(data, tmp_path / name, epochs=1, seed=seed), progress=False)
    parts = [load_checkpoint(tmp_path / n / "latest")[0].state_dict() for n in "abc"]
    model, _, run = load_checkpoint(tmp_path / "a" / "latest")
    assert run == tmp_path / "a"
    used = soup_with(model, [tmp_path / "b" / "latest", tmp_path / "c" / "latest"])
    assert [(u["fm_train_run"], u["checkpoint"], u["epoch"]) for u in used] == [("b", "latest", 0), ("c", "latest", 0)]
    souped = model.state_dict()
    weights = [k for k, v in souped.items() if v.is_floating_point()]
    assert weights and any(not torch.equal(parts[0][k], parts[1][k]) for k in weights)
    for k in weights:
        torch.testing.assert_close(souped[k], (parts[0][k] + parts[1][k] + parts[2][k]) / 3)
    # integer counters (BatchNorm's num_batches_tracked) are not averaged
    for k, v in souped.items():
        if not v.is_floating_point():
            assert torch.equal(v, parts[0][k])


def test_soup_refuses_another_architecture(tiny_fmnist: Path, tmp_path: Path) -> None:
    data = f"fashion-mnist:{tiny_fmnist}"
    train(tiny_cfg(data, tmp_path / "a", epochs=1), progress=False)
    train(tiny_cfg(data, tmp_path / "b", epochs=1, embedding_dim=8), progress=False)
    model = load_checkpoint(tmp_path / "a")[0]  # a run directory means its best/ checkpoint
    with pytest.raises(UsageError, match="same tensors"):
        soup_with(model, [tmp_path / "b" / "latest"])
    with pytest.raises(UsageError, match="same tensors"):
        mix_with_run(model, tmp_path / "b", 0.5)


def test_mix_takes_a_checkpoint_folder(tiny_fmnist: Path, tmp_path: Path) -> None:
    data = f"fashion-mnist:{tiny_fmnist}"
    for name, seed in (("a", 0), ("b", 1)):
        train(tiny_cfg(data, tmp_path / name, epochs=1, seed=seed), progress=False)
    a, b = (load_checkpoint(tmp_path / n / "latest")[0].state_dict() for n in "ab")
    model = load_checkpoint(tmp_path / "a" / "latest")[0]
    mix_with_run(model, tmp_path / "b" / "latest", 0.25)
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.75 * a[k] + 0.25 * b[k])
