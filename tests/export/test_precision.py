"""FP16 / INT8 conversion, the accuracy gate and the export pipeline, on the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from fashion_match.errors import ExportError, FmError, ManifestMismatch, UsageError
from fashion_match.export.calib_ranges import _kl_threshold, compute_ranges
from fashion_match.export.gate import MIN_MEAN_COSINE
from fashion_match.export.onnx2fp16 import convert_fp16, onnx2fp16
from fashion_match.export.onnx2int8 import onnx2int8
from fashion_match.export.pipeline import ExportOptions, run_export
from fashion_match.export.regions import backbone_nodes
from fashion_match.fileio import sha256_file
from fashion_match.formats import FP32_ONNX, ONNX_FILES, REDUCED, WEIGHTS, precision
from fashion_match.runtime.manifest import load_manifest
from fashion_match.runtime.matcher import Matcher

GATE = {"gate_data": "fashion-mnist", "gate_queries": 200, "gate_gallery": 1000, "gate_verification": None}


def _pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _run(path: Path, pixels: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: pixels})[0])


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    g = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def test_backbone_region_excludes_preprocessing_and_tail(tiny_model_dir: Path) -> None:
    g = onnx.load(str(tiny_model_dir / FP32_ONNX)).graph
    inside = {g.node[i].op_type for i in backbone_nodes(g)}
    outside = {n.op_type for i, n in enumerate(g.node) if i not in backbone_nodes(g)}
    assert "Conv" in inside
    assert {"Cast", "ReduceL2", "Div"} <= outside
    assert not inside & {"Cast", "ReduceL2", "ReduceMean", "Div"}


def test_fp16_keeps_io_types_and_fragile_parts_fp32(tiny_model_dir: Path, tmp_path: Path) -> None:
    src = tiny_model_dir / FP32_ONNX
    summary = onnx2fp16(src, tmp_path / "m.onnx")
    half = onnx.load(str(tmp_path / "m.onnx"))
    types = _elem_types(half)
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert half.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    convs = [n for n in half.graph.node if n.op_type == "Conv"]
    assert convs and all(types[n.input[1]] == onnx.TensorProto.FLOAT16 for n in convs)
    for n in half.graph.node:
        if n.op_type in ("ReduceL2", "ReduceMean", "Div"):
            assert types[n.input[0]] == onnx.TensorProto.FLOAT, n.name
    assert summary["fp16_nodes"] > 0
    s = load_manifest(tiny_model_dir).preprocess.size
    px = _pixels(8, s)
    ref, got = _run(src, px), _run(tmp_path / "m.onnx", px)
    assert got.dtype == np.float32
    assert np.min(np.sum(ref * got, axis=1)) > 0.999


def test_fp16_l2_norm_does_not_overflow_for_large_embeddings(tiny_model_dir: Path) -> None:
    """An embedding whose squared norm exceeds 65504 would be inf in FP16: it must stay finite."""
    model = onnx.load(str(tiny_model_dir / FP32_ONNX))
    g = model.graph
    # scale the last conv's weights so the pooled features are ~1000x larger
    last_conv = [n for n in g.node if n.op_type == "Conv"][-1]
    for t in g.initializer:
        if t.name in last_conv.input[1:]:
            arr = onnx.numpy_helper.to_array(t) * 1000.0
            t.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), t.name))
    half, _ = convert_fp16(model)
    s = load_manifest(tiny_model_dir).preprocess.size
    px = _pixels(4, s, seed=1)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"pixels": px})
    got = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"pixels": px})
    assert np.all(np.isfinite(got[0]))
    assert np.allclose(np.linalg.norm(got[0], axis=1), 1.0, atol=1e-3)
    assert np.min(np.sum(ref[0] * got[0], axis=1)) > 0.999


@pytest.mark.parametrize(
    ("target", "act_dtype", "weight_max"),
    # full-range weights both: 7 bits cost accuracy, and the gates and the runtime ask ONNX Runtime
    # for its exact kernels where its fast U8S8 ones could saturate (tests/runtime/test_int8_kernels.py)
    [("onnxruntime", onnx.TensorProto.UINT8, 127), ("tensorrt", onnx.TensorProto.INT8, 127)],
)
def test_int8_flavour_per_target(
    tiny_model_dir: Path, tmp_path: Path, target: str, act_dtype: int, weight_max: int
) -> None:
    s = load_manifest(tiny_model_dir).preprocess.size
    info = onnx2int8(tiny_model_dir / FP32_ONNX, tmp_path / "q.onnx", _pixels(16, s), target=target)
    assert info["target"] == target and info["per_channel_weights"] and info["weight_max"] == weight_max
    m = onnx.load(str(tmp_path / "q.onnx"))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    types = {t.name: t.data_type for t in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert qs, "no activation was quantised"
    for n in qs:
        zp = n.input[2]
        assert types[zp] == act_dtype
        if target == "tensorrt":
            assert np.all(inits[zp] == 0), "TensorRT needs symmetric activations (zero point 0)"
    weight_dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert any(inits[n.input[1]].size > 1 for n in weight_dq), "weights are not per-channel"
    assert all(np.all(inits[n.input[2]] == 0) for n in weight_dq if len(n.input) > 2)
    int8_weights = [inits[n.input[0]].astype(np.int32) for n in weight_dq if types[n.input[0]] == onnx.TensorProto.INT8]
    assert int8_weights and max(int(np.abs(w).max()) for w in int8_weights) == weight_max
    # the tail computes in FP32: nothing after the pooling is quantised
    consumers = {i: n for n in m.graph.node for i in n.input}
    for n in m.graph.node:
        if n.op_type in ("ReduceL2", "ReduceMean", "Div"):
            assert all(consumers.get(o) is None or consumers[o].op_type != "QuantizeLinear" for o in n.output)
        if n.op_type in ("ReduceL2", "Div"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in n.input)


def test_kl_threshold_clips_rare_outliers() -> None:
    rng = np.random.default_rng(0)
    x = np.abs(np.concatenate([rng.normal(0, 1, 200_000), [60.0] * 5]))
    hist, edges = np.histogram(x, bins=2048, range=(0, x.max()))
    t = _kl_threshold(hist, edges)
    assert 2.5 < t < 20, t  # far below the outliers, above the bulk of the Gaussian


def test_calibration_ranges_by_method(tiny_model_dir: Path) -> None:
    s = load_manifest(tiny_model_dir).preprocess.size
    px = _pixels(24, s)
    path = tiny_model_dir / FP32_ONNX
    mm = compute_ranges(path, px, "minmax")
    pc = compute_ranges(path, px, "percentile", percentile=99.0)
    en = compute_ranges(path, px, "entropy")
    assert mm.keys() == pc.keys() == en.keys()
    for name, (lo, hi) in mm.items():
        assert lo <= hi
        for other in (pc, en):
            assert lo - 1e-6 <= other[name][0] <= other[name][1] <= hi + 1e-6
    assert any(pc[n][1] < mm[n][1] for n in mm), "percentile 99 clipped nothing"


def _constant_calib(folder: Path) -> str:
    (folder / "grey").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (64, 64), (128, 128, 128)).save(folder / "grey" / f"{i}.png")
    return f"folder:{folder}"


def test_export_fp16_int8_gated_and_loadable(model_copy: Path) -> None:
    lines: list[str] = []
    result = run_export(model_copy, None, ExportOptions(precisions=REDUCED, **GATE), lines.append)
    man = json.loads((model_copy / "manifest.json").read_text())
    for prec in REDUCED:  # every reduced precision of the table, made and gated
        entry = man["artifacts"][ONNX_FILES[prec]]
        assert entry["precision"] == prec and entry["backend"] == "onnxruntime"
        assert entry["sha256"] == sha256_file(model_copy / ONNX_FILES[prec])
        assert entry["made_from"]["sha256"] == man["artifacts"][FP32_ONNX]["sha256"]
        gate = entry["gate"]
        assert gate["passed"] and gate["min_cosine"] <= gate["mean_cosine"] <= 1.0 + 1e-6
        assert {"recall_at_1", "recall_at_1_fp32", "recall_at_1_drop_pts", "allowed_drop_pts"} <= gate.keys()
    assert man["artifacts"][ONNX_FILES["int8"]]["int8"]["activations"] == "uint8"
    assert len(result.made) == len(REDUCED) and any("R@1" in line for line in lines)
    s = load_manifest(model_copy).preprocess.size
    px = _pixels(3, s)
    with Matcher(model_copy) as ref, Matcher(model_copy, precision="int8") as q:
        assert q.backend.info.precision == "int8" and q.backend.info.artifact == ONNX_FILES["int8"]
        cos = np.sum(ref.backend.embed(px) * q.backend.embed(px), axis=1)
        assert np.all(cos > 0.9)


def test_constant_calibration_trips_the_gate_and_keeps_nothing(model_copy: Path, tmp_path: Path) -> None:
    calib = _constant_calib(tmp_path / "calib")
    before = (model_copy / "manifest.json").read_bytes()
    with pytest.raises(ExportError, match="accuracy gate failed.*--allow-accuracy-drop"):
        run_export(model_copy, None, ExportOptions(precisions=("int8",), calib=calib, **GATE), lambda s: None)
    assert not (model_copy / ONNX_FILES["int8"]).exists()
    assert (model_copy / "manifest.json").read_bytes() == before
    assert not [p for p in model_copy.iterdir() if p.name.endswith(".tmp")]
    # the user may accept the loss explicitly; the allowance is recorded
    run_export(
        model_copy,
        None,
        ExportOptions(precisions=("int8",), calib=calib, allow_accuracy_drop=100, **GATE),
        lambda s: None,
    )
    gate = load_manifest(model_copy).artifacts[ONNX_FILES["int8"]]["gate"]
    assert gate["allowance"] == "--allow-accuracy-drop" and gate["allowed_drop_pts"] == 100
    assert gate["min_mean_cosine"] is None  # waived, and the manifest says so
    assert gate["recall_at_1_drop_pts"] > 1.0 or gate["mean_cosine"] < MIN_MEAN_COSINE["int8"]


def test_a_wrong_calibration_spec_fails_before_any_work(model_copy: Path, tmp_path: Path) -> None:
    said: list[str] = []
    with pytest.raises(FmError, match="nowhere"):
        run_export(
            model_copy,
            tmp_path / "out",
            ExportOptions(precisions=REDUCED, calib=f"folder:{tmp_path}/nowhere"),
            said.append,
        )
    assert said == [] and not (tmp_path / "out").exists()


def test_tensorrt_int8_source_is_not_an_onnxruntime_artifact(model_copy: Path) -> None:
    run_export(model_copy, None, ExportOptions(precisions=("int8",), target="tensorrt", **GATE), lambda s: None)
    man = load_manifest(model_copy)
    assert ONNX_FILES["int8"] not in man.artifacts
    src = man.data["engine_sources"][precision("int8").engine_source]
    assert src["int8"]["activation_symmetric"] and src["int8"]["activations"] == "int8"
    with pytest.raises(Exception, match="no int8 artifact"):
        Matcher(model_copy, precision="int8", backend="onnxruntime")


def test_derived_artifact_of_another_fp32_is_refused(model_copy: Path) -> None:
    run_export(model_copy, None, ExportOptions(precisions=("fp16",), **GATE), lambda s: None)
    man = json.loads((model_copy / "manifest.json").read_text())
    man["artifacts"][ONNX_FILES["fp16"]]["made_from"]["sha256"] = "0" * 64
    (model_copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ManifestMismatch, match="re-run fm-export"):
        load_manifest(model_copy).artifact("onnxruntime", "fp16")


def test_export_to_another_directory_copies_fp32_first(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out dir"
    run_export(tiny_model_dir, out, ExportOptions(precisions=("fp16",), **GATE), lambda s: None)
    man = load_manifest(out)
    assert set(man.artifacts) >= {FP32_ONNX, ONNX_FILES["fp16"]}
    assert ONNX_FILES["fp16"] not in load_manifest(tiny_model_dir).artifacts


def test_embedded_model_needs_out(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--out"):
        run_export(None, None, ExportOptions(precisions=("fp16",)), lambda s: None)
    with pytest.raises(UsageError, match="neither a model directory"):
        run_export(tmp_path, None, ExportOptions(precisions=("fp16",)), lambda s: None)


def test_export_from_an_fm_train_run(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An fm-train output directory is exported (torch2onnx) before the precision steps."""
    from fashion_match.models import create_model
    from fashion_match.models.checkpoint import save_weights

    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    model = create_model("tiny", pretrained=False)
    save_weights(model, run / "best" / WEIGHTS)
    state = {"model_config": model.config(), "threshold": 0.42, "metrics": {"recall_at_1": 0.5}, "epoch": 2}
    (run / "best" / "state.json").write_text(json.dumps(state))
    result = run_export(run, None, ExportOptions(precisions=("fp16",), **GATE), lambda s: None)
    assert result.out == run / "export"
    assert f"exporting {run} (best, epoch 3 checkpoint)" in capsys.readouterr().err
    man = load_manifest(run / "export")
    assert man.threshold == pytest.approx(0.42)
    # the threshold is the run's own, and the manifest says so (not "given by the user")
    assert (
        man.data["calibration"]["rule"] == "the fm-train run's own, from its evaluation at the best, epoch 3 checkpoint"
    )
    assert man.data["source"]["epoch"] == 2
    assert set(man.artifacts) >= {FP32_ONNX, ONNX_FILES["fp16"], WEIGHTS}
    shutil.rmtree(run)


