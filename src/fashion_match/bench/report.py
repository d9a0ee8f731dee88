"""`report.md`, `report.json`, `report.csv` and `pareto.png` from one benchmark run (atomic writes)."""

from __future__ import annotations

import csv
import io
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

from fashion_match.bench.runner import ROW_KEYS, BenchResult, metric_key, metric_keys
from fashion_match.fileio import atomic_open, write_json_atomic


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def report_dict(result: BenchResult, machine: dict[str, Any], command: str, settings: dict[str, Any]) -> dict:
    names = [d["name"] for d in result.datasets]
    return _clean(
        {
            "machine": machine,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "model": result.model,
            "dataset": {
                "sets": result.datasets,
                "note": "every accuracy figure is keyed DATASET/METRIC; pair_auc and pair_accuracy rate the "
                "query x gallery pairs of that dataset, at the model's calibrated threshold",
            },
            "resolution": resolution(result.datasets),
            "command": command,
            "settings": settings,
            "columns": [*ROW_KEYS, *metric_keys(names), *extra_columns(result.rows, names)],
            "rows": result.rows,
        }
    )


def extra_columns(rows: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Columns beyond the fixed ones: attribute figures (DATASET/space_map/NAME, ...) and the
    latency of a model's extra outputs, in first-seen order."""
    seen: dict[str, None] = {}
    for r in rows:
        for k in r:
            if is_attribute_column(k):
                seen.setdefault(k, None)
    return list(seen)


def is_attribute_column(key: str) -> bool:
    return "/space_map/" in key or "/tag_map/" in key or "/tag_accuracy/" in key or key == "outputs_latency_ms_p50"


def resolution(datasets: list[dict[str, Any]]) -> dict[str, float]:
    """Points of Recall@1 that one query is worth, per dataset: differences below it are noise."""
    return {d["name"]: round(100.0 / max(1, d["queries"]), 4) for d in datasets}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both (lower x = latency, higher y = accuracy)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return front


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _runs_with(imported: dict[str, Any]) -> str:
    ort = imported.get("onnxruntime")
    return f"; imported onnxruntime {ort['version']} ({', '.join(ort['providers'])})" if ort else ""


def _not_run(rows: list[dict[str, Any]]) -> list[str]:
    """One line per backend x precision that has no figures, with its whole reason."""
    seen: dict[tuple[str, str], tuple[str, list[int]]] = {}
    for r in rows:
        if r["status"] != "ok":
            seen.setdefault((r["backend"], r["precision"]), (r["status"], []))[1].append(r["batch_size"])
    return [f"- {b} {p} (batch {', '.join(map(str, bs))}): {status}" for (b, p), (status, bs) in seen.items()]


def markdown(report: dict[str, Any]) -> str:
    m, model, rows = report["machine"], report["model"], report["rows"]
    sets = report["dataset"]["sets"]
    names = [s["name"] for s in sets]
    inst = [s["name"] for s in sets if s.get("match_on") == "item_id"]
    lines = [
        f"# fm-bench: {model['name']}",
        "",
        f"- Command: `{report['command']}`" + (f", {report['date']}" if report.get("date") else ""),
        f"- Machine: {m['cpu']}, {m['cores']} cores"
        + (f", GPUs: {'; '.join(m['gpus'])}" if m.get("gpus") else ", no GPU")
        + f"; {', '.join(f'{k} {v}' for k, v in m['packages'].items())}"
        + _runs_with(m.get("imported", {})),
        f"- Model: `{model['id']}`, {model['embedding_dim']}-d, {model['input_size']} px input, "
        f"threshold {model['threshold']:.3f}",
    ]
    for s in sets:
        lines.append(f"- Data `{s['name']}`: {s['description']}")
    res = report.get("resolution") or {}
    if res:
        lines.append(
            "- Resolution: one query is "
            + ", ".join(f"{v:g} point{'s' if v != 1 else ''} of Recall@1 on `{k}`" for k, v in res.items())
            + "; smaller differences are noise."
        )
    lines += [f"- Timing: {report['settings']['timing']}", ""]
    cols = [(f"R@1 {n}", metric_key(n, "recall_at_1"), 4) for n in names]
    cols += [(f"R@10 {n}", metric_key(n, "recall_at_10"), 4) for n in names]
    cols += [(f"mAP@R {n}", metric_key(n, "map_at_r"), 4) for n in names]
    cols += [(f"pair AUC {n}", metric_key(n, "pair_auc"), 4) for n in inst]
    cols += [(f"pair acc {n}", metric_key(n, "pair_accuracy"), 4) for n in inst]
    cols += [
        ("max cos drift", "max_cos_drift", 5),
        ("p50 ms", "latency_ms_p50", 2),
        ("p99 ms", "latency_ms_p99", 2),
        ("img/s", "throughput_ips", 0),
        ("e2e img/s", "e2e_throughput_ips", 0),
        ("load s", "load_s", 2),
    ]
    lines += [
        "| backend | precision | device | batch | MB | " + " | ".join(c[0] for c in cols) + " |",
        "|" + "---|" * (5 + len(cols)),
    ]
    for r in (r for r in rows if r["status"] == "ok"):
        cells = [r["backend"], r["precision"], r.get("device") or "–", str(r["batch_size"]), _fmt(r["size_mb"], 1)]
        lines.append("| " + " | ".join(cells + [_fmt(r.get(k), d) for _, k, d in cols]) + " |")
    extras = [
        c for c in report.get("columns", []) if "/space_map/" in c or "/tag_" in c or c == "outputs_latency_ms_p50"
    ]
    shown = [r for r in rows if r["status"] == "ok" and any(r.get(c) is not None for c in extras)]
    if shown:
        lines += [
            "",
            "Attribute outputs (space mAP: ASEN protocol on the set's queries and gallery; tag figures over both;"
            " outputs p50: the latency of all outputs against the embedding's p50):",
        ]
        for r in shown:
            figs = ", ".join(
                f"{c} {_fmt(r.get(c))}" for c in extras if c != "outputs_latency_ms_p50" and r.get(c) is not None
            )
            lat = f"; outputs p50 {_fmt(r.get('outputs_latency_ms_p50'), 2)} ms vs {_fmt(r['latency_ms_p50'], 2)} ms"
            lines.append(f"- {r['backend']} {r['precision']} batch {r['batch_size']}: {figs}{lat}")
    missing = _not_run(rows)
    if missing:
        lines += ["", "Not run here, and why:", *missing]
    lines += [
        "",
        "img/s = batch / median latency on decoded pixels; e2e img/s also decodes and resizes JPEG files. "
        "max cos drift = 1 - the lowest cosine between this row's embeddings and ONNX Runtime FP32's on the "
        "same images. Recalls are fractions. pair AUC / acc: every query x gallery pair of that dataset, "
        "accuracy balanced at the model's threshold. report.json and report.csv hold every figure.",
        "",
        "![accuracy vs latency](pareto.png)",
        "",
    ]
    for name in report.get("examples", []):
        lines += [f"![{name}: fixed queries and their top hits]({example_file(name)})", ""]
    return "\n".join(lines)


def example_file(dataset: str) -> str:
    return "examples-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset)[:60] + ".png"


def write_csv(report: dict[str, Any], path: Path) -> None:
    cols = report["columns"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in report["rows"]:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue().encode("utf-8"))


def _accuracy_panel(ax: Any, rows: list[dict[str, Any]], dataset: str, what: str) -> None:
    """Recall@1 on `dataset` against latency per image; one colour per backend x precision, marker
    size by batch size (a legend, not labels, so nothing overlaps), the Pareto front dashed."""
    import matplotlib.ticker

    key = metric_key(dataset, "recall_at_1")
    ok = [r for r in rows if r.get(key) is not None and r.get("latency_ms_p50")]
    points = [(r["latency_ms_p50"] / r["batch_size"], r[key]) for r in ok]
    front = set(pareto_front(points))
    batches = sorted({r["batch_size"] for r in ok})
    size = {b: 30 + 60 * i for i, b in enumerate(batches)}
    markers = {"fp32": "o", "fp16": "s", "int8": "^"}
    colours: dict[str, str] = {}
    for i, (r, (x, y)) in enumerate(zip(ok, points, strict=True)):
        series = f"{r['backend']} {r['precision']}"
        first = series not in colours
        colours.setdefault(series, f"C{len(colours)}")
        ax.scatter(
            x,
            y,
            marker=markers.get(r["precision"], "o"),
            color=colours[series],
            s=size[r["batch_size"]],
            edgecolors="black" if i in front else "none",
            linewidths=1.2,
            alpha=0.85,
            zorder=3,
            label=series if first else None,
        )
    fp = sorted((points[i] for i in front), key=lambda q: q[0])
    ax.plot([q[0] for q in fp], [q[1] for q in fp], "k--", lw=1, label="Pareto front (black edge)")
    for b in batches:  # the marker-size key
        ax.scatter([], [], s=size[b], color="grey", label=f"batch {b}")
    ax.legend(loc="best", fontsize=7, ncol=2)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("ms per image (median batch latency / batch; log)")
    ax.set_ylabel(f"Recall@1 on {dataset}")
    ax.set_title(f"{what} retrieval: {dataset}", fontsize=10)
    ax.grid(alpha=0.3, which="both")


def plot(report: dict[str, Any], result: BenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = report["dataset"]["sets"]
    inst = next((s for s in sets if s["match_on"] == "item_id"), None)
    cat = next((s for s in sets if s["match_on"] != "item_id"), None)
    panels = [(s, w) for s, w in ((inst, "Instance"), (cat, "Category")) if s is not None]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(6 * (len(panels) + 1), 5.4))
    rows = [r for r in report["rows"] if r["status"] == "ok"]
    for ax, (s, what) in zip(axes, panels, strict=False):
        _accuracy_panel(ax, rows, s["name"], what)
    roc_ax = axes[-1]
    for i, (key, (fpr, tpr)) in enumerate(result.roc.items()):
        roc_ax.plot(fpr, tpr, label=key, lw=1.2, color=f"C{i}")
        if key in result.operating:
            x, y = result.operating[key]
            roc_ax.scatter([x], [y], marker="x", s=60, color=f"C{i}", zorder=4)
    roc_ax.scatter([], [], marker="x", color="black", label=f"at the threshold {report['model']['threshold']:.3f}")
    roc_ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    pairs = (inst or sets[0])["name"] if sets else "?"
    roc_ax.set_title(f"Verification ROC ({pairs} query x gallery pairs)", fontsize=10)
    roc_ax.set_xlabel("false positive rate")
    roc_ax.set_ylabel("true positive rate")
    roc_ax.legend(loc="lower right", fontsize=7)
    roc_ax.grid(alpha=0.3)
    m = report["machine"]
    fig.suptitle(
        f"{report['model']['name']} on {m['cpu']} ({m['cores']} cores)"
        + (f", {m['gpus'][0]}" if m.get("gpus") else ""),
        fontsize=10,
    )
    with warnings.catch_warnings():  # a glyph missing from the font (odd dataset paths) is not the user's problem
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def write_report(result: BenchResult, out: Path, machine: dict[str, Any], command: str, settings: dict) -> dict:
    from fashion_match.runtime.result_grid import draw_grid

    out.mkdir(parents=True, exist_ok=True)
    rep = report_dict(result, machine, command, settings)
    rep["examples"] = {name: example_file(name) for name in result.examples}
    for name, rows in result.examples.items():
        title = f"{name}: fixed queries, ONNX Runtime FP32"
        draw_grid(rows, result.model["threshold"], out / example_file(name), title=title)
    write_json_atomic(out / "report.json", rep)
    write_csv(rep, out / "report.csv")
    with atomic_open(out / "report.md", "wb") as f:
        f.write(markdown(rep).encode("utf-8"))
    plot(rep, result, out / "pareto.png")
    return rep


def load_rows(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text(encoding="utf-8"))["rows"])
