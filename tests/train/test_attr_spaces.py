"""Attribute-conditioned spaces: each attribute gets its own space, and training makes it rank by that attribute."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fashion_match.data.attributes import Attribute
from fashion_match.metrics import mean_average_precision
from fashion_match.models.attr_spaces import AttributeSpaces, ValueProxies
from fashion_match.train import attr_spaces as asp


def test_mean_average_precision_by_hand() -> None:
    sims = np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.9]])
    # query 0 (key a): its relevant at ranks 1 and 3 -> (1 + 2/3) / 2; query 1 (key b): rank 2 -> 1/2
    assert mean_average_precision(sims, np.array(["a", "b"]), np.array(["a", "b", "a"])) == pytest.approx(
        ((1 + 2 / 3) / 2 + 1 / 2) / 2
    )


def test_attributes_give_different_spaces_for_one_image() -> None:
    torch.manual_seed(0)
    spaces = AttributeSpaces(channels=16, n_attributes=3, dim=8).eval()
    v = torch.randn(2, 16, 4, 4)
    att = spaces.attention(v)
    assert att.shape == (2, 3, 16) and torch.allclose(att.sum(-1), torch.ones(2, 3))
    assert not torch.allclose(att[:, 0], att[:, 1])  # each attribute looks somewhere else
    out = spaces(v)
    assert out.shape == (2, 3, 8) and torch.allclose(out.norm(dim=-1), torch.ones(2, 3), atol=1e-5)
    assert (out[0, 0] @ out[0, 1]).abs() < 0.99  # not one space copied


def test_unknown_values_are_ignored_by_the_proxy_loss() -> None:
    proxies = ValueProxies([3, 2], dim=4)
    spaces = torch.nn.functional.normalize(torch.randn(3, 2, 4, requires_grad=True), dim=-1)
    spaces.retain_grad()
    proxies(spaces, torch.tensor([[0, -1], [1, -1], [-1, -1]])).backward()
    assert spaces.grad[:, 1].abs().sum() == 0 and spaces.grad[2].abs().sum() == 0


def test_the_proxy_loss_makes_the_true_value_win_by_its_margin() -> None:
    """Cosine 0.8 to the true value's proxy, 0.6 to the other: without a margin the image is already
    classified (loss ~0.0017); with margin 0.4 the true value's 0.8 counts as 0.4, below 0.6, so the
    loss is large and keeps pulling the image towards its proxy."""
    import math

    proxies = ValueProxies([2], dim=2, scale=32.0, margin=0.4)
    with torch.no_grad():
        proxies.proxies[0].copy_(torch.eye(2))
    x = torch.tensor([[[0.8, 0.6]]])  # a unit vector: cosines 0.8 and 0.6 to the two proxies
    assert proxies(x, torch.tensor([[0]])).item() == pytest.approx(math.log1p(math.exp(32 * 0.2)), rel=1e-5)
    proxies.margin = 0.0
    assert proxies(x, torch.tensor([[0]])).item() == pytest.approx(math.log1p(math.exp(-32 * 0.2)), rel=1e-3)


def test_training_makes_each_space_rank_by_its_attribute() -> None:
    """Attribute 0 lives in channels 0-3 at the top of the map, attribute 1 in channels 4-7 at the
    bottom, plus noise everywhere: the pooled map mixes them, each trained space leans to its own."""
    rng = np.random.default_rng(0)
    n, c = 480, 16
    a0, a1 = rng.integers(0, 3, n), rng.integers(0, 3, n)
    maps = rng.normal(0, 0.6, (n, c, 4, 4)).astype(np.float32)
    for i in range(n):
        maps[i, a0[i], :2, :] += 2.0
        maps[i, 4 + a1[i], 2:, :] += 2.0
    maps_t, labels = torch.from_numpy(maps), torch.from_numpy(np.c_[a0, a1])
    attrs = [Attribute("shape", "single", ("x", "y", "z")), Attribute("colour", "single", ("r", "g", "b"))]
    spaces = asp.train_spaces(maps_t[:400], labels[:400], attrs, dim=8, epochs=100, batch=64, lr=3e-3, progress=False)
    q = asp.embed_spaces(spaces, maps_t[400:440])
    g = asp.embed_spaces(spaces, maps_t[440:])
    got = asp.attribute_map(q, g, labels[400:440], labels[440:], attrs)
    pooled = maps_t.mean(dim=(2, 3)).numpy()
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    base = asp.attribute_map(pooled[400:440], pooled[440:], labels[400:440], labels[440:], attrs)
    # pooled: shape 0.83, colour 0.78 (each attribute drowned by the other); trained: 0.93, 0.84
    assert got["shape"] > base["shape"] + 0.05 and got["colour"] > base["colour"] + 0.03


def test_fm_train_spaces_for_exports_a_space_per_attribute(
    tiny_model_dir,
    tiny_fmnist,
    tmp_path,
    capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    """fm-train --spaces-for: trains, exports attr_embeddings beside the unchanged item embedding, and
    fm-match --attribute compares two photos in one attribute's space at its threshold."""
    import json

    from fashion_match.cli.train import main
    from fashion_match.data.images import load_batch
    from fashion_match.runtime import Matcher
    from tests.cli.test_fm_match import fm_match  # a subprocess: fm-match ends its process at once
    from tests.conftest import encode, photo, run_cli

    args = ("--spaces-for", str(tiny_model_dir), "--data", f"fmnist-attr:{tiny_fmnist}", "--epochs", "2")
    code, out, err = run_cli(capsys, main, *args, "--embedding-dim", "8", "--out", str(tmp_path / "s"), "--json")
    assert code == 0, err
    assert set(json.loads(out)["test_map"]) == {"category", "colour", "pattern"}
    model = tmp_path / "s" / "model"
    man = json.loads((model / "manifest.json").read_text())
    assert man["spaces"]["output"] == "attr_embeddings" and man["spaces"]["dim"] == 8
    assert [a["name"] for a in man["spaces"]["attributes"]] == ["category", "colour", "pattern"]
    assert man["spaces"]["parity_max_abs_diff"] <= 1e-3
    post = man["spaces"]["posteriors"]  # fm-train --spaces-for fits the value readout too
    assert post["output"] == "attr_posteriors" and post["width"] == 11 and post["parity_max_abs_diff"] <= 1e-3
    assert set(post["thresholds"]) == set(post["scales"]) == {"category", "colour", "pattern"}
    base = json.loads((tiny_model_dir / "manifest.json").read_text())
    assert man["threshold"] == base["threshold"]
    # the kept threshold keeps the record of how it was chosen
    assert (
        man["calibration"]["rule"] == base["calibration"]["rule"]
        and "leave the item embedding" in man["calibration"]["kept"]
    )
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(encode(photo(60, 50, seed=1), "PNG"))
    b.write_bytes(encode(photo(60, 50, seed=2), "PNG"))
    with Matcher(model) as m, Matcher(tiny_model_dir) as plain:
        assert m.similarity(a, b) == pytest.approx(plain.similarity(a, b), abs=1e-5)  # item space untouched
        # with a value readout, attribute similarity is the probability of sharing the value
        post = m.backend.outputs(load_batch([a], m.spec).pixels)["attr_posteriors"][0, 1]
        same = m.verify_attribute(a, a, "colour", threshold=0.0)
        assert same.similarity == pytest.approx(float(post[:-1] @ post[:-1]), abs=1e-5) and same.match
        assert np.linalg.norm(post) == pytest.approx(1.0, abs=1e-5)  # rows an index can check like any other
    # fm-bench reports each space's mAP and what the extra outputs cost, per row
    from fashion_match.bench.report import report_dict
    from fashion_match.bench.runner import BenchConfig, run_bench

    spec = f"fmnist-attr:{tiny_fmnist}"
    cfg = BenchConfig(
        model, data=(spec,), backends=("onnxruntime",), precisions=("fp32",), batch_sizes=(2,), quick=True
    )
    result = run_bench(cfg)
    row = result.rows[0]
    assert all(0 <= row[f"{spec}/space_map/{n}"] <= 1 for n in ("category", "colour", "pattern"))
    assert row["outputs_latency_ms_p50"] > 0
    rep = report_dict(result, {"cpu": "t", "cores": 2, "gpus": [], "packages": {}}, "fm-bench", {"timing": "t"})
    assert f"{spec}/space_map/colour" in rep["columns"] and "outputs_latency_ms_p50" in rep["columns"]
    r = fm_match(str(a), str(b), "--model", str(model), "--attribute", "pattern", "--threshold", "0.1", "--json")
    assert r.returncode in (0, 1) and json.loads(r.stdout)["attribute"] == "pattern", r.stderr
    r = fm_match(str(a), str(b), "--model", str(model), "--attribute", "sleeve")
    assert r.returncode == 2 and "unknown; this model has category, colour, pattern" in r.stderr
    assert r.stderr.count("\n") == 1
    r = fm_match(str(a), str(b), "--model", str(tiny_model_dir), "--attribute", "colour")
    assert r.returncode == 2 and "has no attribute spaces" in r.stderr


