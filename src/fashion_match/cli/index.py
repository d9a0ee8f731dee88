"""`fm-index`: build, extend and describe gallery indexes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from fashion_match.cli.common import debug_option, entrypoint
from fashion_match.cli.options import model_options


@click.group(help="Build, extend and describe gallery indexes (exact search; FAISS at search time).")
@debug_option
def cli() -> None:
    pass


def _matcher(model_dir: Path | None, backend: str, precision: str, device: str, threads: int | None, batch: int):
    from fashion_match.runtime.matcher import Matcher

    return Matcher(model_dir, backend=backend, precision=precision, device=device, threads=threads, batch_size=batch)


def _report(idx, t0: float, n_before: int, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    info = idx.info()
    skipped = idx.manifest["skipped"]
    if as_json:
        click.echo(json.dumps({**info, "skipped_files": skipped}))
        return
    secs = time.perf_counter() - t0
    added = len(idx) - n_before
    click.echo(
        f"{info['index']}: {info['images']:,} images ({added:,} new in {secs:.1f} s, "
        f"{added / max(secs, 1e-9):.0f} img/s), {info['embedding_dim']}-d {info['dtype']}, model {info['model']}"
    )
    for s in skipped[:20]:
        click.echo(f"  skipped: {s['path']}: {s['reason']}", err=True)
    if len(skipped) > 20:
        click.echo(f"  ... {len(skipped) - 20} more skipped files (fm-index info --json lists them)", err=True)


@cli.command("build")
@click.argument("source")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Index directory to create.")
@model_options
@click.option(
    "--dtype",
    type=click.Choice(("float32", "float16")),
    default="float32",
    show_default=True,
    help="Storage type of the embeddings (float16 halves disk and GPU memory).",
)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=64, show_default=True)
@click.option(
    "--shard-rows",
    type=click.IntRange(1, 1 << 22),
    default=4096,
    show_default=True,
    help="Images per shard: the unit a killed build resumes from.",
)
@click.option("--json", "as_json", is_flag=True)
@debug_option
def build(
    source: str,
    out: Path,
    model_dir: Path | None,
    backend: str,
    precision: str,
    device: str,
    threads: int | None,
    dtype: str,
    batch_size: int,
    shard_rows: int,
    as_json: bool,
) -> int:
    """Embed SOURCE (a --data spec's gallery, or a folder of images) into a new index.

    Interrupted builds resume: run the same command again."""
    from fashion_match.runtime.index import build_index

    t0 = time.perf_counter()
    with _matcher(model_dir, backend, precision, device, threads, batch_size) as m:
        idx = build_index(source, out, matcher=m, dtype=dtype, shard_rows=shard_rows, progress=not as_json)
    _report(idx, t0, 0, as_json)
    return 0


@cli.command("add")
@click.argument("index", type=click.Path(path_type=Path))
@click.argument("source")
@model_options
@click.option("--batch-size", type=click.IntRange(1, 4096), default=64, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@debug_option
def add(
    index: Path,
    source: str,
    model_dir: Path | None,
    backend: str,
    precision: str,
    device: str,
    threads: int | None,
    batch_size: int,
    as_json: bool,
) -> int:
    """Append SOURCE to INDEX (same model required; images already present are skipped)."""
    from fashion_match.runtime.index import Index, add_to_index

    t0 = time.perf_counter()
    before = len(Index.open(index))
    with _matcher(model_dir, backend, precision, device, threads, batch_size) as m:
        idx = add_to_index(index, source, matcher=m, progress=not as_json)
    _report(idx, t0, before, as_json)
    return 0


@cli.command("info")
@click.argument("index", type=click.Path(path_type=Path))
@click.option("--verify", is_flag=True, help="Re-hash every shard against the manifest.")
@click.option("--json", "as_json", is_flag=True)
@debug_option
def info(index: Path, verify: bool, as_json: bool) -> int:
    """Describe INDEX."""
    from fashion_match.runtime.index import Index

    idx = Index.open(index, verify=verify)
    d = idx.info()
    if as_json:
        click.echo(json.dumps(d))
    else:
        for k, v in d.items():
            click.echo(f"{k:>14}: {v}")
        if verify:
            click.echo("        verify: every shard matches its sha256")
    return 0


main = entrypoint(cli, "fm-index")
