"""Everything around TensorRT that runs without it, the Triton repository, and fm-export's CLI."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fashion_match.errors import BackendUnavailable, ExportError, MissingDependency, UsageError
from fashion_match.export.onnx2engine import batch_profiles, build_engine, parse_batch
from fashion_match.export.pipeline import ExportOptions, run_export
from fashion_match.export.triton import config_pbtxt, validate_config, write_repository
from fashion_match.formats import FP32_ONNX, ONNX_FILES, REDUCED, lookup
from fashion_match.runtime.backend import open_backend, unavailable_reason
from fashion_match.runtime.manifest import load_manifest
from fashion_match.runtime.tensorrt_backend import engine_mismatch, io_dtype_mismatch, pick_profile

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
EXE = Path(sys.executable).parent / "fm-export"
GATE_ARGS = ["--gate-queries", "100", "--gate-gallery", "500", "--gate-pairs", "0"]


@pytest.mark.parametrize(
    ("batch", "profiles"),
    [
        ((1, 32, 128), [(1, 1, 1), (2, 32, 32), (33, 128, 128)]),
        ((1, 1, 1), [(1, 1, 1)]),
        ((8, 8, 8), [(8, 8, 8)]),
        ((1, 1, 64), [(1, 1, 1), (2, 64, 64)]),
        ((4, 16, 64), [(4, 16, 16), (17, 64, 64)]),
    ],
)
def test_batch_profiles_are_narrow_and_cover_the_range(batch: tuple[int, int, int], profiles: list) -> None:
    got = batch_profiles(*batch)
    assert got == profiles
    covered = [b for p in got for b in range(p[0], p[2] + 1)]
    assert covered == list(range(batch[0], batch[2] + 1))  # contiguous, no overlap
    assert all(p[1] == p[2] for p in got)  # each tuned at its top size


def test_pick_profile_takes_the_narrowest_fit() -> None:
    profiles = [[1, 1, 1], [2, 32, 32], [33, 128, 128]]
    assert [pick_profile(profiles, b) for b in (1, 2, 32, 33, 128)] == [0, 1, 1, 2, 2]
    assert pick_profile(profiles, 129) is None
    assert pick_profile([[1, 64, 64], [8, 8, 8]], 8) == 1


@pytest.mark.parametrize("text", ["", "a,b,c", "1,2", "0,1,2", "8,4,16", "1,32,16"])
def test_parse_batch_rejects_bad_ranges(text: str) -> None:
    with pytest.raises(UsageError, match="--batch"):
        parse_batch(text)
    assert parse_batch("16") == (16, 16, 16)


def test_engine_io_dtypes_must_fit_the_buffers() -> None:
    assert io_dtype_mismatch(np.uint8, [np.float32]) is None
    assert io_dtype_mismatch(np.uint8, [np.float32, np.float32]) is None
    assert "float16" in str(io_dtype_mismatch(np.uint8, [np.float16]))  # an FP16 output would be read as float32
    assert "float32/float16" in str(io_dtype_mismatch(np.uint8, [np.float32, np.float16]))  # so would a second one
    assert "float32/float32" in str(io_dtype_mismatch(np.float32, [np.float32]))


def test_engine_mismatch_names_what_differs() -> None:
    entry = {"tensorrt_version": "10.8.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    same = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    assert engine_mismatch(entry, "10.8.0", same) is None
    assert "TensorRT 10.8.0" in str(engine_mismatch(entry, "11.0.0", same))
    other = engine_mismatch(entry, "10.8.0", {"gpu": "NVIDIA L4", "compute_capability": "8.9"})
    assert other is not None and "8.9" in other and "9.0" in other
    assert "built on" in str(engine_mismatch(entry, "10.8.0", {"gpu": "NVIDIA H200", "compute_capability": "9.0"}))


def _fake_engine(model_dir: Path, tmp_path: Path) -> None:
    """A manifest entry for an engine file, as onnx2engine writes it (the bytes are not a real engine)."""
    from fashion_match.fileio import sha256_file

    (model_dir / lookup("tensorrt", "fp16").artifact).write_bytes(b"not an engine")
    man = json.loads((model_dir / "manifest.json").read_text())
    man["artifacts"][lookup("tensorrt", "fp16").artifact] = {
        "backend": "tensorrt",
        "precision": "fp16",
        "sha256": sha256_file(model_dir / lookup("tensorrt", "fp16").artifact),
        "bytes": 13,
        "tensorrt_version": "10.8.0",
        "gpu": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0",
        "profiles": [[1, 1, 1], [2, 32, 32]],
    }
    (model_dir / "manifest.json").write_text(json.dumps(man))


@pytest.mark.skipif(HAS_TRT, reason="checks the messages a machine without TensorRT gives")
def test_without_tensorrt_every_path_says_so(model_copy: Path, tmp_path: Path) -> None:
    why = unavailable_reason("tensorrt", "cuda")
    assert why is not None and "TensorRT" in why
    assert "GPU" in str(unavailable_reason("tensorrt", "cpu"))
    _fake_engine(model_copy, tmp_path)
    with pytest.raises(BackendUnavailable, match="TensorRT"):
        open_backend(model_copy, "tensorrt", "fp16")
    # auto skips the engine it cannot run and says nothing can run fp16 here
    with pytest.raises(BackendUnavailable, match="tensorrt: TensorRT is not installed"):
        open_backend(model_copy, "auto", "fp16", device="cuda")
    with pytest.raises(MissingDependency, match="TensorRT is not installed"):
        build_engine(model_copy / FP32_ONNX, tmp_path / "x.engine")
    with pytest.raises(UsageError, match="--trt: TensorRT is not installed"):
        run_export(model_copy, None, ExportOptions(trt=True), lambda s: None)
    # refused before any FP16/INT8 work or copy is made, not minutes later
    said: list[str] = []
    with pytest.raises(UsageError, match="--trt: TensorRT is not installed"):
        run_export(model_copy, tmp_path / "out", ExportOptions(precisions=REDUCED, trt=True), said.append)
    assert said == [] and not (tmp_path / "out").exists()


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_runs_and_matches_onnxruntime(model_copy: Path, precision: str) -> None:
    """Needs TensorRT and a GPU: build through fm-export's pipeline (gate included) and compare."""
    import numpy as np

    opts = ExportOptions(
        precisions=tuple(p for p in REDUCED if p == precision),
        trt=True,
        batch=(1, 4, 8),
        gate_queries=100,
        gate_gallery=500,
        gate_verification=None,
    )
    run_export(model_copy, None, opts, lambda s: None)
    entry = load_manifest(model_copy).artifacts[lookup("tensorrt", precision).artifact]
    assert entry["profiles"] == [[1, 1, 1], [2, 4, 4], [5, 8, 8]] and entry["gate"]["passed"]
    s = load_manifest(model_copy).preprocess.size
    px = np.random.default_rng(0).integers(0, 256, (8, s, s, 3), dtype=np.uint8)
    with (
        open_backend(model_copy, "tensorrt", precision, device="cuda") as trt,
        open_backend(model_copy, "onnxruntime", "fp32", device="cpu") as ref,
    ):
        for n in (1, 3, 8, 3):  # profile switches and reused buffers
            cos = np.sum(trt.embed(px[:n]) * ref.embed(px[:n]), axis=1)
            assert np.all(cos > (0.999 if precision != "int8" else 0.9))