def test_an_index_of_one_attribute_space_searches_in_that_space(
    tiny_model_dir,
    tiny_fmnist,
    tmp_path,
    capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    import json

    import numpy as np

    from fashion_match.cli.index import main as fm_index
    from fashion_match.cli.search import main as fm_search
    from fashion_match.cli.train import main
    from fashion_match.runtime import Matcher
    from tests.conftest import photo, run_cli

    args = ("--spaces-for", str(tiny_model_dir), "--data", f"fmnist-attr:{tiny_fmnist}", "--epochs", "1")
    assert run_cli(capsys, main, *args, "--embedding-dim", "8", "--out", str(tmp_path / "s"))[0] == 0
    model = str(tmp_path / "s" / "model")
    shop = tmp_path / "shop"
    for i in range(4):
        (shop / f"sku{i}").mkdir(parents=True)
        photo(40, 40, seed=i).save(shop / f"sku{i}" / "front.png")
    code, out, err = run_cli(
        capsys,
        fm_index,
        "build",
        str(shop),
        "--out",
        str(tmp_path / "c.idx"),
        "--model",
        model,
        "--attribute",
        "colour",
        "--json",
    )
    assert code == 0, err
    assert (
        json.loads(out)["space"] == "colour" and json.loads(out)["embedding_dim"] == 11
    )  # value posteriors: 10 values at most, then the completion coordinate
    query = str(shop / "sku2" / "front.png")
    code, out, err = run_cli(capsys, fm_search, query, "--index", str(tmp_path / "c.idx"), "--model", model, "--json")
    assert code == 0, err
    res = json.loads(out)
    with Matcher(model, space="colour") as m:
        q = m.query_form(m.embed_strict([query]))[0]
        g = m.embed_strict([str(shop / f"sku{i}" / "front.png") for i in range(4)])
        assert res["threshold"] == m.threshold
    want = np.argsort(-(g @ q), kind="stable")[:4]
    assert [r["id"] for r in res["results"][0]["matches"]] == [f"sku{i}/front.png" for i in want]
    # an item index is not searched in a space, nor the other way round
    code, _, err = run_cli(
        capsys, fm_search, query, "--index", str(tmp_path / "c.idx"), "--model", model, "--attribute", "pattern"
    )
    assert code == 2 and "holds the colour attribute space, not the pattern space" in err
    code, _, err = run_cli(capsys, fm_index, "build", str(shop), "--out", str(tmp_path / "i.idx"), "--model", model)
    assert code == 0, err
    code, _, err = run_cli(
        capsys, fm_search, query, "--index", str(tmp_path / "i.idx"), "--model", model, "--attribute", "colour"
    )
    assert code == 2 and "holds item embeddings, not the colour space" in err
