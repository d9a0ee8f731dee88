"""The OpenVINO backend on the tiny model: parity with ONNX Runtime, manifest checks, explicit
precision (never OpenVINO's own bf16 default), the bf16 gate, and the "not installed" path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fashion_match.errors import BackendUnavailable, ManifestMismatch, UsageError
from fashion_match.formats import FP32_ONNX, ONNX_FILES, lookup
from fashion_match.runtime.backend import open_backend, unavailable_reason
from tests.conftest import REPO, run_cli

pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'fashion-match[openvino]')")

from fashion_match.runtime.openvino_backend import cpu_capabilities  # noqa: E402

PAIR = (REPO / "examples/sample/01-pullover/consumer.jpg", REPO / "examples/sample/01-pullover/shop.png")
GATE = {"gate_data": "fashion-mnist", "gate_queries": 200, "gate_gallery": 1000, "gate_verification": None}
HAS_BF16 = "BF16" in cpu_capabilities()


def _pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _reference(model: Path, precision: str, px: np.ndarray) -> np.ndarray:
    with open_backend(model, "onnxruntime", precision, device="cpu") as be:
        return be.embed(px)


def test_fp32_agrees_with_onnxruntime_and_says_its_arithmetic(tiny_model_dir: Path) -> None:
    with open_backend(tiny_model_dir, "openvino", "fp32") as be:
        px = _pixels(5, be.info.input_size)
        got = be.embed(px)
        info = be.info
        outs = be.outputs(px)
    ref = _reference(tiny_model_dir, "fp32", px)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    assert list(outs) == ["embedding"] and np.array_equal(outs["embedding"], got)
    # it runs the ONNX Runtime file as listed, and says FP32 arithmetic: OpenVINO's CPU default on
    # bf16-capable CPUs would be bf16, which fp32 must never become
    assert info.backend == "openvino" and info.artifact == FP32_ONNX and info.device == "cpu"
    assert "inference_precision=f32" in info.detail


def test_reduced_files_agree_within_the_gate_and_batches_are_checked(model_copy: Path) -> None:
    from fashion_match.export.pipeline import ExportOptions, run_export

    run_export(model_copy, None, ExportOptions(precisions=("fp16", "int8"), **GATE), lambda s: None)
    for precision in ("fp16", "int8"):
        with open_backend(model_copy, "openvino", precision, threads=1) as be:
            px = _pixels(8, be.info.input_size, seed=3)
            assert be.info.artifact == ONNX_FILES[precision] and "inference_precision=f32" in be.info.detail
            got = be.embed(px)
            with pytest.raises(UsageError, match="pixels must have shape"):
                be.embed(px[:, :-1])
        cos = np.sum(got * _reference(model_copy, precision, px), axis=1)
        assert cos.min() > 0.999, (precision, cos.min())  # OpenVINO and ORT running the same file


def test_a_mismatched_manifest_is_refused(model_copy: Path) -> None:
    with open(model_copy / FP32_ONNX, "r+b") as f:  # bytes changed after the manifest recorded them
        f.seek(-8, 2)
        f.write(b"\0" * 8)
    with pytest.raises(ManifestMismatch, match="sha256"):
        open_backend(model_copy, "openvino", "fp32")
    man = json.loads((model_copy / "manifest.json").read_text())
    man["artifacts"][FP32_ONNX]["backend"] = "tensorrt"
    (model_copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ManifestMismatch, match="listed as tensorrt/fp32, expected onnxruntime/fp32"):
        open_backend(model_copy, "openvino", "fp32")


def test_a_wrong_input_size_is_refused(model_copy: Path) -> None:
    man = json.loads((model_copy / "manifest.json").read_text())
    man["preprocess"]["size"] = 96
    (model_copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ManifestMismatch, match="input shape .* does not match the manifest's 96x96x3"):
        open_backend(model_copy, "openvino", "fp32")


def test_bf16_runs_only_once_gated(model_copy: Path) -> None:
    from fashion_match.export.pipeline import ExportOptions, run_export
    from fashion_match.runtime.manifest import load_manifest

    with pytest.raises(BackendUnavailable, match="bf16 execution of model.onnx on openvino has not passed"):
        open_backend(model_copy, "openvino", "bf16")
    opts = ExportOptions(precisions=("bf16",), allow_accuracy_drop=100.0, **GATE)
    if not HAS_BF16:  # refused before any gate work, in one line
        with pytest.raises(UsageError, match="--bf16: this CPU has no bf16 units"):
            run_export(model_copy, None, opts, lambda s: None)
        return
    lines: list[str] = []
    files = sorted(p.name for p in model_copy.iterdir())
    result = run_export(model_copy, None, opts, lines.append)
    entry = load_manifest(model_copy).artifacts[FP32_ONNX]
    figures = entry["execution_gates"]["openvino/bf16"]
    assert (
        figures["passed"] and figures["mean_cosine"] < 1.0 and "inference_precision=bf16" in figures["backend_detail"]
    )
    assert result.made[0]["execution"] == "openvino/bf16" and any("model.onnx on openvino" in s for s in lines)
    assert sorted(p.name for p in model_copy.iterdir()) == files  # no file of its own
    with open_backend(model_copy, "openvino", "bf16") as be:
        px = _pixels(4, be.info.input_size)
        got = be.embed(px)
        assert be.info.precision == "bf16" and "inference_precision=bf16" in be.info.detail
    ref = _reference(model_copy, "fp32", px)
    cos = np.sum(got * ref, axis=1)
    assert 0.99 < cos.min() and not np.allclose(got, ref, atol=1e-6)  # bf16 arithmetic, close but not FP32


def test_auto_never_picks_openvino(model_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fashion_match.runtime import backend as registry

    with pytest.raises(UsageError, match="--precision bf16 runs on --backend openvino only"):
        open_backend(model_copy, "auto", "bf16")
    real = registry.unavailable_reason
    assert real("openvino", "cpu") is None
    monkeypatch.setattr(registry, "unavailable_reason", lambda n, d="auto": None if n == "openvino" else "off")
    with pytest.raises(BackendUnavailable, match="nothing can run fp32 here"):
        open_backend(model_copy, "auto", "fp32")  # openvino could, but auto does not choose it


def test_cuda_and_a_missing_library_are_refused(model_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendUnavailable, match="runs on the CPU"):
        open_backend(model_copy, "openvino", "fp32", device="cuda")
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    assert "pip install 'fashion-match[openvino]'" in str(unavailable_reason("openvino"))
    with pytest.raises(BackendUnavailable, match="openvino is not installed"):
        open_backend(model_copy, "openvino", "fp32")
    assert lookup("openvino", "fp32").extra == "openvino"


def test_fm_match_on_openvino_agrees_with_onnxruntime(
    capsys: pytest.CaptureFixture[str], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fashion_match.cli.common import entrypoint
    from fashion_match.cli.match import cli

    main = entrypoint(cli, "fm-match")  # in-process: the command without its fast os._exit
    scores = {}
    for backend in ("onnxruntime", "openvino"):
        rc, out, _ = run_cli(
            capsys, main, *map(str, PAIR), "--model", str(tiny_model_dir), "--backend", backend, "--json"
        )
        assert rc in (0, 1)
        scores[backend] = json.loads(out)["similarity"]
    assert scores["openvino"] == pytest.approx(scores["onnxruntime"], abs=1e-4)
    monkeypatch.setitem(sys.modules, "openvino", None)
    rc, out, err = run_cli(capsys, main, *map(str, PAIR), "--model", str(tiny_model_dir), "--backend", "openvino")
    assert (
        rc == 2 and "openvino is not installed" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    )


def test_per_layer_counters_name_kernels_and_add_up(tiny_model_dir: Path) -> None:
    from fashion_match.bench import ov_profile

    path = tiny_model_dir / FP32_ONNX
    layers = ov_profile.layer_times(path, _pixels(2, 32), runs=2)
    assert layers and all(r["us"] >= 0 and r["kernel"] and r["type"] for r in layers)
    assert any(r["type"] == "Convolution" for r in layers)  # the tiny model's convolutions ran
    summary = ov_profile.by_kernel(layers)
    assert sum(v["share"] for v in summary["kernels"].values()) == pytest.approx(1.0, abs=1e-3)
    assert summary["total_ms"] == pytest.approx(sum(r["us"] for r in layers) / 1000, abs=0.01)


def test_a_malformed_or_failed_execution_gate_is_refused(model_copy: Path) -> None:
    path = model_copy / "manifest.json"
    man = json.loads(path.read_text())
    man["artifacts"][FP32_ONNX]["execution_gates"] = "yes"
    path.write_text(json.dumps(man))
    with pytest.raises(ManifestMismatch, match="execution_gates"):
        open_backend(model_copy, "openvino", "bf16")
    man["artifacts"][FP32_ONNX]["execution_gates"] = {"openvino/bf16": {"passed": False}}
    path.write_text(json.dumps(man))
    with pytest.raises(BackendUnavailable, match="has not passed the accuracy gate"):
        open_backend(model_copy, "openvino", "bf16")
