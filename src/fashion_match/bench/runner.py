"""The `fm-bench` loop: one row per backend x precision x batch size, never stopping at a failure.

For each backend x precision: open it (load time), embed every evaluation image once
(accuracy, cosine drift against the ONNX Runtime FP32 reference), then time each batch size
on decoded pixels (model latency) and on JPEG bytes (end to end: decode + resize + model).
A row that cannot run says why - `unavailable` (no artifact, library or device) or
`failed` (it ran and broke) - and the loop goes on.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fashion_match.bench.accuracy import all_outputs, attribute_figures, evaluate, pair_scores, roc_points
from fashion_match.bench.timing import FULL, QUICK, TimingPlan, measure, rotated_batches, summarise
from fashion_match.data.evalset import EvalSet, load_eval_set
from fashion_match.data.images import load_batch
from fashion_match.errors import BackendUnavailable, FmError
from fashion_match.formats import BACKENDS, PRECISIONS, lookup
from fashion_match.runtime.backend import embed_in_batches, open_backend, unavailable_reason
from fashion_match.runtime.manifest import Manifest, load_manifest

log = logging.getLogger(__name__)

ROW_KEYS = (  # every row; its accuracy figures are per dataset, in `metric_keys(datasets)` columns
    "backend",
    "precision",
    "batch_size",
    "status",
    "device",
    "size_mb",
    "max_cos_drift",
    "latency_ms_p50",
    "latency_ms_p99",
    "throughput_ips",
    "e2e_throughput_ips",
    "load_s",
)
METRICS = ("recall_at_1", "recall_at_10", "map_at_r", "pair_auc", "pair_accuracy")
EXAMPLE_QUERIES, EXAMPLE_K = 4, 5  # the grid of fixed queries drawn per dataset
DEFAULT_DATA = ("fashion-mnist", "fmnist-c2s")


def metric_key(dataset: str, metric: str) -> str:
    """The column of `metric` measured on `dataset`: every figure says what it was measured on."""
    return f"{dataset}/{metric}"


def metric_keys(datasets: list[str]) -> list[str]:
    return [metric_key(d, m) for d in datasets for m in METRICS]


DEFAULT_BATCHES = (1, 8, 32)
DEFAULT_BACKENDS = BACKENDS
DEFAULT_PRECISIONS = PRECISIONS


@dataclass(frozen=True)
class Sizes:
    """Evaluation subsample per dataset: (queries, gallery)."""

    category: tuple[int, int]
    instance: tuple[int, int]


FULL_SIZES = Sizes(category=(1000, 4000), instance=(500, 500))
QUICK_SIZES = Sizes(category=(100, 500), instance=(100, 100))


def with_head_data(model_dir: Path, data: tuple[str, ...]) -> tuple[str, ...]:
    """`data`, plus the data the model's tag heads or spaces were trained on (their figures need
    its attribute labels), when the model has heads and `data` lacks it."""
    from fashion_match.runtime.tagging import head_data

    heads = head_data(load_manifest(model_dir))
    return (*data, heads) if heads and heads not in data else data


@dataclass
class BenchConfig:
    model_dir: Path
    data: tuple[str, ...] = DEFAULT_DATA
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    batch_sizes: tuple[int, ...] = DEFAULT_BATCHES
    device: str = "auto"
    threads: int | None = None
    quick: bool = False

    @property
    def plan(self) -> TimingPlan:
        return QUICK if self.quick else FULL

    @property
    def sizes(self) -> Sizes:
        return QUICK_SIZES if self.quick else FULL_SIZES


@dataclass
class BenchResult:
    rows: list[dict[str, Any]]
    datasets: list[dict[str, Any]]
    model: dict[str, Any]
    roc: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)  # "backend/precision" -> curve
    operating: dict[str, tuple[float, float]] = field(default_factory=dict)  # (fpr, tpr) at the threshold
    examples: dict[str, list[Any]] = field(default_factory=dict)  # dataset -> result_grid.GridRow (FP32 reference)


def example_rows(es: EvalSet, q: np.ndarray, g: np.ndarray, threshold: float) -> list[Any]:
    """A few evenly spaced queries of `es` beside their top hits, for the report's picture."""
    from fashion_match.runtime.result_grid import GridRow

    picks = np.unique(np.linspace(0, len(q) - 1, min(EXAMPLE_QUERIES, len(q))).astype(int))
    sims = q[picks] @ g.T
    rows = []
    for qi, row in zip(picks, sims, strict=True):
        top = np.argsort(-row, kind="stable")[:EXAMPLE_K]
        matches = [
            {
                "rank": r + 1,
                "similarity": float(row[j]),
                "match": bool(row[j] >= threshold),
                "item_id": str(es.g_keys[j]),
            }
            for r, j in enumerate(top)
        ]
        label = f"{es.name} query {int(qi)} ({es.match_on.replace('_id', '')} {es.q_keys[qi]})"
        truth = "item" if es.instance_level else "category"
        hits = [es.g_pixels[j] for j in top]
        rows.append(GridRow(es.q_pixels[qi], label, matches, str(es.q_keys[qi]), sources=hits, key_name=truth))
    return rows