def test_triton_configs_parse_with_tritons_protobuf(model_copy: Path, tmp_path: Path) -> None:
    run_export(
        model_copy,
        None,
        ExportOptions(precisions=("fp16",), gate_queries=100, gate_gallery=500, gate_verification=None),
        lambda s: None,
    )
    repo = tmp_path / "triton repo"
    folders = write_repository(load_manifest(model_copy), repo, max_batch=64)
    names = sorted(p.name for p in folders)
    assert len(names) == 2 and names[0].endswith("_onnx_fp16") and names[1].endswith("_onnx_fp32")
    man = load_manifest(model_copy)
    for folder in folders:
        cfg = validate_config((folder / "config.pbtxt").read_text())
        assert cfg.name == folder.name and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 64
        assert list(cfg.input[0].dims) == [man.preprocess.size, man.preprocess.size, 3]
        assert list(cfg.output[0].dims) == [man.embedding_dim]
        assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 32]
        assert (folder / "1" / FP32_ONNX).is_file()


def test_triton_plan_config(model_copy: Path, tmp_path: Path) -> None:
    _fake_engine(model_copy, tmp_path)
    man = load_manifest(model_copy)
    entry = man.artifacts[lookup("tensorrt", "fp16").artifact]
    cfg = validate_config(config_pbtxt("m_trt_fp16", man, entry, max_batch=32, instances=2, gpu=True))
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 32
    assert cfg.instance_group[0].count == 2 and list(cfg.instance_group[0].profile) == ["0", "1"]
    folders = write_repository(man, tmp_path / "repo", max_batch=128)
    plan = [f for f in folders if f.name.endswith("_trt_fp16")][0]
    assert (plan / "1" / "model.plan").read_bytes() == b"not an engine"
    assert validate_config((plan / "config.pbtxt").read_text()).max_batch_size == 32  # the engine's largest profile


