"""INT8 sensitivity scan, units, profiling and automatic mixed precision, on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from fashion_match.export import gate as gates
from fashion_match.export.mixed_int8 import keep_until_within
from fashion_match.export.onnx2int8 import Int8Quantiser
from fashion_match.export.onnx_cpu import onnx_embedder
from fashion_match.export.quant_units import units
from fashion_match.export.regions import split_names
from fashion_match.export.sensitivity import scan
from fashion_match.formats import FP32_ONNX
from fashion_match.runtime.manifest import load_manifest


def _pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def scan_set(tiny_model_dir: Path) -> gates.GateSet:
    """A small scan set of real Fashion-MNIST and fmnist-c2s images."""
    spec = load_manifest(tiny_model_dir).preprocess
    return gates.build_gate_set(spec, "fashion-mnist", 40, 80, "fmnist-c2s", 30, 60)


def _plant(tensor_of: str, unit_index: int = 0):  # noqa: ANN202 - a quantiser hook
    """Force one activation range absurdly narrow, as a broken calibration would: the input of unit
    `unit_index` ("input", read by that unit alone when it is the first) or its output ("output": a
    tensor between two units, which both quantise - the producer's activation, the consumer's conv)."""

    def hook(q: Int8Quantiser) -> None:
        u = units(q.graph, q.backbone)[unit_index]
        node = next(n for n in q.graph.node if n.name == (u.nodes[0] if tensor_of == "input" else u.nodes[-1]))
        tensor = node.input[0] if tensor_of == "input" else node.output[0]
        lo, hi = q.ranges[tensor]
        q.ranges[tensor] = (lo * 1e-3, hi * 1e-3)

    return hook


def test_units_cover_the_backbone_once_with_and_without_metadata(tiny_model_dir: Path) -> None:
    g = onnx.load(str(tiny_model_dir / FP32_ONNX)).graph
    backbone, _ = split_names(g)
    for granularity in ("block", "layer"):
        found = units(g, backbone, granularity)
        names = [n for u in found for n in u.nodes]
        assert sorted(names) == sorted(backbone) and len(names) == len(set(names))
        assert all(u.ops.get("Conv") for u in found)  # activations joined the conv that feeds them
    assert [u.name for u in units(g, backbone)][0].startswith("backbone.")
    for node in g.node:  # another exporter's graph: no module paths
        del node.metadata_props[:]
    bare = units(g, backbone)
    assert [u.nodes[0] for u in bare] == [n.name for n in g.node if n.name in backbone and n.op_type == "Conv"]


def test_keeping_the_first_conv_fp32_still_quantises(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The first conv takes the folded pixels; kept FP32 it must take them as floats, not fail."""
    s = load_manifest(tiny_model_dir).preprocess.size
    px = _pixels(16, s)
    with Int8Quantiser(tiny_model_dir / FP32_ONNX, px) as q:
        first = units(q.graph, q.backbone)[0]
        info = q.quantise(tmp_path / "q.onnx", keep_fp32=first.nodes)
        whole = q.quantise(tmp_path / "all.onnx")
    assert not info["pixels_feed_first_conv"] and whole["pixels_feed_first_conv"]
    assert info["quantised_nodes"] == whole["quantised_nodes"] - len(first.nodes)
    ref = onnx_embedder(tiny_model_dir / FP32_ONNX)(px)
    got = onnx_embedder(tmp_path / "q.onnx")(px)
    assert np.min(np.sum(ref * got, axis=1)) > 0.95


def test_a_planted_bad_unit_is_ranked_first(tiny_model_dir: Path, scan_set: gates.GateSet) -> None:
    s = load_manifest(tiny_model_dir).preprocess.size
    px = _pixels(32, s)
    # the TensorRT flavour keeps the normalised input a float tensor that only the first unit reads
    found = scan(tiny_model_dir / FP32_ONNX, px, scan_set, target="tensorrt", quantiser_hook=_plant("input", 0))
    ranked = [u.name for u in found.ranking()]
    assert ranked[0] == found.units[0].name
    rows = {r["unit"]: r for r in found.rows}
    assert rows[ranked[0]]["alone"]["drift"] > 10 * max(rows[n]["alone"]["drift"] for n in ranked[1:])
    assert rows[ranked[0]]["all_but"]["drift"] < 0.1 * found.int8["drift"]  # keeping it FP32 wins it back
    # every unit's kernels were found in the profile and booked to it (shares are timings: only their range is checked)
    assert all(0 < r["time_share_int8"] <= 1 and 0 < r["time_share_fp32"] <= 1 for r in found.rows)
    assert sum(r["time_share_fp32"] for r in found.rows) <= 1
    # a bad range between units 1 and 2 (ONNX Runtime flavour): both quantise it, both rank above unit 0
    found = scan(tiny_model_dir / FP32_ONNX, px, scan_set, quantiser_hook=_plant("output", 1))
    assert {u.name for u in found.ranking()[:2]} == {found.units[1].name, found.units[2].name}


