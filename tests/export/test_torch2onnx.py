from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fashion_match.errors import ExportError
from fashion_match.export.parity import check_parity
from fashion_match.export.threshold import calibrate_onnx
from fashion_match.fileio import sha256_file
from fashion_match.formats import FP32_ONNX, WEIGHTS
from fashion_match.models.checkpoint import load_weights
from fashion_match.models.ingraph import InGraphPreprocess
from tests.conftest import encode, photo


def _pixels(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_manifest_and_files(tiny_model_dir: Path) -> None:
    man = json.loads((tiny_model_dir / "manifest.json").read_text())
    for key in (
        "model",
        "embedding_dim",
        "preprocess",
        "threshold",
        "calibration",
        "source",
        "package_version",
        "artifacts",
        "format_version",
    ):
        assert key in man
    onnx_entry = man["artifacts"][FP32_ONNX]
    assert onnx_entry["sha256"] == sha256_file(tiny_model_dir / FP32_ONNX)
    assert man["artifacts"][WEIGHTS]["sha256"] == sha256_file(tiny_model_dir / WEIGHTS)
    assert onnx_entry["precision"] == "fp32" and onnx_entry["opset"] >= 17
    assert onnx_entry["parity"]["min_cosine"] >= 0.9999 and onnx_entry["parity"]["nn_agreement"] == 1.0
    assert man["embedding_dim"] == 64 and man["preprocess"]["size"] == 32 and man["threshold"] == 0.5
    assert not list(tiny_model_dir.glob(".*tmp")), "temporary files left behind"


def test_graph_takes_uint8_nhwc_with_dynamic_batch(tiny_model_dir: Path) -> None:
    m = onnx.load(str(tiny_model_dir / FP32_ONNX))
    onnx.checker.check_model(m)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    inp = m.graph.input[0]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("n", [1, 3, 17])
def test_onnx_equals_torch_with_preprocessing_in_graph(tiny_model_dir: Path, n: int) -> None:
    man = json.loads((tiny_model_dir / "manifest.json").read_text())
    model = load_weights(tiny_model_dir / WEIGHTS, man["artifacts"][WEIGHTS]["config"])
    px = _pixels(n, seed=n)
    sess = ort.InferenceSession(str(tiny_model_dir / FP32_ONNX), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"pixels": px})[0]
    # reference: normalise on the numpy side with the spec, then the plain torch model
    with torch.no_grad():
        ref = model(torch.from_numpy(model.preprocess.normalize(px))).numpy()
    assert got.shape == (n, 64)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_parity_gate_fails_on_a_broken_export(model_copy: Path) -> None:
    path = model_copy / FP32_ONNX
    m = onnx.load(str(path))
    init = max(m.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    w = onnx.numpy_helper.to_array(init).copy()
    w += np.random.default_rng(0).normal(0, float(np.abs(w).mean()) + 1e-3, w.shape).astype(w.dtype)
    init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    onnx.save(m, str(path))
    man = json.loads((model_copy / "manifest.json").read_text())
    model = load_weights(model_copy / WEIGHTS, man["artifacts"][WEIGHTS]["config"])
    px = np.stack([np.asarray(photo(32, 32, seed=i)) for i in range(8)])
    with pytest.raises(ExportError, match="parity gate failed"):
        check_parity(InGraphPreprocess(model).eval(), path, px)


def test_parity_gate_passes_on_the_good_export(tiny_model_dir: Path) -> None:
    man = json.loads((tiny_model_dir / "manifest.json").read_text())
    model = load_weights(tiny_model_dir / WEIGHTS, man["artifacts"][WEIGHTS]["config"])
    px = np.stack([np.asarray(photo(32, 32, seed=i)) for i in range(8)])
    figures = check_parity(InGraphPreprocess(model).eval(), tiny_model_dir / FP32_ONNX, px)
    assert figures["min_cosine"] >= 0.9999 and figures["nn_agreement"] == 1.0


def test_export_refuses_unreadable_parity_images(tmp_path: Path) -> None:
    from fashion_match.export.torch2onnx import torch2onnx
    from fashion_match.models import create_model

    with pytest.raises(ExportError, match="need >= 3 decodable"):
        torch2onnx(
            create_model("tiny", pretrained=False),
            tmp_path / "out",
            threshold=0.5,
            parity_sources=[b"junk", encode(photo(), "PNG")],
        )
    assert not (tmp_path / "out" / "manifest.json").exists() and not (tmp_path / "out" / FP32_ONNX).exists()


def test_calibration_on_fmnist_c2s(tiny_model_dir: Path, tiny_fmnist: Path) -> None:
    man = json.loads((tiny_model_dir / "manifest.json").read_text())
    from fashion_match.data.preprocess import PreprocessSpec

    cal = calibrate_onnx(
        tiny_model_dir / FP32_ONNX, PreprocessSpec.from_dict(man["preprocess"]), f"fmnist-c2s:{tiny_fmnist}", items=6
    )
    assert cal["n_pos"] == 6 and cal["n_neg"] == 30 and cal["queries"] == 6 and cal["gallery"] == 6
    assert 0.5 <= cal["balanced_accuracy"] <= 1.0 and -1.0 <= cal["threshold"] <= 1.0