def test_triton_config_lists_the_tag_and_space_outputs(model_copy: Path) -> None:
    man = load_manifest(model_copy)
    man.data["tags"] = {"attributes": [{"name": "colour", "values": ["red", "blue"]}, {"name": "t", "values": ["a"]}]}
    man.data["spaces"] = {"attributes": [{"name": "colour"}, {"name": "pattern"}], "dim": 16}
    cfg = validate_config(config_pbtxt("m", man, man.artifacts[FP32_ONNX], max_batch=8, instances=1, gpu=False))
    got = [(o.name, list(o.dims)) for o in cfg.output]
    assert got == [("embedding", [man.embedding_dim]), ("tag_probs", [3]), ("attr_embeddings", [2, 16])]


def test_triton_serves_the_int8_onnx_on_cpu(model_copy: Path) -> None:
    """ONNX Runtime's CUDA provider ran the INT8 Q/DQ model slower than FP32 (H100 bench)."""
    from tritonclient.grpc.model_config_pb2 import ModelInstanceGroup

    man = load_manifest(model_copy)
    fp32 = man.artifacts[FP32_ONNX]
    int8 = dict(fp32, precision="int8")

    def kind(entry: dict, gpu: bool) -> int:
        text = config_pbtxt("m", man, entry, max_batch=8, instances=1, gpu=gpu)
        return validate_config(text).instance_group[0].kind

    gpu, cpu = ModelInstanceGroup.KIND_GPU, ModelInstanceGroup.KIND_CPU
    assert (kind(fp32, True), kind(int8, True), kind(fp32, False)) == (gpu, cpu, cpu)


def test_triton_int8_onnx_warns_of_cpus_without_vnni(model_copy: Path, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    """Triton's onnxruntime backend cannot be asked for the exact INT8 kernels: the export says so, for INT8 only."""
    opts = ExportOptions(precisions=("int8",), gate_queries=100, gate_gallery=500, gate_verification=None)
    run_export(model_copy, None, opts, lambda s: None)
    folders = write_repository(load_manifest(model_copy), tmp_path / "repo")
    int8 = [f.name for f in folders if f.name.endswith("_onnx_int8")]
    warned = [r.getMessage() for r in caplog.records if "without VNNI" in r.getMessage()]
    assert len(int8) == 1 and len(warned) == 1 and int8[0] in warned[0] and "fm-serve" in warned[0]


def test_triton_validation_rejects_a_broken_config() -> None:
    with pytest.raises(ExportError, match="Triton ModelConfig"):
        validate_config('name: "x"\nmax_batch_sizes: 4\n')


def fm_export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=300)


