"""The attribute spaces' value readout: posteriors, prototypes, the fit, and fm-train --readout-for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fashion_match.data.attributes import Attribute
from fashion_match.models.attr_spaces import ValueReadout
from fashion_match.runtime.tagging import query_form
from fashion_match.train import space_readout as sr


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_rows_are_unit_posteriors_whose_query_dot_is_the_probability_of_sharing_the_value() -> None:
    g = torch.Generator().manual_seed(0)
    protos = torch.nn.functional.normalize(torch.randn(2, 3, 5, generator=g), dim=-1)
    readout = ValueReadout(protos, [3, 2], torch.tensor([8.0, 4.0]))
    x = torch.nn.functional.normalize(torch.randn(6, 2, 5, generator=g), dim=-1)
    rows = readout(x).numpy()
    assert rows.shape == (6, 2, 4)
    p = rows[..., :-1]
    assert np.allclose(p.sum(-1), 1.0, atol=1e-6) and (p >= 0).all()
    assert (p[:, 1, 2] == 0).all()  # the second attribute has two values: the third is absent
    assert np.allclose(np.linalg.norm(rows, axis=-1), 1.0, atol=1e-6)
    want = torch.softmax(8.0 * x[:, 0] @ protos[0].T, -1).numpy()
    assert np.allclose(p[:, 0], want, atol=1e-6)
    q = query_form(rows[:, 0])
    assert np.allclose(q @ rows[:, 0].T, p[:, 0] @ p[:, 0].T, atol=1e-6)
    assert rows[0, 0, -1] != 0  # query_form copies: the rows themselves keep their completion


def test_prototypes_are_each_values_mean_direction() -> None:
    emb = _unit(np.random.default_rng(0).normal(size=(8, 1, 4)).astype(np.float32))
    labels = torch.tensor([[0], [0], [1], [1], [1], [0], [-1], [1]])
    attrs = [Attribute("colour", "single", ("red", "blue", "green"))]
    got = sr.prototypes(emb, labels, attrs).numpy()
    assert np.allclose(got[0, 0], _unit(emb[[0, 1, 5], 0].mean(0)), atol=1e-6)
    assert np.allclose(got[0, 1], _unit(emb[[2, 3, 4, 7], 0].mean(0)), atol=1e-6)
    assert (got[0, 2] == 0).all()  # no image of it: no direction


def _ambiguous_gallery() -> tuple[np.ndarray, torch.Tensor, list[Attribute]]:
    """Two values 90 degrees apart; each has sure images at its own direction and unsure ones at
    45 degrees: a query at 30 degrees sits closer (by cosine) to the unsure images of the other
    value than to its own value's sure ones."""
    ang, lab = [], []
    for v, centre in ((0, 0.0), (1, 90.0)):
        ang += [centre] * 6 + [45.0 + (-3.0 if v == 0 else 3.0)] * 4
        lab += [v] * 10
    a = np.radians(np.array(ang))
    emb = np.stack([np.cos(a), np.sin(a)], 1)[:, None, :].astype(np.float32)
    return emb, torch.tensor(lab)[:, None], [Attribute("colour", "single", ("red", "blue"))]


def test_posteriors_rank_sure_images_of_the_value_above_unsure_ones_the_cosine_prefers() -> None:
    from fashion_match.train.attr_spaces import attribute_map

    emb, labels, attrs = _ambiguous_gallery()
    q = np.radians(np.array([30.0, 60.0]))
    queries = np.stack([np.cos(q), np.sin(q)], 1)[:, None, :].astype(np.float32)
    qk = torch.tensor([[0], [1]])
    n = len(emb)
    readout, info = sr.fit_readout((emb, labels), (np.concatenate([queries, emb]), torch.cat([qk, labels])),
                                   ([0, 1], list(range(2, n + 2))), attrs)  # fmt: skip
    chosen = info["scales"]["colour"]
    assert info["held_map"]["colour"][str(chosen)] == max(info["held_map"]["colour"].values())
    cosine = attribute_map(queries, emb, qk, labels, attrs)["colour"]
    post_q, post_g = sr.posteriors(readout, queries), sr.posteriors(readout, emb)
    ranked = attribute_map(post_q, post_g, qk, labels, attrs)["colour"]
    assert cosine < 0.85 and ranked == pytest.approx(1.0, abs=1e-3), (cosine, ranked)


