"""`fm-search QUERY... --index INDEX`: the gallery images most like each query, best first."""

from __future__ import annotations

from pathlib import Path

import click

from fashion_match.cli.common import debug_option, echo_json, entrypoint
from fashion_match.cli.options import model_options
from fashion_match.errors import BadImage
from fashion_match.runtime.engines import ENGINES


@click.command(help=__doc__)
@click.argument("queries", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--index", "index_dir", type=click.Path(path_type=Path), required=True)
@click.option("-k", "k", type=click.IntRange(1, 10000), default=10, show_default=True)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="exact",
    show_default=True,
    help="Exact search, or an approximate FAISS index.",
)
@click.option("--nprobe", type=click.IntRange(1, 65536), default=16, show_default=True, help="FAISS lists to visit.")
@model_options
@click.option("--json", "as_json", is_flag=True)
@debug_option
def cli(
    queries: tuple[Path, ...],
    index_dir: Path,
    k: int,
    engine: str,
    nprobe: int,
    model_dir: Path | None,
    backend: str,
    precision: str,
    device: str,
    threads: int | None,
    as_json: bool,
) -> int:
    from fashion_match.runtime.index import Index
    from fashion_match.runtime.matcher import Matcher

    idx = Index.open(index_dir)
    params = {"nprobe": nprobe} if engine.startswith("faiss") else {}
    with Matcher(model_dir, backend=backend, precision=precision, device=device, threads=threads) as m:
        results, skipped = idx.search(list(queries), k, matcher=m, engine=engine, engine_params=params)
    bad = [{"path": name, "reason": reason} for name, reason in skipped]
    if as_json:
        echo_json(
            {
                "engine": engine,
                "k": k,
                "results": [{"query": r.query, "matches": r.matches} for r in results],
                "bad": bad,
            }
        )
    else:
        for r in results:
            click.echo(r.query)
            for mt in r.matches:
                item = f"  [{mt['item_id']}]" if mt["item_id"] else ""
                click.echo(f"  {mt['rank']:>3}  {mt['similarity']:.3f}  {mt['id']}{item}")
    for name, reason in skipped:
        click.echo(f"fm-search: skipped {name}: {reason}", err=True)
    if not results:
        raise (
            BadImage(str(queries[0]), "no query image could be read")
            if len(queries) == 1
            else BadImage(f"{len(queries)} queries", "none could be read")
        )
    return 0


main = entrypoint(cli, "fm-search")