def _drift_check(tiny_model_dir: Path, px: np.ndarray, calls: list[Path]):  # noqa: ANN202
    """A stand-in gate: the drop is 100 x (1 - mean cosine to FP32), so a planted unit shows up in points."""
    ref = onnx_embedder(tiny_model_dir / FP32_ONNX)(px)

    def check(path: Path) -> dict:
        calls.append(path)
        got = onnx_embedder(path)(px)
        return {"recall_at_1_drop_pts": float(100 * (1 - np.mean(np.sum(ref * got, axis=1))))}

    return check


def test_mixed_precision_keeps_the_planted_unit_and_stops(
    tiny_model_dir: Path, scan_set: gates.GateSet, tmp_path: Path
) -> None:
    s = load_manifest(tiny_model_dir).preprocess.size
    px = _pixels(32, s)
    calls: list[Path] = []
    scans: list[int] = []
    plant = _plant("input", 0)

    def ranking():  # noqa: ANN202 - the scan, with the same bad range
        scans.append(1)
        found = scan(tiny_model_dir / FP32_ONNX, px, scan_set, target="tensorrt", quantiser_hook=plant)
        return found.ranking(), {r["unit"]: r for r in found.rows}

    with Int8Quantiser(tiny_model_dir / FP32_ONNX, px, target="tensorrt") as q:
        plant(q)
        us = units(q.graph, q.backbone)
        check = _drift_check(tiny_model_dir, px, calls)
        record, _ = keep_until_within(q, tmp_path / "m.onnx", check, 1.0, ranking)
    assert [k["unit"] for k in record["kept"]] == [us[0].name]  # the planted one, and nothing more
    assert len(calls) == 2 and scans == [1]  # all-INT8 (too far), then one unit kept: within, stopped
    assert record["steps"][0]["largest_drop_pts"] > 1.0 >= record["steps"][1]["largest_drop_pts"]
    assert record["kept"][0]["nodes"] == us[0].nodes and record["kept"][0]["why"]["alone"]["drift"] > 0
    m = onnx.load(str(tmp_path / "m.onnx"))
    kept_conv = next(n for n in m.graph.node if n.name in us[0].nodes and n.op_type == "Conv")
    producers = {o: n.op_type for n in m.graph.node for o in n.output}
    assert producers.get(kept_conv.input[1]) != "DequantizeLinear"  # its weights stayed FP32


def test_mixed_precision_does_not_scan_when_all_int8_is_within(tiny_model_dir: Path, tmp_path: Path) -> None:
    s = load_manifest(tiny_model_dir).preprocess.size
    px = _pixels(32, s)
    calls: list[Path] = []
    with Int8Quantiser(tiny_model_dir / FP32_ONNX, px) as q:
        record, _ = keep_until_within(
            q, tmp_path / "m.onnx", _drift_check(tiny_model_dir, px, calls), 50.0, lambda: pytest.fail("scanned")
        )
    assert record["kept"] == [] and len(calls) == 1 and (tmp_path / "m.onnx").is_file()


def test_mixed_precision_says_when_no_choice_gets_there(tiny_model_dir: Path, tmp_path: Path) -> None:
    from fashion_match.errors import ExportError

    s = load_manifest(tiny_model_dir).preprocess.size
    px = _pixels(32, s)
    with Int8Quantiser(tiny_model_dir / FP32_ONNX, px) as q:
        us = units(q.graph, q.backbone)

        def never(path: Path) -> dict:
            return {"instance_recall_at_1_drop_pts": 5.0}

        with pytest.raises(ExportError, match=f"even with all {len(us)} scanned units in FP32"):
            keep_until_within(q, tmp_path / "m.onnx", never, 1.0, lambda: (us, {}))
    assert not (tmp_path / "m.onnx").exists()