def _spaces_model_without_readout(tiny_model_dir: Path, tiny_fmnist: Path, tmp_path: Path, capsys) -> Path:  # noqa: ANN001
    """A model with spaces as fm-train made them before it fitted readouts: its spaces file without them."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from fashion_match.cli.train import main
    from fashion_match.train.attr_spaces import export_with_spaces
    from tests.conftest import run_cli

    args = ("--spaces-for", str(tiny_model_dir), "--data", f"fmnist-attr:{tiny_fmnist}", "--epochs", "1")
    assert run_cli(capsys, main, *args, "--embedding-dim", "8", "--out", str(tmp_path / "s"))[0] == 0
    src = tmp_path / "s" / "spaces.safetensors"
    with safe_open(str(src), "pt") as f:
        meta = json.loads(f.metadata()["fashion_match_spaces"])
    meta.pop("posteriors")
    tensors = {k: v for k, v in load_file(str(src)).items() if not k.startswith("space_readout.")}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"fashion_match_spaces": json.dumps(meta)})
    export_with_spaces(tiny_model_dir, tmp_path / "old.safetensors", tmp_path / "old")
    return tmp_path / "old"


def test_fm_train_readout_for_adds_posteriors_to_a_model_with_spaces(
    tiny_model_dir,
    tiny_fmnist,
    tmp_path,
    capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    import onnxruntime as ort

    from fashion_match.cli.train import main
    from fashion_match.data.images import load_batch
    from fashion_match.runtime import Matcher
    from tests.conftest import encode, photo, run_cli

    old = _spaces_model_without_readout(tiny_model_dir, tiny_fmnist, tmp_path, capsys)
    a = tmp_path / "a.png"
    a.write_bytes(encode(photo(60, 50, seed=1), "PNG"))
    with Matcher(old) as m:  # without a readout: the cosine in the space, as before
        assert "posteriors" not in m.manifest.data["spaces"]
        assert m.verify_attribute(a, a, "colour", threshold=0.5).similarity == pytest.approx(1.0, abs=1e-5)
    args = ("--readout-for", str(old), "--data", f"fmnist-attr:{tiny_fmnist}", "--out", str(tmp_path / "r"))
    code, out, err = run_cli(capsys, main, *args, "--json")
    assert code == 0, err
    got = json.loads(out)
    assert set(got["test_map"]) == set(got["cosine_test_map"]) == {"category", "colour", "pattern"}
    model = tmp_path / "r" / "model"
    man = json.loads((model / "manifest.json").read_text())
    post = man["spaces"]["posteriors"]
    assert post["output"] == "attr_posteriors" and post["width"] == 11 and post["parity_max_abs_diff"] <= 1e-3
    assert post["scales"] == got["scales"] and set(post["scales"].values()) <= set(sr.SCALES)
    # the graph's posteriors are the softmax of the scaled cosines to the prototypes it carries
    from safetensors.torch import load_file

    protos = load_file(str(tmp_path / "r" / "readout.safetensors"))["space_readout.prototypes"].numpy()
    with Matcher(model) as m:
        pixels = load_batch([a], m.spec).pixels
    sess = ort.InferenceSession(str(model / "model.onnx"), providers=["CPUExecutionProvider"])
    spaces, rows = sess.run(["attr_embeddings", "attr_posteriors"], {sess.get_inputs()[0].name: pixels})
    for i, (name, n) in enumerate((("category", 10), ("colour", 10), ("pattern", 4))):
        z = post["scales"][name] * spaces[0, i] @ protos[i, :n].T
        want = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        assert np.allclose(rows[0, i, :n], want, atol=1e-4) and not rows[0, i, n:-1].any()
    with Matcher(model) as m:  # the threshold and similarity fm-match --attribute now use
        v = m.verify_attribute(a, a, "pattern")
        p = rows[0, 2, :-1]
        assert v.similarity == pytest.approx(float(p @ p), abs=1e-4)
        assert v.threshold == post["thresholds"]["pattern"]
    # refused: a model without spaces, and spaces that have a readout already
    code, _, err = run_cli(capsys, main, "--readout-for", str(tiny_model_dir), "--out", str(tmp_path / "x"))
    assert code == 2 and "has no attribute spaces" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, main, "--readout-for", str(model), "--out", str(tmp_path / "y"))
    assert code == 2 and "already have a value readout" in err
    code, _, err = run_cli(capsys, main, "--readout-for", str(old), "--epochs", "3", "--out", str(tmp_path / "z"))
    assert code == 2 and "--epochs: not an option of --readout-for" in err


def test_each_space_gets_the_temperature_of_its_best_held_out_map(monkeypatch: pytest.MonkeyPatch) -> None:
    from fashion_match.train import attr_spaces as asp

    emb, labels, attrs = _ambiguous_gallery()
    scores = iter([0.5, 0.9, 0.7, 0.6])  # held-out mAP at each of SCALES in turn: the second is best
    monkeypatch.setattr(asp, "attribute_map", lambda *a, **k: {"colour": next(scores)})
    _, info = sr.fit_readout((emb, labels), (emb, labels), (list(range(10)), list(range(10, 20))), attrs)
    assert info["scales"] == {"colour": sr.SCALES[1]}
    assert info["held_map"]["colour"] == dict(zip(map(str, sr.SCALES), (0.5, 0.9, 0.7, 0.6), strict=True))
