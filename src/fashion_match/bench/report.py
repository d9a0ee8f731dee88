"""`report.md`, `report.json`, `report.csv` and `pareto.png` from one benchmark run (atomic writes)."""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

from fashion_match.bench.runner import ROW_KEYS, BenchResult
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
    return _clean(
        {
            "machine": machine,
            "model": result.model,
            "dataset": {
                "sets": result.datasets,
                "primary": result.datasets[0]["name"] if result.datasets else None,
                "note": "recall_at_1/recall_at_10/map_at_r: the first set; pair_auc/pair_accuracy: the first "
                "item-level set (its consumer/shop pairs), at the model's calibrated threshold",
            },
            "command": command,
            "settings": settings,
            "rows": result.rows,
        }
    )


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


def markdown(report: dict[str, Any]) -> str:
    m, model, rows = report["machine"], report["model"], report["rows"]
    sets = report["dataset"]["sets"]
    names = [s["name"] for s in sets]
    lines = [
        f"# fm-bench: {model['name']}",
        "",
        f"- Command: `{report['command']}`",
        f"- Machine: {m['cpu']}, {m['cores']} cores"
        + (f", GPUs: {'; '.join(m['gpus'])}" if m.get("gpus") else ", no GPU")
        + f"; {', '.join(f'{k} {v}' for k, v in m['packages'].items())}"
        + _runs_with(m.get("imported", {})),
        f"- Model: `{model['id']}`, {model['embedding_dim']}-d, {model['input_size']} px input, "
        f"threshold {model['threshold']:.3f}",
    ]
    for s in sets:
        lines.append(f"- Data `{s['name']}`: {s['description']}")
    lines += [
        f"- Timing: {report['settings']['timing']}",
        "",
        "| backend | precision | device | batch | status | MB | "
        + " | ".join(f"R@1 {n}" for n in names)
        + " | R@10 | mAP@R | pair AUC | pair acc | max cos drift | p50 ms | p99 ms | img/s | e2e img/s | load s |",
        "|" + "---|" * (15 + len(names)),
    ]
    for r in rows:
        by = r.get("by_dataset") or {}
        ok = r["status"] == "ok"
        status = r["status"] if len(r["status"]) < 60 else r["status"][:57] + "..."
        lines.append(
            "| "
            + " | ".join(
                [
                    r["backend"],
                    r["precision"],
                    r.get("device") or "–",
                    str(r["batch_size"]),
                    status,
                    _fmt(r["size_mb"], 1),
                    *[_fmt(by.get(n, {}).get("recall_at_1")) if ok else "–" for n in names],
                    _fmt(r["recall_at_10"]),
                    _fmt(r["map_at_r"]),
                    _fmt(r["pair_auc"]),
                    _fmt(r["pair_accuracy"]),
                    _fmt(r["max_cos_drift"], 5),
                    _fmt(r["latency_ms_p50"], 2),
                    _fmt(r["latency_ms_p99"], 2),
                    _fmt(r["throughput_ips"], 0),
                    _fmt(r["e2e_throughput_ips"], 0),
                    _fmt(r["load_s"], 2),
                ]
            )
            + " |"
        )
    lines += [
        "",
        "img/s = batch / median latency on decoded pixels; e2e img/s also decodes and resizes JPEG files. "
        "max cos drift = 1 - the lowest cosine between this row's embeddings and ONNX Runtime FP32's on the "
        "same images. Recalls are fractions. A status other than `ok` says why the row has no numbers.",
        "",
        "![accuracy vs latency](pareto.png)",
        "",
    ]
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*ROW_KEYS, "device"], extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in [*ROW_KEYS, "device"]})
    with atomic_open(path, "w") as f:
        f.write(buf.getvalue())


def plot(report: dict[str, Any], roc: dict[str, tuple[list[float], list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ok = [r for r in report["rows"] if r["status"] == "ok" and r["recall_at_1"] is not None]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    points = [(r["latency_ms_p50"] / r["batch_size"], r["recall_at_1"]) for r in ok]
    front = set(pareto_front(points))
    markers = {"fp32": "o", "fp16": "s", "int8": "^"}
    colours: dict[str, Any] = {}
    for i, (r, (x, y)) in enumerate(zip(ok, points, strict=True)):
        key = f"{r['backend']} {r['precision']}"
        first = key not in colours
        colours.setdefault(key, f"C{len(colours)}")
        ax.scatter(
            x,
            y,
            marker=markers.get(r["precision"], "o"),
            color=colours[key],
            s=80 if i in front else 40,
            edgecolors="black" if i in front else "none",
            zorder=3,
            label=key if first else None,
        )
        ax.annotate(f"b{r['batch_size']}", (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    fp = sorted((points[i] for i in front), key=lambda p: p[0])
    ax.plot([p[0] for p in fp], [p[1] for p in fp], "k--", lw=1, label="Pareto front (black edge)")
    ax.legend(loc="best", fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("latency per image, ms (median batch latency / batch size; log scale)")
    ax.set_ylabel(f"Recall@1 on {report['dataset']['primary']}")
    ax.set_title("Accuracy against latency")
    ax.grid(alpha=0.3)
    for key, (fpr, tpr) in roc.items():
        ax2.plot(fpr, tpr, label=key, lw=1.2)
    ax2.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    inst = next((s for s in report["dataset"]["sets"] if s["match_on"] == "item_id"), report["dataset"]["sets"][0])
    ax2.set_title(f"Verification ROC ({inst['name']} pairs)")
    ax2.set_xlabel("false positive rate")
    ax2.set_ylabel("true positive rate")
    ax2.legend(loc="lower right", fontsize=8)
    ax2.grid(alpha=0.3)
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
    out.mkdir(parents=True, exist_ok=True)
    rep = report_dict(result, machine, command, settings)
    write_json_atomic(out / "report.json", rep)
    write_csv(rep["rows"], out / "report.csv")
    with atomic_open(out / "report.md", "w") as f:
        f.write(markdown(rep))
    plot(rep, result.roc, out / "pareto.png")
    return rep


def load_rows(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text(encoding="utf-8"))["rows"])
