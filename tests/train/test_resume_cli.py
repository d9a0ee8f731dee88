"""fm-train --resume from the command line: where it starts, a finished run, options it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fashion_match.train.trainer import train
from tests.train.test_trainer import tiny_cfg


def test_fm_train_resume_says_where_it_starts_and_refuses_new_options(
    tiny_fmnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fashion_match.cli.train import main
    from tests.conftest import run_cli

    cfg = tiny_cfg(f"fashion-mnist:{tiny_fmnist}", tmp_path / "run", epochs=2)
    train(cfg, stop_after_epochs=1, progress=False)
    code, _, err = run_cli(capsys, main, "--resume", str(tmp_path / "run"), "--epochs", "5")
    assert code == 2 and "--epochs with --resume" in err and "--init" in err
    code, out, err = run_cli(capsys, main, "--resume", str(tmp_path / "run"), "--json")
    assert code == 0 and "resuming" in err and "from epoch 2 of 2" in err
    assert [h["epoch"] for h in json.loads(out)["history"]] == [1, 2]
    assert "epoch 2/2: evaluation: done in" in err  # stage lines on a stream that is not a terminal
    code, out, err = run_cli(capsys, main, "--resume", str(tmp_path / "run"))
    assert code == 0 and "already complete (2 of 2 epochs)" in err and out == ""