def test_missing_gate_data_says_how_to_point_the_gate_elsewhere(model_copy: Path, tmp_path: Path) -> None:
    opts = ExportOptions(
        precisions=("fp16",), gate_data=f"fashion-mnist:{tmp_path / 'nowhere'}", gate_verification=None
    )
    with pytest.raises(UsageError, match="--gate-data SPEC"):
        run_export(model_copy, None, opts, lambda s: None)
    assert ONNX_FILES["fp16"] not in load_manifest(model_copy).artifacts


def test_gate_on_an_item_protocol_keeps_every_query_s_match(tiny_fmnist: Path, tiny_model_dir: Path) -> None:
    """With item-level gate data, a subsampled gallery must still hold each query's item (else R@1 is capped)."""
    from fashion_match.export.gate import build_gate_set

    spec = load_manifest(tiny_model_dir).preprocess
    gs = build_gate_set(spec, f"fmnist-c2s:{tiny_fmnist}", queries=4, gallery=3, verification=None)
    assert len(gs.q_keys) == 4
    assert set(gs.q_keys) <= set(gs.g_keys)  # evenly spaced 4 queries and 3 gallery images would miss two


def test_percentile_ranges_keep_the_sign_of_a_symmetric_tensor(tmp_path: Path) -> None:
    """pixels - 127.5 for pixels drawn from a Gaussian around 127.5: a range symmetric about 0, and the
    99 % percentile clips both tails (an |x| histogram would lose the negative side)."""
    from onnx import TensorProto, helper, numpy_helper

    inp = helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", 8, 8, 3])
    out = helper.make_tensor_value_info("centred", TensorProto.FLOAT, ["n", 8, 8, 3])
    half = numpy_helper.from_array(np.array(127.5, np.float32), "half")
    nodes = [
        helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["x", "half"], ["centred"]),
    ]
    graph = helper.make_graph(nodes, "g", [inp], [out], initializer=[half])
    path = tmp_path / "centred.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    rng = np.random.default_rng(0)
    px = np.clip(np.rint(rng.normal(127.5, 30, (64, 8, 8, 3))), 0, 255).astype(np.uint8)
    lo, hi = compute_ranges(path, px, "percentile", percentile=99.0)["centred"]
    mm_lo, mm_hi = compute_ranges(path, px, "minmax")["centred"]
    assert lo < -50 and hi > 50 and abs(lo + hi) < 5  # about +-2.6 sigma (~77), symmetric
    assert mm_lo < lo and hi < mm_hi  # both tails clipped
