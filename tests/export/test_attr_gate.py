"""The accuracy gate judges a model's tag and space outputs, not only its item embedding."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fashion_match.data.evalset import EvalSet
from fashion_match.export.attr_gate import AttrGate, judge

N = 12


def _gate() -> AttrGate:
    """12 queries and 12 gallery images, colour in 3 values and one 2-tag multi-label attribute."""
    colour = np.arange(N) % 3
    tags = np.stack([colour == 0, colour == 2], axis=1).astype(np.int64)
    px = np.zeros((N, 4, 4, 3), np.uint8)
    px[:, 0, 0, 0] = np.arange(N)  # the fake model reads the image's index from its first pixel
    es = EvalSet("toy", "toy", "item_id", px, np.arange(N), px.copy(), np.arange(N), [])
    es.q_attrs = es.g_attrs = {"colour": colour, "style": tags}
    manifest = SimpleNamespace(
        data={
            "spaces": {"attributes": [{"name": "colour"}], "dim": 3},
            "tags": {"attributes": [{"name": "style", "kind": "multi", "values": ["a", "b"], "offset": 0}]},
        },
        folder=Path("toy"),
    )
    return AttrGate(es, manifest, {})


def _outputs(spaces_ok: bool, tags_ok: bool):  # type: ignore[no-untyped-def]
    colour = np.arange(N) % 3

    def run(pixels: np.ndarray) -> dict[str, np.ndarray]:
        i = pixels[:, 0, 0, 0].astype(int)
        space = np.eye(3, dtype=np.float32)[colour[i] if spaces_ok else np.zeros_like(i)]
        tags = np.stack([colour[i] == 0, colour[i] == 2], 1).astype(np.float32)
        return {
            "embedding": np.ones((len(i), 2), np.float32),
            "attr_embeddings": space[:, None, :],
            "tag_probs": tags if tags_ok else tags[:, ::-1].copy(),
        }

    return run


def test_each_attribute_figure_is_judged_against_fp32() -> None:
    gate = _gate()
    gate.ref = gate.figures(_outputs(True, True), batch=5)
    assert gate.ref == {"space_map/colour": 1.0, "tag_map/style": 1.0}
    figures, failures = judge(gate, gate.figures(_outputs(True, True)), allowed=1.0)
    assert figures["passed"] and not failures and figures["drop_pts"] == {"space_map/colour": 0.0, "tag_map/style": 0.0}
    # spaces collapsed (every image in one place): the space fails, the tags still pass
    figures, failures = judge(gate, gate.figures(_outputs(False, True)), allowed=1.0)
    assert not figures["passed"] and len(failures) == 1 and failures[0].startswith("space_map/colour 1.0000 ->")
    assert figures["drop_pts"]["space_map/colour"] > 1.0 and figures["resolution_pts"] == round(100 / N, 4)
    figures, failures = judge(gate, gate.figures(_outputs(True, False)), allowed=1.0)
    assert [f.split()[0] for f in failures] == ["tag_map/style"]
    # a figure that disappears (NaN) fails instead of passing silently
    assert judge(gate, {"space_map/colour": 1.0}, allowed=1.0)[1][0].startswith("tag_map/style")


def test_non_finite_outputs_are_refused() -> None:
    from fashion_match.errors import ExportError

    gate = _gate()

    def nan(pixels: np.ndarray) -> dict[str, np.ndarray]:
        out = _outputs(True, True)(pixels)
        out["tag_probs"][0, 0] = np.nan
        return out

    with pytest.raises(ExportError, match="NaN or Inf in tag_probs"):
        gate.figures(nan)


def test_fp16_export_of_a_model_with_spaces_gates_them(tiny_model_dir, tiny_fmnist, tmp_path, capsys) -> None:  # noqa: ANN001
    from fashion_match.cli.train import main
    from fashion_match.export.pipeline import ExportOptions, run_export
    from fashion_match.formats import ONNX_FILES
    from tests.conftest import run_cli

    spec = f"fmnist-attr:{tiny_fmnist}"
    args = ("--spaces-for", str(tiny_model_dir), "--data", spec, "--epochs", "1", "--embedding-dim", "8")
    assert run_cli(capsys, main, *args, "--out", str(tmp_path / "s"))[0] == 0
    model = tmp_path / "s" / "model"
    assert json.loads((model / "manifest.json").read_text())["spaces"]["data"] == spec
    from fashion_match.bench.runner import with_head_data

    # fm-bench's default data gains the heads' own data, so their figures are reported
    assert with_head_data(model, ("fashion-mnist",)) == ("fashion-mnist", spec)
    assert with_head_data(model, ("fashion-mnist", spec)) == ("fashion-mnist", spec)
    assert with_head_data(tiny_model_dir, ("fashion-mnist",)) == ("fashion-mnist",)
    gate = {"gate_data": f"fashion-mnist:{tiny_fmnist}", "gate_queries": 10, "gate_gallery": 20}
    run_export(model, None, ExportOptions(precisions=("fp16",), gate_verification=None, **gate), lambda s: None)
    figures = json.loads((model / "manifest.json").read_text())["artifacts"][ONNX_FILES["fp16"]]["gate"]["attributes"]
    assert set(figures["fp32"]) == {f"space_map/{a}" for a in ("category", "colour", "pattern")}
    assert figures["passed"] and all(abs(d) <= figures["allowed_drop_pts"] for d in figures["drop_pts"].values())
    assert figures["data"].startswith(spec)
