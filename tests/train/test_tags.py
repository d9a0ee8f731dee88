"""Tag heads: imbalance weighting, masking of unknown labels, the metrics they are judged by."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fashion_match.data.attributes import UNKNOWN, Attribute
from fashion_match.metrics import average_precision, best_f1_threshold, topk_recall
from fashion_match.train import tags

TAGS = Attribute("tags", "multi", ("common", "rare"))
COLOUR = Attribute("colour", "single", ("black", "white", "red"))


def test_average_precision_by_hand() -> None:
    # ranks of the positives: 1 and 3 -> (1/1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    assert np.isnan(average_precision(np.array([0.3, 0.2]), np.array([0, 0])))


def test_best_f1_threshold_and_topk_recall() -> None:
    t, f1 = best_f1_threshold(np.array([0.9, 0.8, 0.4, 0.3]), np.array([1, 1, 0, 1]))
    # at 0.8: 2 of 3 found, none wrong, F1 0.8; at 0.3: all 3 found, one wrong, F1 6/7: the better one
    assert (t, f1) == (0.3, pytest.approx(6 / 7))
    assert best_f1_threshold(np.array([0.2, 0.1]), np.array([0, 0]))[0] > 0.2  # nothing is called
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.7]])
    pos = np.array([[1, 0, 1], [1, 0, 0]], bool)
    assert topk_recall(scores, pos, 1) == pytest.approx(1 / 3) and topk_recall(scores, pos, 3) == 1.0


def test_a_rare_label_is_up_weighted() -> None:
    y = torch.tensor([[1, 0]] * 50 + [[1, 1]] * 2 + [[0, 0]] * 48, dtype=torch.float32)
    w = tags.label_weights(TAGS, y)
    assert w[0] == 1.0 and w[1] == pytest.approx(98 / 2)
    z = torch.zeros(len(y), 2, requires_grad=True)
    tags.head_loss(TAGS, z, y, "weighted", w).backward()
    weighted = z.grad[50:52, 1].abs().sum()
    z2 = torch.zeros(len(y), 2, requires_grad=True)
    tags.head_loss(TAGS, z2, y, "plain", None).backward()
    plain = z2.grad[50:52, 1].abs().sum()
    assert weighted / plain == pytest.approx(49, rel=0.01)  # the rare positives pull 49x harder
    assert z.grad[:50, 0].abs().sum() == pytest.approx(z2.grad[:50, 0].abs().sum())  # the common label: as is


def test_unknown_labels_never_reach_the_loss() -> None:
    y = torch.tensor([[1, UNKNOWN], [0, UNKNOWN]], dtype=torch.float32)
    z = torch.zeros(2, 2, requires_grad=True)
    tags.head_loss(TAGS, z, y, "weighted", tags.label_weights(TAGS, y)).backward()
    assert z.grad[:, 1].abs().sum() == 0
    ys = torch.tensor([0, UNKNOWN, 2])
    z = torch.zeros(3, 3, requires_grad=True)
    tags.head_loss(COLOUR, z, ys, "plain", None).backward()
    assert z.grad[1].abs().sum() == 0  # a "maybe" (FashionAI m) or unlabelled image is ignored
    for loss in tags.LOSSES:
        assert torch.isfinite(tags.head_loss(COLOUR, torch.zeros(2, 3), torch.tensor([UNKNOWN, UNKNOWN]), loss, None))


def test_heads_learn_separable_tags_and_report_every_figure() -> None:
    rng = np.random.default_rng(0)
    n = 600
    colour = rng.integers(0, 3, n)
    rare = (rng.random(n) < 0.05).astype(np.float32)
    feats = torch.from_numpy(np.c_[np.eye(3)[colour], rare, rng.normal(0, 0.1, (n, 4))].astype(np.float32))
    ys = {"colour": torch.from_numpy(colour), "tags": torch.from_numpy(np.c_[np.ones(n), rare]).float()}
    ys["tags"][:, 0] = torch.from_numpy((colour == 0).astype(np.float32))
    heads = tags.train_heads(
        feats[:400], {k: v[:400] for k, v in ys.items()}, [COLOUR, TAGS], tags.TagConfig(epochs=60, lr=3e-2)
    )
    th = tags.calibrate(tags.predict(heads, feats[400:500]), {k: v[400:500] for k, v in ys.items()}, [COLOUR, TAGS])
    rep = tags.evaluate(tags.predict(heads, feats[500:]), {k: v[500:] for k, v in ys.items()}, [COLOUR, TAGS], th)
    assert rep["colour"]["accuracy"] > 0.95
    assert rep["tags"]["map"] > 0.9 and rep["tags"]["ap"]["rare"] > 0.9 and 0 < rep["tags"]["macro_f1"] <= 1
    assert set(rep["tags"]) >= {"map", "macro_f1", "top3_recall", "top5_recall", "ap", "test_positives"}
    with pytest.raises(Exception, match="--tag-loss"):
        tags.train_heads(feats, ys, [COLOUR, TAGS], tags.TagConfig(loss="asl"))


def test_fm_train_tags_for_writes_heads_thresholds_and_report(
    tiny_model_dir,
    tiny_fmnist,
    tmp_path,
    capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    import json

    from safetensors import safe_open

    from fashion_match.cli.train import main
    from tests.conftest import run_cli

    args = ("--tags-for", str(tiny_model_dir), "--data", f"fmnist-attr:{tiny_fmnist}", "--epochs", "3")
    code, out, err = run_cli(capsys, main, *args, "--out", str(tmp_path / "t"), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert set(report) == {"category", "colour", "pattern", "tags"} and report["tags"]["kind"] == "multi"
    with safe_open(str(tmp_path / "t" / "tags.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["fashion_match_tags"])
        assert {k.split(".")[1] for k in f.keys()} == {"heads"}
    assert len(meta["thresholds"]["tags"]) == 14 and meta["config"]["loss"] == "weighted"
    assert meta["attributes"][1]["values"][0] == "black"
    # OUT/model: the same item embedding (and threshold), plus the tag_probs output
    tagged = tmp_path / "t" / "model"
    man = json.loads((tagged / "manifest.json").read_text())
    base = json.loads((tiny_model_dir / "manifest.json").read_text())
    assert man["threshold"] == base["threshold"] and man["tags"]["output"] == "tag_probs"
    assert [a["offset"] for a in man["tags"]["attributes"]] == [0, 10, 20, 24]
    assert man["tags"]["parity_max_abs_diff"] <= 1e-3
    from fashion_match.cli.tag import main as fm_tag
    from fashion_match.runtime import Matcher
    from tests.conftest import encode, photo

    imgs = []
    for i in range(2):
        imgs.append(tmp_path / f"p{i}.png")
        imgs[-1].write_bytes(encode(photo(60, 50, seed=i), "PNG"))
    with Matcher(tagged) as m, Matcher(tiny_model_dir) as plain:
        np.testing.assert_allclose(
            m.embed_strict([str(x) for x in imgs]), plain.embed_strict([str(x) for x in imgs]), atol=1e-5
        )
        results, idx, bad = m.tag([str(imgs[0]), str(tmp_path / "missing.png"), str(imgs[1])], top=2)
    assert idx == [0, 2] and len(bad) == 1 and len(results[0]["colour"]) == 2
    assert (
        0 <= results[0]["colour"][0]["prob"] <= 1 and results[0]["colour"][0]["prob"] >= results[0]["colour"][1]["prob"]
    )
    code, out, err = run_cli(
        capsys, fm_tag, str(imgs[0]), str(tmp_path / "missing.png"), "--model", str(tagged), "--json"
    )
    assert code == 0 and "skipped" in err
    rep = json.loads(out)
    assert [r["image"] for r in rep["images"]] == [str(imgs[0])] and set(rep["images"][0]) >= {"colour", "tags"}
    code, _, err = run_cli(capsys, fm_tag, str(imgs[0]), "--model", str(tiny_model_dir))
    assert code == 2 and "has no tag heads" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, fm_tag, str(tmp_path / "missing.png"), "--model", str(tagged))
    assert code == 2 and "none could be read" in err
    code, _, err = run_cli(capsys, main, *args, "--loss", "ce_triplet", "--out", str(tmp_path / "u"))
    assert code == 2 and "--loss" in err and "--tags-for" in err
    plain = ("--tags-for", str(tiny_model_dir), "--data", f"fashion-mnist:{tiny_fmnist}", "--out", str(tmp_path / "v"))
    code, _, err = run_cli(capsys, main, *plain)
    assert code == 2 and "has no attribute labels" in err
