"""`fm-index`: build, extend and describe gallery indexes."""

from __future__ import annotations

import time
from pathlib import Path

import click

from fashion_match.cli.common import debug_option, echo_json, entrypoint
from fashion_match.cli.options import model_options
from fashion_match.runtime.index_format import DTYPES, SHARD_ROWS

FAISS_KINDS = ("ivf-flat", "ivf-pq", "hnsw")  # runtime.faiss_index.KINDS, without importing numpy for --help


def faiss_options(f):  # type: ignore[no-untyped-def]
    """--faiss KIND and its build parameters (defaults fit the gallery: see runtime.faiss_index)."""
    for opt in reversed(
        [
            click.option(
                "--faiss",
                type=click.Choice(FAISS_KINDS),
                help="Also build a FAISS index of this kind, kept in the index and rebuilt by every add.",
            ),
            click.option("--nlist", type=click.IntRange(1, 1 << 20), help="IVF lists [default: 4 sqrt(n), <= n/39]."),
            click.option(
                "--pq-m", type=click.IntRange(1, 1024), help="IVF-PQ sub-quantizers [default: divides the dim]."
            ),
            click.option("--nprobe", type=click.IntRange(1, 1 << 20), help="IVF lists searched by default [16]."),
        ]
    ):
        f = opt(f)
    return f


def _faiss_params(nlist: int | None, pq_m: int | None, nprobe: int | None) -> dict[str, int | None]:
    return {"nlist": nlist, "pq_m": pq_m, "nprobe": nprobe}


@click.group(help="Build, extend and describe gallery indexes.")
@debug_option
def cli() -> None:
    pass


def _matcher(  # type: ignore[no-untyped-def]
    model_dir: Path | None, backend: str, precision: str, device: str, threads: int | None, batch: int, space=None
):
    from fashion_match.runtime.matcher import Matcher

    return Matcher(
        model_dir, backend=backend, precision=precision, device=device, threads=threads, batch_size=batch, space=space
    )


attribute_option = click.option(
    "--attribute", help="Index this attribute space of the model (fm-train --spaces-for) instead of the item embedding."
)


def _report(idx, t0: float, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """What this build or add did: rows written, and every input left out with its reason."""
    info, rep = idx.info(), idx.report
    if as_json:  # images: the index now; the rest: what this command did
        this_run = {"added": rep.added, "skipped": len(rep.bad), "skipped_files": rep.bad, "duplicates": rep.duplicates}
        echo_json({k: v for k, v in info.items() if k != "skipped"} | this_run)
        return
    secs = time.perf_counter() - t0
    now = [f"{len(rep.bad):,} skipped"] if rep.bad else []
    now += [f"{len(rep.duplicates):,} already in the index"] if rep.duplicates else []
    click.echo(
        f"{info['index']}: {info['images']:,} images ({rep.added:,} new in {secs:.1f} s, "
        f"{rep.added / max(secs, 1e-9):.0f} img/s{''.join(', ' + n for n in now)}), "
        f"{info['embedding_dim']}-d {info['dtype']}, model {info['model']}"
    )
    fx = info.get("faiss")
    if fx:
        r = fx["recall"]
        click.echo(
            f"  faiss {fx['kind']} {fx['params']}: recall@10 {r['recall_at_10']:.4f}, recall@1 {r['recall_at_1']:.4f} "
            f"against exact search ({r['queries']} gallery images as queries, their own row left out)"
        )
    left_out = [("skipped", b) for b in rep.bad] + [("duplicate", d) for d in rep.duplicates]
    for kind, s in left_out[:20]:
        click.echo(f"  {kind}: {s['path']}: {s['reason']}", err=True)
    if len(left_out) > 20:
        click.echo(f"  ... {len(left_out) - 20} more left out (--json lists them all)", err=True)


@cli.command("build")
@click.argument("source")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Index directory to create.")
@model_options
@click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    default=DTYPES[0],
    show_default=True,
    help="Storage type of the embeddings (float16 halves disk and GPU memory).",
)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=64, show_default=True)
@click.option(
    "--shard-rows",
    type=click.IntRange(1, 1 << 22),
    default=SHARD_ROWS,
    show_default=True,
    help="Images per shard: the unit a killed build resumes from.",
)
@faiss_options
@attribute_option
@click.option(
    "--overwrite", is_flag=True, help="Replace an index already at --out; it stays whole until the new one is."
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
    faiss: str | None,
    nlist: int | None,
    pq_m: int | None,
    nprobe: int | None,
    attribute: str | None,
    overwrite: bool,
    as_json: bool,
) -> int:
    """Embed SOURCE (a --data spec's gallery, or a folder of images) into a new index.

    Interrupted builds resume: run the same command again."""
    from fashion_match.runtime.index import Index

    t0 = time.perf_counter()
    with _matcher(model_dir, backend, precision, device, threads, batch_size, attribute) as m:
        idx = Index.build(
            source,
            out,
            matcher=m,
            dtype=dtype,
            shard_rows=shard_rows,
            overwrite=overwrite,
            faiss=faiss,
            faiss_params=_faiss_params(nlist, pq_m, nprobe),
        )
    _report(idx, t0, as_json)
    return 0


@cli.command("add")
@click.argument("index", type=click.Path(path_type=Path))
@click.argument("source")
@model_options
@click.option("--batch-size", type=click.IntRange(1, 4096), default=64, show_default=True)
@faiss_options
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
    faiss: str | None,
    nlist: int | None,
    pq_m: int | None,
    nprobe: int | None,
    as_json: bool,
) -> int:
    """Append SOURCE to INDEX (same model required; images already present are skipped)."""
    from fashion_match.runtime.index import Index

    t0 = time.perf_counter()
    current = Index.open(index)  # "not an index" before any model loads
    space = current.manifest.get("space")  # an add extends the space the index holds
    with _matcher(model_dir, backend, precision, device, threads, batch_size, space) as m:
        idx = current.add(source, matcher=m, faiss=faiss, faiss_params=_faiss_params(nlist, pq_m, nprobe))
    _report(idx, t0, as_json)
    return 0


@cli.command("info")
@click.argument("index", type=click.Path(path_type=Path))
@click.option("--verify", is_flag=True, help="Re-hash every shard against the manifest.")
@click.option("--json", "as_json", is_flag=True)
@debug_option
def info(index: Path, verify: bool, as_json: bool) -> int:
    """Describe INDEX."""
    from fashion_match.errors import FmError
    from fashion_match.runtime.index import Index

    try:
        idx = Index.open(index, verify=verify)
    except FmError as e:  # one line on stderr and exit 2; with --json, the verdict on stdout too
        if as_json:
            echo_json({"index": str(index), "verified": False if verify else None, "error": str(e)})
        raise
    d = {
        **idx.info(),
        **({"verified": True, "checked": "every shard and its metadata against their sha256"} if verify else {}),
    }
    if as_json:
        echo_json(d)
    else:
        for k, v in d.items():
            click.echo(f"{k:>14}: {v}")
    return 0


main = entrypoint(cli, "fm-index")
