from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fashion_match.errors import BackendUnavailable, ManifestMismatch, UsageError
from fashion_match.formats import FP32_ONNX
from fashion_match.runtime import Matcher, load_manifest, open_backend


def _edit(folder: Path, fn) -> None:  # type: ignore[no-untyped-def]
    p = folder / "manifest.json"
    data = json.loads(p.read_text())
    fn(data)
    p.write_text(json.dumps(data))


def test_tampered_model_file_refused(model_copy: Path) -> None:
    with open(model_copy / FP32_ONNX, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestMismatch, match="sha256 .* does not match"):
        Matcher(model_copy)


def test_swapped_model_file_refused(model_copy: Path, tmp_path: Path) -> None:
    (model_copy / FP32_ONNX).write_bytes(b"not an onnx file")
    _edit(model_copy, lambda d: None)
    with pytest.raises(ManifestMismatch, match=FP32_ONNX):
        Matcher(model_copy)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d.update(embedding_dim=128), "embedding_dim 128"),
        (lambda d: d["preprocess"].update(size=64), "64x64x3"),
        (lambda d: d["artifacts"][FP32_ONNX].update(sha256="0" * 64), "sha256"),
        (lambda d: d.update(format_version=99), "format_version 99"),
        (lambda d: d.pop("threshold"), "missing keys"),
        (lambda d: d["preprocess"].update(resize="zoom"), "invalid 'preprocess'.*zoom"),
        (lambda d: d["artifacts"][FP32_ONNX].update(precision="fp16"), "listed as onnxruntime/fp16"),
    ],
)
def test_tampered_manifest_refused(model_copy: Path, edit, match: str) -> None:  # type: ignore[no-untyped-def]
    _edit(model_copy, edit)
    with pytest.raises(ManifestMismatch, match=match):
        Matcher(model_copy, backend="onnxruntime")


def test_missing_or_broken_manifest(model_copy: Path, tmp_path: Path) -> None:
    (model_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestMismatch, match="not valid JSON"):
        load_manifest(model_copy)
    (model_copy / "manifest.json").unlink()
    with pytest.raises(ManifestMismatch, match="missing"):
        load_manifest(model_copy)
    with pytest.raises(UsageError, match="not a model directory"):
        load_manifest(tmp_path / "nowhere")


def test_missing_artifacts_never_downgrade(tiny_model_dir: Path) -> None:
    with pytest.raises(BackendUnavailable, match="no fp16 artifact"):
        open_backend(tiny_model_dir, "onnxruntime", "fp16")
    with pytest.raises(BackendUnavailable, match="no int8 artifact for any backend"):
        open_backend(tiny_model_dir, "auto", "int8")
    with pytest.raises(BackendUnavailable, match="no fp32 artifact for tensorrt"):
        open_backend(tiny_model_dir, "tensorrt", "fp32")
    with pytest.raises(UsageError, match="--precision"):
        open_backend(tiny_model_dir, "onnxruntime", "fp8")


def test_cuda_request_on_a_cpu_machine_is_refused(tiny_model_dir: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the ONNX Runtime CUDA provider")
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        open_backend(tiny_model_dir, "onnxruntime", "fp32", device="cuda")


@pytest.mark.filterwarnings("ignore:Specified provider")  # how CPU-only ORT answers the simulated listing
@pytest.mark.parametrize("how", ["falls back", "raises"])
def test_a_listed_cuda_provider_that_cannot_start(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """onnxruntime-gpu on a machine without a working GPU lists CUDA, then falls back to CPU quietly or
    (some builds) raises: `auto` runs on CPU and says so; an explicit `cuda` is refused as a CUDA
    failure, not blamed on the model file."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the ONNX Runtime CUDA provider")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    if how == "raises":
        real = ort.InferenceSession

        def session(path: str, sess_options: object = None, providers: list | None = None) -> object:
            if any("CUDA" in str(p) for p in providers or []):
                raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
            return real(path, sess_options=sess_options, providers=providers)

        monkeypatch.setattr(ort, "InferenceSession", session)
    with open_backend(tiny_model_dir, "onnxruntime", "fp32") as be:
        assert be.info.device == "cpu" and "could not start: running on CPU" in be.info.detail
        assert be.embed(np.zeros((1, be.info.input_size, be.info.input_size, 3), np.uint8)).shape[0] == 1
    with pytest.raises(BackendUnavailable, match="could not start the CUDA provider"):
        open_backend(tiny_model_dir, "onnxruntime", "fp32", device="cuda:0")


@pytest.mark.filterwarnings("ignore:Specified provider")
@pytest.mark.parametrize(
    "device, cuda",
    [
        ("cuda", "CUDAExecutionProvider"),
        ("cuda:0", "CUDAExecutionProvider"),
        ("cuda:2", ("CUDAExecutionProvider", {"device_id": 2})),
    ],
)
def test_cuda_provider_gets_a_device_id_only_when_not_0(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, device: str, cuda: object
) -> None:
    """ORT >= 1.26 logs a warning to stderr for every session given a device_id (seen on an H100)."""
    import onnxruntime as ort

    asked = []
    real = ort.InferenceSession

    def session(path: str, sess_options: object = None, providers: list | None = None) -> object:
        asked.append(providers)
        return real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    with pytest.raises(BackendUnavailable, match="could not start the CUDA provider"):
        open_backend(tiny_model_dir, "onnxruntime", "fp32", device=device)  # the fake ran it on CPU
    assert asked[0] == [cuda, "CPUExecutionProvider"]