def test_fm_precision_writes_table_json_and_plot(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from fashion_match.cli.precision import main
    from tests.conftest import run_cli

    out = tmp_path / "sens out"
    code, stdout, _ = run_cli(
        capsys, main, str(tiny_model_dir), "--out", str(out), "--queries", "30", "--gallery", "60",
        "--pairs", "20", "--instance-gallery", "40", "--calib-images", "16",
    )  # fmt: skip
    assert code == 0, stdout
    record = json.loads((out / "sensitivity.json").read_text())
    assert len(record["rows"]) == 3 and record["ranking"][0] in stdout.split("\n")[3]
    assert (out / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "sensitivity.txt").read_text() in stdout
    code, _, err = run_cli(capsys, main, str(tmp_path / "nowhere"))
    assert code == 2 and "Traceback" not in err


def test_fm_export_records_the_mixed_precision_search(model_copy: Path) -> None:
    from fashion_match.errors import UsageError
    from fashion_match.export.pipeline import ExportOptions, run_export
    from fashion_match.formats import ONNX_FILES

    gate = {"gate_data": "fashion-mnist", "gate_queries": 200, "gate_gallery": 1000, "gate_pairs": 50}
    opts = ExportOptions(precisions=("int8",), int8_max_drop=100.0, **gate)
    run_export(model_copy, None, opts, lambda s: None)
    entry = load_manifest(model_copy).artifacts[ONNX_FILES["int8"]]
    mixed = entry["int8"]["mixed_precision"]
    assert mixed["max_drop_pts"] == 100.0 and mixed["kept"] == [] and len(mixed["steps"]) == 1
    assert "instance_recall_at_1_drop_pts" in entry["gate"] and "standard_error_pts" in entry["gate"]
    with pytest.raises(UsageError, match="apply to --int8"):
        from fashion_match.cli.export import cli

        cli.main(["--fp16", "--int8-max-drop", "0.3", str(model_copy)], standalone_mode=False)


def test_profile_books_fused_kernels_to_the_graphs_nodes(tiny_model_dir: Path, tmp_path: Path) -> None:
    from fashion_match.export.ort_profile import book, node_times

    s = load_manifest(tiny_model_dir).preprocess.size
    px = _pixels(8, s)
    g = onnx.load(str(tiny_model_dir / FP32_ONNX)).graph
    convs = {n.name for n in g.node if n.op_type == "Conv"}
    times = book(node_times(tiny_model_dir / FP32_ONNX, px, runs=2), g)
    names = {n.name for n in g.node}
    # fused Conv+ReLU kernels are named after a tensor: booked to the ReLU that produced it (the same unit);
    # what is left unbooked is what the optimiser invented (layout reorders)
    assert all(k.startswith(("Reorder", "Transpose")) for k in set(times) - names), set(times) - names
    assert {"node_relu", "node_relu_1"} <= set(times)
    with Int8Quantiser(tiny_model_dir / FP32_ONNX, px) as q:
        q.quantise(tmp_path / "q.onnx")
    kernels = node_times(tmp_path / "q.onnx", px, runs=2, by="op")
    assert kernels.get("QLinearConv", 0) > 0 and "Conv" not in kernels  # the INT8 file runs integer convs
    assert convs <= set(book(node_times(tmp_path / "q.onnx", px, runs=2), g))  # fused names booked back


def test_make_mixed_scans_on_its_own_ranges_and_times_both_files(
    tiny_model_dir: Path, scan_set: gates.GateSet, tmp_path: Path
) -> None:
    """fm-export's step end to end, with a stand-in gate that fails while the first conv is INT8: the scan
    (on the step's own calibration ranges) ranks the units, they are kept in that order until the one
    holding the first conv is FP32, each recorded with why, and both files are timed."""
    from fashion_match.export.mixed_int8 import make_mixed

    s = load_manifest(tiny_model_dir).preprocess.size
    px = _pixels(32, s)
    first_conv = next(n.name for n in onnx.load(str(tiny_model_dir / FP32_ONNX)).graph.node if n.op_type == "Conv")

    def check(path: Path) -> dict:
        m = onnx.load(str(path))
        producers = {o: n.op_type for n in m.graph.node for o in n.output}
        conv = next(n for n in m.graph.node if n.name == first_conv)
        return {"instance_recall_at_1_drop_pts": 5.0 if producers.get(conv.input[1]) == "DequantizeLinear" else 0.0}

    summary, _ = make_mixed(
        tiny_model_dir / FP32_ONNX, tmp_path / "m.onnx", px, check, 0.5,
        target="onnxruntime", method="percentile", scan_data=lambda: scan_set, timing_pixels=lambda: px,
    )  # fmt: skip
    mixed = summary["mixed_precision"]
    kept = [k["unit"] for k in mixed["kept"]]
    assert kept and first_conv in mixed["kept"][-1]["nodes"]  # stopped as soon as the first conv was FP32
    assert all(first_conv not in k["nodes"] for k in mixed["kept"][:-1])
    assert [st["kept"] for st in mixed["steps"]] == [kept[:i] for i in range(len(kept) + 1)]
    assert all("alone" in k["why"] and "scan_data" in k["why"] for k in mixed["kept"])
    assert set(mixed["speed"]["images_per_s"]) == {"all_int8", "mixed"} and mixed["speed"]["batch"] == 32
