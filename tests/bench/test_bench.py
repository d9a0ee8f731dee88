"""fm-bench: the report schema, failing rows, and --min-recall's exit status (tiny model, tiny data)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fashion_match.bench.report import pareto_front, write_report
from fashion_match.bench.runner import ROW_KEYS, BenchConfig, metric_key, metric_keys, run_bench
from fashion_match.export.pipeline import ExportOptions, run_export
from fashion_match.formats import ONNX_FILES, PRECISIONS

EXE = Path(sys.executable).parent / "fm-bench"
GATE = {"gate_queries": 100, "gate_gallery": 500, "gate_verification": None}


def test_pareto_front() -> None:
    pts = [(1.0, 0.5), (2.0, 0.9), (3.0, 0.8), (0.5, 0.4), (2.0, 0.7)]
    assert sorted(pareto_front(pts)) == [0, 1, 3]


def test_report_schema_and_files(model_copy: Path, tiny_fmnist: Path, tmp_path: Path) -> None:
    run_export(model_copy, None, ExportOptions(precisions=("fp16",), **GATE), lambda s: None)
    cfg = BenchConfig(
        model_copy,
        data=(f"fashion-mnist:{tiny_fmnist}",),
        backends=("onnxruntime", "openvino", "torch", "tensorrt"),
        precisions=PRECISIONS,
        batch_sizes=(1, 4),
        device="cpu",
        quick=True,
    )
    result = run_bench(cfg)
    spec = f"fashion-mnist:{tiny_fmnist}"
    out = tmp_path / "report dir"
    rep = write_report(
        result, out, {"cpu": "test", "cores": 2, "gpus": [], "packages": {}}, "fm-bench", {"timing": "t"}
    )
    assert {p.name for p in out.iterdir()} >= {"report.md", "report.json", "report.csv", "pareto.png"}
    data = json.loads((out / "report.json").read_text())
    assert set(data) >= {"machine", "model", "dataset", "rows"}
    rows = data["rows"]
    assert len(rows) == 4 * len(PRECISIONS) * 2
    assert data["columns"] == [*ROW_KEYS, *metric_keys([spec])]
    assert data["resolution"] == {spec: 10.0}  # 10 queries in the tiny set: one is 10 points
    for r in rows:
        assert set(ROW_KEYS) <= set(r) and "recall_at_1" not in r  # no figure without its dataset
    by = {(r["backend"], r["precision"], r["batch_size"]): r for r in rows}

    def fig(r: dict, m: str) -> float:
        return r[metric_key(spec, m)]

    for key in [("onnxruntime", "fp32", 1), ("onnxruntime", "fp16", 4), ("torch", "fp32", 4), ("openvino", "fp16", 4)]:
        r = by[key]
        assert r["status"] == "ok"
        assert 0 <= fig(r, "recall_at_1") <= fig(r, "recall_at_10") <= 1
        assert all(0 <= fig(r, m) <= 1 for m in ("map_at_r", "pair_auc", "pair_accuracy"))
        assert r["latency_ms_p50"] <= r["latency_ms_p99"] and r["throughput_ips"] > 0 and r["e2e_throughput_ips"] > 0
        assert r["size_mb"] > 0 and r["load_s"] >= 0
    assert by[("onnxruntime", "fp32", 1)]["max_cos_drift"] == 0.0
    assert 0 < by[("onnxruntime", "fp16", 1)]["max_cos_drift"] < 0.01
    assert by[("torch", "fp32", 1)]["max_cos_drift"] < 1e-4
    assert by[("openvino", "fp32", 1)]["max_cos_drift"] < 1e-4  # FP32 arithmetic, not OpenVINO's bf16 default
    # refused by the manifest's own check (Manifest.artifact), reported as unavailable, not failed
    assert by[("openvino", "bf16", 1)]["status"] == (
        f"unavailable: {model_copy}: bf16 execution of model.onnx on openvino has not passed the accuracy gate; "
        f"gate it with fm-export --bf16 {model_copy}"
    )
    assert by[("onnxruntime", "bf16", 1)]["status"].startswith("unavailable: backend 'onnxruntime' has no 'bf16'")
    # throughput is batch / median latency
    r = by[("onnxruntime", "fp32", 4)]
    assert r["throughput_ips"] == pytest.approx(4 / (r["latency_ms_p50"] / 1000), rel=0.01)
    assert by[("onnxruntime", "int8", 1)]["status"].startswith(f"unavailable: no {ONNX_FILES['int8']}")
    assert by[("tensorrt", "fp32", 1)]["status"].startswith("unavailable")
    assert by[("torch", "fp16", 1)]["status"].startswith("unavailable")
    assert by[("onnxruntime", "int8", 1)].get(metric_key(spec, "recall_at_1")) is None
    with open(out / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and list(table[0]) == data["columns"]
    assert float(table[0][metric_key(spec, "pair_auc")]) == by[("onnxruntime", "fp32", 1)][metric_key(spec, "pair_auc")]
    md = (out / "report.md").read_text()
    assert "| onnxruntime | fp16 | cpu | 4 |" in md and "pareto.png" in md
    assert f"R@1 {spec}" in md and f"mAP@R {spec}" in md and "10 points of Recall@1" in md
    # rows that did not run: listed once below the table with their whole reason, not as table rows
    assert "| torch | fp16 |" not in md and "..." not in md
    assert "- torch fp16 (batch 1, 4): unavailable: backend 'torch' has no 'fp16' format (it supports: fp32)" in md
    # the fixed queries of each dataset, drawn from the FP32 reference
    from PIL import Image

    grid = out / data["examples"][spec]
    with Image.open(grid) as im:
        assert im.format == "PNG" and im.width > 6 * 128 and im.height > 4 * 128
    assert data["examples"][spec] in md
    assert rep["rows"] == rows


def test_a_failing_backend_becomes_a_failed_row(model_copy: Path, tiny_fmnist: Path) -> None:
    run_export(model_copy, None, ExportOptions(precisions=("fp16",), **GATE), lambda s: None)
    with open(model_copy / ONNX_FILES["fp16"], "r+b") as f:  # corrupt it after the manifest recorded its hash
        f.seek(100)
        f.write(b"\0" * 16)
    cfg = BenchConfig(
        model_copy,
        data=(f"fashion-mnist:{tiny_fmnist}",),
        backends=("onnxruntime",),
        precisions=("fp16", "fp32"),
        batch_sizes=(2,),
        device="cpu",
        quick=True,
    )
    rows = run_bench(cfg).rows
    assert rows[0]["status"].startswith("failed:") and "sha256" in rows[0]["status"]
    assert rows[0]["latency_ms_p50"] is None
    assert rows[1]["status"] == "ok"  # the loop went on


def _bench(model: Path, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [
        "--model",
        str(model),
        "--data",
        f"fashion-mnist:{data}",
        "--backends",
        "onnxruntime",
        "--precisions",
        "fp32",
        "--batch-sizes",
        "1,2",
        "--quick",
        "--out",
        str(out),
        *extra,
    ]
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=300)


def test_min_recall_exit_status(model_copy: Path, tiny_fmnist: Path, tmp_path: Path) -> None:
    ok = _bench(model_copy, tiny_fmnist, tmp_path / "a", "--min-recall", "0")
    assert ok.returncode == 0, ok.stderr
    r1 = json.loads((tmp_path / "a" / "report.json").read_text())["rows"][0][
        metric_key(f"fashion-mnist:{tiny_fmnist}", "recall_at_1")
    ]
    assert r1 < 1.0
    low = _bench(model_copy, tiny_fmnist, tmp_path / "b", "--min-recall", "1")
    assert low.returncode == 1 and "below --min-recall 1.0" in low.stderr
    bad = _bench(model_copy, tiny_fmnist, tmp_path / "c", "--precisions", "fp64")
    assert bad.returncode == 2 and "fp64" in bad.stderr and "Traceback" not in bad.stderr


def test_drift_reference_runs_first_but_rows_keep_the_asked_order(model_copy: Path, tiny_fmnist: Path) -> None:
    cfg = BenchConfig(
        model_copy,
        data=(f"fashion-mnist:{tiny_fmnist}",),
        backends=("torch", "onnxruntime"),
        precisions=("fp32",),
        batch_sizes=(4, 1),
        device="cpu",
        quick=True,
    )
    rows = run_bench(cfg).rows
    assert [(r["backend"], r["batch_size"]) for r in rows] == [
        ("torch", 4),
        ("torch", 1),
        ("onnxruntime", 4),
        ("onnxruntime", 1),
    ]
    assert rows[0]["max_cos_drift"] is not None and rows[0]["max_cos_drift"] < 1e-4


def test_machine_records_the_onnxruntime_this_process_imports() -> None:
    """onnxruntime and onnxruntime-gpu install one module: the report names the one in use and its
    providers (an H100 report listed both distributions and could not say which had run)."""
    import onnxruntime as ort

    from fashion_match.bench.machine import machine_info
    from fashion_match.bench.report import markdown

    m = machine_info()
    assert m["imported"]["onnxruntime"] == {"version": ort.__version__, "providers": ort.get_available_providers()}
    report = {
        "machine": m,
        "model": {"name": "m", "id": "m@1", "embedding_dim": 8, "input_size": 32, "threshold": 0.5},
        "dataset": {"sets": []},
        "settings": {"timing": "t"},
        "command": "fm-bench",
        "rows": [],
    }
    line = next(x for x in markdown(report).splitlines() if x.startswith("- Machine:"))
    assert line.endswith(f"; imported onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())})")


def test_a_benchmark_writes_only_where_it_is_asked(tmp_path: Path) -> None:
    """Trying a benchmark never rewrites a committed record: --out or --record says where."""
    import subprocess
    import sys

    from tests.conftest import REPO

    record = REPO / "benchmarks" / "results" / "search_speed.json"
    before = record.read_bytes()
    small = ["--gallery", "3000", "--dim", "16", "--queries", "20", "--naive-queries", "5", "--json"]
    script = str(REPO / "benchmarks" / "search_speed.py")
    r = subprocess.run([sys.executable, script, *small], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert record.read_bytes() == before
    out = tmp_path / "mine.json"
    r = subprocess.run([sys.executable, script, *small, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and json.loads(out.read_text())["gallery"] == 3000
    assert record.read_bytes() == before


def test_every_mutant_still_names_code_that_exists() -> None:
    """bash dev.sh mutate applies each hand-written mutant to its module: one whose text no longer
    occurs once (the code moved on) would stop the run, so it is caught here, in CI."""
    from tests.conftest import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from mutants import MUTANTS
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    stale = [m["id"] for m in MUTANTS if (REPO / "src/fashion_match" / m["file"]).read_text().count(m["old"]) != 1]
    assert not stale and len(MUTANTS) > 30


def test_a_backend_that_cannot_run_a_precision_here_is_unavailable_not_failed(
    model_copy: Path, tiny_fmnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("openvino")
    from fashion_match.runtime import openvino_backend

    man = json.loads((model_copy / "manifest.json").read_text())  # as if gated on another machine
    man["artifacts"]["model.onnx"]["execution_gates"] = {"openvino/bf16": {"passed": True}}
    (model_copy / "manifest.json").write_text(json.dumps(man))
    monkeypatch.setattr(openvino_backend, "cpu_capabilities", lambda ov=None: ["FP32", "INT8"])  # a CPU without
    cfg = BenchConfig(
        model_copy,
        data=(f"fashion-mnist:{tiny_fmnist}",),
        backends=("openvino",),
        precisions=("bf16",),
        batch_sizes=(1,),
        device="cpu",
        quick=True,
    )
    (row,) = run_bench(cfg).rows
    assert row["status"].startswith("unavailable: --precision bf16: this CPU has no bf16 units"), row["status"]
