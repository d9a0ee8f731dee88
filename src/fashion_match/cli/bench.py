"""`fm-bench`: accuracy against latency for every backend x precision x batch size."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from fashion_match.cli.common import debug_option, entrypoint
from fashion_match.cli.options import device_option
from fashion_match.formats import BACKENDS, PRECISIONS


def _csv(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _ints(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers such as 1,8,32") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"{value!r}: batch sizes must be >= 1")
    return out


@click.command(help="Benchmark a model: accuracy, latency and throughput per backend x precision x batch size.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), help="Model directory [default: embedded].")
@click.option(
    "--data",
    default="fashion-mnist,fmnist-c2s",
    show_default=True,
    callback=_csv,
    help="Dataset specs. By default a model with tag heads or attribute spaces adds the data they were trained on.",
)
@click.option("--backends", default=",".join(BACKENDS), show_default=True, callback=_csv)
@click.option("--precisions", default=",".join(PRECISIONS), show_default=True, callback=_csv)
@click.option("--batch-sizes", default="1,8,32", show_default=True, callback=_ints)
@device_option()
@click.option("--threads", type=click.IntRange(1, 256), help="Inference threads (CPU backends).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-report"), show_default=True)
@click.option(
    "--quick",
    is_flag=True,
    help="For trying things: 100 queries per dataset and short timing runs (it says how noisy).",
)
@click.option(
    "--min-recall",
    type=click.FloatRange(0, 1),
    help="Exit 1 when an ok row's Recall@1 on the first --data is below this.",
)
@debug_option
def cli(
    model_dir: Path | None,
    data: tuple[str, ...],
    backends: tuple[str, ...],
    precisions: tuple[str, ...],
    batch_sizes: tuple[int, ...],
    device: str,
    threads: int | None,
    out: Path,
    quick: bool,
    min_recall: float | None,
) -> None:
    from fashion_match.bench.machine import machine_info
    from fashion_match.bench.report import write_report
    from fashion_match.bench.runner import BenchConfig, run_bench
    from fashion_match.errors import UsageError, require
    from fashion_match.fileio import check_output_dir
    from fashion_match.formats import BACKENDS, PRECISIONS
    from fashion_match.runtime.manifest import default_model_dir

    bad = [b for b in backends if b not in BACKENDS] + [p for p in precisions if p not in PRECISIONS]
    if bad or not backends or not precisions or not data:
        raise UsageError(
            f"unknown or empty choice {bad}: backends are {', '.join(BACKENDS)}; precisions {', '.join(PRECISIONS)}"
        )
    # what the report needs, checked before minutes of benchmarking rather than after
    require("matplotlib", "bench")
    check_output_dir(out, "report folder (--out)")
    folder = model_dir or default_model_dir()
    if click.get_current_context().get_parameter_source("data") == click.core.ParameterSource.DEFAULT:
        from fashion_match.bench.runner import with_head_data

        data = with_head_data(folder, data)
    cfg = BenchConfig(folder, data, backends, precisions, batch_sizes, device, threads, quick)
    result = run_bench(cfg, say=click.echo)
    plan = cfg.plan
    settings = {
        "quick": quick,
        "timing": f"{plan.warmup} warm-up calls, then >= {plan.min_runs} timed calls and >= {plan.min_seconds} s "
        f"(at most {plan.max_runs}), 4 rotated input batches; latency = wall time of embed() returning host memory; "
        "e2e = JPEG bytes of the evaluation images (224 px, quality 90) decoded, resized and embedded",
        "sizes": {"category": cfg.sizes.category, "instance": cfg.sizes.instance},
        "threads": threads,
        "device": device,
    }
    command = "fm-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    rep = write_report(result, out, machine_info(), command.strip(), settings)
    click.echo(f"report {out}/report.md (+ report.json, report.csv, pareto.png, example grids)")
    noise = ", ".join(f"{v:g} point{'s' if v != 1 else ''} of Recall@1 on {k}" for k, v in rep["resolution"].items())
    click.echo(
        f"resolution: one query is {noise}"
        + ("; --quick timings are short runs, noisy on a loaded machine" if quick else "")
    )
    if min_recall is not None:
        from fashion_match.bench.runner import metric_key

        key = metric_key(data[0], "recall_at_1")
        low = [r for r in rep["rows"] if r["status"] == "ok" and (r.get(key) or 0) < min_recall]
        if low:
            for r in low:
                click.echo(
                    f"below --min-recall {min_recall}: {r['backend']} {r['precision']} batch {r['batch_size']}: "
                    f"Recall@1 {r[key]:.4f} on {data[0]}",
                    err=True,
                )
            sys.exit(1)


main = entrypoint(cli, "fm-bench")