def _empty_row(backend: str, precision: str, batch: int, status: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(backend=backend, precision=precision, batch_size=batch, status=status)
    return row


def _jpegs(pixels: np.ndarray, n: int) -> list[bytes]:
    """Real JPEG files of the evaluation images, for the end-to-end rate (decode is part of the job)."""
    out = []
    for a in pixels[:n]:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _status_unavailable(manifest: Manifest, backend: str, precision: str, device: str) -> str | None:
    try:
        fmt = lookup(backend, precision)
    except FmError as e:
        return f"unavailable: {e}"
    if fmt.artifact not in manifest.artifacts:
        return f"unavailable: no {fmt.artifact} (make it with {fmt.made_by})"
    why = unavailable_reason(backend, device)
    return f"unavailable: {why}" if why else None


def run_bench(cfg: BenchConfig, say: Callable[[str], None] = lambda s: None) -> BenchResult:
    manifest = load_manifest(cfg.model_dir)
    spec = manifest.preprocess
    sets: list[EvalSet] = []
    for name in cfg.data:
        sets.append(load_eval_set(name, spec, cfg.sizes.category, cfg.sizes.instance))
        say(f"data   {sets[-1].name}: {sets[-1].description}")
    pool = np.concatenate([s.q_pixels for s in sets])
    jpegs = _jpegs(pool, max(cfg.batch_sizes) * 2)
    rows: list[dict[str, Any]] = []
    reference: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    result = BenchResult(rows, [], {})
    # the drift reference (ONNX Runtime fp32) runs first whatever the order asked; rows keep that order
    combos = [(b, p) for b in cfg.backends for p in cfg.precisions]
    order = {c: i for i, c in enumerate(combos)}
    combos.sort(key=lambda c: c != ("onnxruntime", "fp32"))
    for backend, precision in combos:
        status = _status_unavailable(manifest, backend, precision, cfg.device)
        if status:
            rows += [_empty_row(backend, precision, b, status) for b in cfg.batch_sizes]
            say(f"{backend:<12}{precision:<5} {status}")
            continue
        try:
            new_rows, embs = _bench_one(cfg, manifest, backend, precision, sets, pool, jpegs, reference)
        except Exception as e:  # noqa: BLE001 - a failing row records why; the loop goes on
            log.debug("row failed", exc_info=True)
            reason = " ".join(str(e).split())[:300] or type(e).__name__
            # a backend that cannot run this precision here (bf16 without bf16 units) is not a failure
            kind = "unavailable" if isinstance(e, BackendUnavailable) else "failed"
            rows += [_empty_row(backend, precision, b, f"{kind}: {reason}") for b in cfg.batch_sizes]
            say(f"{backend:<12}{precision:<5} {kind}: {reason}")
            continue
        if backend == "onnxruntime" and precision == "fp32":
            reference = embs
            result.examples = {s.name: example_rows(s, *embs[s.name], manifest.threshold) for s in sets}
        rows += new_rows
        key = f"{backend}/{precision}"
        inst = [s for s in sets if s.instance_level] or sets
        q, g = embs[inst[0].name]
        pos, neg = pair_scores(q, inst[0].q_keys, g, inst[0].g_keys)
        fpr, tpr = roc_points(pos, neg)
        result.roc[key] = (fpr.tolist(), tpr.tolist())
        result.operating[key] = (float((neg >= manifest.threshold).mean()), float((pos >= manifest.threshold).mean()))
        r = new_rows[-1]
        say(
            f"{backend:<12}{precision:<5} "
            + "  ".join(f"R@1 {n} {r[metric_key(n, 'recall_at_1')]:.4f}" for n in (x.name for x in sets))
            + f"  load {r['load_s']:.2f}s  "
            + "  ".join(
                f"b{x['batch_size']}: {x['latency_ms_p50']:.1f} ms, {x['throughput_ips']:.0f} img/s" for x in new_rows
            )
        )
    if reference is None:  # drift is against ONNX Runtime FP32; without it there is nothing to compare
        for row in rows:
            row["max_cos_drift"] = None
    rows.sort(key=lambda r: (order[(r["backend"], r["precision"])], cfg.batch_sizes.index(r["batch_size"])))
    result.datasets = [
        {
            "name": s.name,
            "description": s.description,
            "match_on": s.match_on,
            "queries": len(s.q_keys),
            "gallery": len(s.g_keys),
            "skipped_files": s.skipped,
        }
        for s in sets
    ]
    result.model = {
        "dir": str(manifest.folder),
        "name": manifest.model,
        "id": manifest.short_id(),
        "embedding_dim": manifest.embedding_dim,
        "input_size": spec.size,
        "threshold": manifest.threshold,
    }
    return result


def _bench_one(
    cfg: BenchConfig,
    manifest: Manifest,
    backend: str,
    precision: str,
    sets: list[EvalSet],
    pool: np.ndarray,
    jpegs: list[bytes],
    reference: dict[str, tuple[np.ndarray, np.ndarray]] | None,
) -> tuple[list[dict[str, Any]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    fmt = lookup(backend, precision)
    size_mb = (manifest.folder / fmt.artifact).stat().st_size / 1e6
    t0 = time.perf_counter()
    be = open_backend(manifest.folder, backend, precision, device=cfg.device, threads=cfg.threads, manifest=manifest)
    load_s = time.perf_counter() - t0
    try:
        outputs = be.outputs
        extra = be.reads_outputs and bool(manifest.data.get("tags") or manifest.data.get("spaces"))
        if extra:  # one pass gives the embedding and the tag / space outputs together
            outs = {s.name: (all_outputs(outputs, s.q_pixels), all_outputs(outputs, s.g_pixels)) for s in sets}
            # the graph's first output is the embedding (export.torch2onnx.output_names)
            embs = {n: (next(iter(q.values())), next(iter(g.values()))) for n, (q, g) in outs.items()}
        else:
            embs = {
                s.name: (embed_in_batches(be.embed, s.q_pixels), embed_in_batches(be.embed, s.g_pixels)) for s in sets
            }
        scores = {s.name: evaluate(*embs[s.name], s, manifest.threshold) for s in sets}
        drift = None
        if reference is not None:
            cos = np.concatenate([np.sum(embs[n][i] * reference[n][i], axis=1) for n in embs for i in (0, 1)])
            drift = float(max(0.0, 1.0 - cos.min()))
        elif backend == "onnxruntime" and precision == "fp32":
            drift = 0.0
        attr_figs: dict[str, float] = {}
        if extra:
            for es in sets:
                figs = attribute_figures(*outs[es.name], es, manifest)
                attr_figs |= {metric_key(es.name, k): v for k, v in figs.items()}
        rows = []
        for b in cfg.batch_sizes:
            batches = rotated_batches(pool, b)
            timing = summarise(measure(be.embed, batches, cfg.plan), b)
            if extra:  # what the tag and space outputs cost on top
                timing["outputs_latency_ms_p50"] = summarise(measure(outputs, batches, cfg.plan), b)["latency_ms_p50"]
            e2e = _e2e_rate(be.embed, jpegs, b, manifest, cfg.plan)
            row = _empty_row(backend, precision, b, "ok")
            row.update({metric_key(n, m): sc[m] for n, sc in scores.items() for m in METRICS})
            row.update(attr_figs)
            row.update(
                size_mb=round(size_mb, 2),
                max_cos_drift=drift,
                load_s=round(load_s, 3),
                e2e_throughput_ips=round(e2e, 1),
                device=be.info.device,
                by_dataset=scores,
                **timing,
            )
            rows.append(row)
        return rows, embs
    finally:
        be.close()


def _e2e_rate(embed: Any, jpegs: list[bytes], batch: int, manifest: Manifest, plan: TimingPlan) -> float:
    """Images/s from JPEG bytes to embeddings: decode, resize and model, batch by batch."""
    spec = manifest.preprocess
    chunks = [jpegs[(i * batch) % len(jpegs) :][:batch] for i in range(4)]
    chunks = [c if len(c) == batch else (c + jpegs)[:batch] for c in chunks]

    def step(i: np.ndarray) -> None:
        embed(load_batch(chunks[int(i[0, 0, 0, 0]) % len(chunks)], spec).pixels)

    markers = [np.full((1, 1, 1, 1), k, np.uint8) for k in range(len(chunks))]
    seconds = measure(
        step, markers, TimingPlan(plan.warmup, max(3, plan.min_runs // 2), plan.max_runs, plan.min_seconds / 2)
    )
    return batch / float(np.median(seconds))