def test_cli_exports_and_fm_match_uses_the_precision(model_copy: Path, tmp_path: Path) -> None:
    r = fm_export(str(model_copy), "--fp16", "--int8", "--json", *GATE_ARGS)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [m["file"] for m in out["made"]] == [ONNX_FILES["fp16"], ONNX_FILES["int8"]]
    # stderr is not a terminal here: every step says when it starts and how long it took
    for step in (
        "fp16: converting to",
        "int8: converting to",
        "gate: FP32 reference on",
        "gate: " + ONNX_FILES["int8"],
    ):
        assert re.search(re.escape(step) + r".*: done in \d+\.\d s", r.stderr), (step, r.stderr)
    # 100 queries: one is a whole point of Recall@1, coarser than FP16's 0.1-point allowance
    assert "the fp16 gate is coarser than its allowance: one query is 1.00 points" in r.stderr
    assert "the int8 gate is coarser" not in r.stderr  # int8 allows 1.0
    gate = out["made"][0]["gate"]
    assert gate["mode"] == "full" and gate["resolution_pts"] == {"recall_at_1": 1.0}
    from tests.conftest import encode, photo

    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(encode(photo(seed=1), "JPEG"))
    b.write_bytes(encode(photo(seed=2), "JPEG"))
    match = Path(sys.executable).parent / "fm-match"
    for precision in ("fp16", "int8"):
        r = subprocess.run(
            [str(match), str(a), str(b), "--model", str(model_copy), "--precision", precision, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode in (0, 1), r.stderr
        assert json.loads(r.stdout)["precision"] == precision


def test_quick_gate_is_small_widened_and_labelled(model_copy: Path) -> None:
    r = fm_export(str(model_copy), "--fp16", "--json", "--gate", "quick", "--gate-pairs", "0")
    assert r.returncode == 0, r.stderr
    gate = json.loads(r.stdout)["made"][0]["gate"]
    # quick: 250 queries unless given (the tiny gallery caps nothing here), so one query is 0.4 points
    assert gate["mode"] == "quick" and gate["resolution_pts"] == {"recall_at_1": 0.4}
    assert gate["allowed_drop_pts"] == 0.8 and gate["allowance"].startswith("quick gate")
    assert "coarser than its allowance" not in r.stderr
    manifest = json.loads((model_copy / "manifest.json").read_text())
    assert manifest["artifacts"][ONNX_FILES["fp16"]]["gate"]["mode"] == "quick"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--calib", "fashion-mnist"], "--calib, --target and --int8-max-drop apply to --int8"),
        (["--batch", "8,4,2", "--fp16"], "--batch"),
        (["--fp16"], "needs --out"),
        (["--int8", "--calib", "folder:/nonexistent/x"], "/nonexistent/x"),
    ],
)
def test_cli_errors_are_one_line_exit_2(args: list[str], needle: str, model_copy: Path) -> None:
    if "--calib" in args and "--int8" in args:
        args = [str(model_copy), *args]
    r = fm_export(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_missing_precision_artifact_is_one_line(model_copy: Path, tmp_path: Path) -> None:
    from tests.conftest import encode, photo

    a = tmp_path / "a.jpg"
    a.write_bytes(encode(photo(seed=1), "JPEG"))
    match = Path(sys.executable).parent / "fm-match"
    r = subprocess.run(
        [str(match), str(a), str(a), "--model", str(model_copy), "--precision", "int8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "fm-export --int8" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_network_flags_per_tensorrt_major() -> None:
    """Strongly typed through the creation flag on TensorRT 10; no flag on 11, where it is always on."""
    from types import SimpleNamespace

    from fashion_match.export.onnx2engine import network_flags

    enum = SimpleNamespace(STRONGLY_TYPED=1)
    assert network_flags(SimpleNamespace(__version__="10.8.0.43", NetworkDefinitionCreationFlag=enum)) == 1 << 1
    assert network_flags(SimpleNamespace(__version__="11.0.0", NetworkDefinitionCreationFlag=enum)) == 0


class _FakeConfig:
    """IBuilderConfig's timing-cache calls: a cache whose bytes start with b"other" was made elsewhere."""

    def __init__(self) -> None:
        self.attached: list[bytes] = []

    def create_timing_cache(self, data: bytes) -> bytes | None:
        return None if data.startswith(b"corrupt") else data  # TensorRT's answer to bytes it cannot read

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False
        self.attached.append(cache)
        return not cache.startswith(b"other")


def test_timing_cache_from_another_gpu_is_replaced_by_a_fresh_one(tmp_path: Path) -> None:
    from fashion_match.export.onnx2engine import attach_timing_cache

    cfg = _FakeConfig()
    assert attach_timing_cache(cfg, None) == b"" and cfg.attached == [b""]
    (tmp_path / "mine.cache").write_bytes(b"mine")
    assert attach_timing_cache(cfg, tmp_path / "mine.cache") == b"mine"
    (tmp_path / "theirs.cache").write_bytes(b"other gpu")
    cfg = _FakeConfig()
    assert attach_timing_cache(cfg, tmp_path / "theirs.cache") == b"" and cfg.attached == [b"other gpu", b""]


def test_an_unreadable_timing_cache_is_replaced_by_a_fresh_one(tmp_path: Path) -> None:
    from fashion_match.export.onnx2engine import attach_timing_cache

    (tmp_path / "bad.cache").write_bytes(b"corrupt bytes")
    cfg = _FakeConfig()
    assert attach_timing_cache(cfg, tmp_path / "bad.cache") == b"" and cfg.attached == [b""]


class _FakeEngine:
    """The ICudaEngine/IExecutionContext shape queries, answering for an engine built with `profiles`."""

    def __init__(self, profiles: list[list[int]], size: int, dim: int, spaces: tuple[int, int] = (3, 16)) -> None:
        self.profiles, self.size, self.dims = profiles, size, {"embedding": (dim,), "attr_embeddings": spaces}
        self.shape: tuple[int, ...] | None = None

    def get_tensor_profile_shape(self, name: str, i: int) -> list[tuple[int, ...]]:
        return [(b, self.size, self.size, 3) for b in self.profiles[i]]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1 if self.shape is None else self.shape[0], *self.dims[name])

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shape = shape
        return shape[1] == self.size


def test_engine_shapes_are_checked_against_the_manifest() -> None:
    from fashion_match.runtime.tensorrt_backend import engine_io_mismatch

    profiles = [[1, 1, 1], [2, 32, 32]]

    def check(
        engine_profiles: list[list[int]], size: int, dim: int, want: list[list[int]], want_dim: int, spaces=(3, 16)
    ):  # type: ignore[no-untyped-def]
        engine, context = _FakeEngine(engine_profiles, size, dim), _FakeEngine(engine_profiles, size, dim)
        outputs = {"embedding": (want_dim,), "attr_embeddings": spaces}
        return engine_io_mismatch(engine, context, "pixels", outputs, want, 224)

    assert check(profiles, 224, 522, profiles, 522) is None
    wrong_dim = check(profiles, 224, 522, profiles, 512)
    assert wrong_dim is not None and "(-1, 522)" in wrong_dim and "(N, 512)" in wrong_dim  # would overrun the buffer
    other_profiles = check(profiles, 224, 522, [[1, 1, 1], [2, 16, 32]], 522)
    assert other_profiles is not None and "profile 1" in other_profiles
    assert "profile 0" in str(check(profiles, 192, 522, profiles, 522))
    wrong_spaces = check(profiles, 224, 522, profiles, 522, spaces=(4, 16))  # a second output is checked too
    assert (
        wrong_spaces is not None and "attr_embeddings is (-1, 3, 16)" in wrong_spaces and "(N, 4, 16)" in wrong_spaces
    )


def test_triton_needs_engines_that_take_batch_1(model_copy: Path, tmp_path: Path) -> None:
    from fashion_match.export.triton import check_triton_profiles

    check_triton_profiles("e", [[1, 1, 1], [2, 32, 32], [33, 128, 128]])
    with pytest.raises(ExportError, match=r"leave batches 1..3 uncovered"):
        check_triton_profiles("e", [[4, 16, 16], [17, 64, 64]])
    with pytest.raises(ExportError, match=r"leave batches 9..15 uncovered"):
        check_triton_profiles("e", [[1, 8, 8], [16, 64, 64]])
    _fake_engine(model_copy, tmp_path)
    man = json.loads((model_copy / "manifest.json").read_text())
    man["artifacts"][lookup("tensorrt", "fp16").artifact]["profiles"] = [[4, 16, 16], [17, 64, 64]]
    (model_copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ExportError, match="rebuild it for Triton with --batch 1,OPT,MAX"):
        write_repository(load_manifest(model_copy), tmp_path / "repo")


def test_trt_with_triton_refuses_a_batch_range_above_1_before_any_work(model_copy: Path, tmp_path: Path) -> None:
    opts = ExportOptions(trt=True, triton=tmp_path / "repo", batch=(4, 16, 64))
    with pytest.raises(UsageError, match="use --batch 1,16,64"):
        run_export(model_copy, None, opts, lambda s: pytest.fail(f"worked before refusing: {s}"))
