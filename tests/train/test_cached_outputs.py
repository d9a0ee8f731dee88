"""Cached prefix outputs: bad files are skipped, the good ones keep their rows in order
across batches, and a set with no readable image is a clear error."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.errors import UsageError
from fashion_match.models import create_model
from fashion_match.train.cached import prefix_outputs


def _outputs(model, records):  # type: ignore[no-untyped-def]
    return prefix_outputs(
        model.backbone[:4],
        pool=True,
        records=records,
        model=model,
        device=torch.device("cpu"),
        progress=False,
        desc="test",
        engine="torch",
    )


def test_bad_files_are_skipped_and_the_good_rows_stay_in_order(tmp_path: Path) -> None:
    from tests.conftest import photo

    torch.manual_seed(0)
    model = create_model("mobilenet_v2", 16, pretrained=False, preprocess=PreprocessSpec(size=32, resize="squash"))
    model.eval()
    paths = []
    for i in range(70):  # more than one batch of 64, so the second batch's rows must follow the first's
        p = tmp_path / f"{i}.png"
        photo(24, 24, seed=i).save(p)
        paths.append(p)
    for i in (3, 66):  # one bad file in each batch
        paths[i].write_bytes(b"not an image")
    records = [SimpleNamespace(source=str(p), bbox=None) for p in paths]
    out, kept = _outputs(model, records)
    good = [i for i in range(70) if i not in (3, 66)]
    assert kept == good and out.shape[0] == len(good)
    alone, _ = _outputs(model, [records[i] for i in good])  # the same images, no bad ones among them
    assert torch.allclose(out, alone, atol=1e-6)
    assert not torch.allclose(out[:3], out[3:6])  # different images, different rows: not a constant


def test_no_readable_image_is_a_usage_error(tmp_path: Path) -> None:
    model = create_model("mobilenet_v2", 16, pretrained=False, preprocess=PreprocessSpec(size=32, resize="squash"))
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(UsageError, match="none of the 1 images"):
        _outputs(model.eval(), [SimpleNamespace(source=str(tmp_path / "a.png"), bbox=None)])
