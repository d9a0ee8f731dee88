"""`fm-search QUERY... --index INDEX`: the gallery images most like each query, best first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fashion_match.cli.common import debug_option, echo_json, entrypoint, score_text
from fashion_match.cli.options import model_options
from fashion_match.errors import BadImage, UsageError
from fashion_match.runtime.engines import ENGINES


@click.command(help=__doc__)
@click.argument("queries", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--queries",
    "query_spec",
    help="Instead of files: the protocol queries of a dataset spec (e.g. fmnist-c2s); with item ids, "
    "--grid and --html mark each hit as the same item or another.",
)
@click.option(
    "--limit", type=click.IntRange(1, 10000), default=8, show_default=True, help="With --queries: N evenly spaced ones."
)
@click.option("--index", "index_dir", type=click.Path(path_type=Path), help="The index folder (not with --server).")
@click.option("-k", "k", type=click.IntRange(1, 10000), default=10, show_default=True)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="exact",
    show_default=True,
    help="Exact search, or the FAISS index kept in the index (fm-index build/add --faiss KIND).",
)
@click.option("--nprobe", type=click.IntRange(1, 1 << 20), help="FAISS IVF lists to visit [default: as built].")
@click.option("--ef-search", type=click.IntRange(1, 1 << 16), help="FAISS HNSW efSearch [default: as built].")
@click.option(
    "--attribute", help="Search in this attribute space (an index built with fm-index build --attribute NAME)."
)
@model_options
@click.option("--grid", type=click.Path(path_type=Path), help="Also draw each query beside its matches into this PNG.")
@click.option("--html", "html_out", type=click.Path(path_type=Path), help="... and/or into this HTML page.")
@click.option("--server", metavar="URL", help="Ask a running fm-serve --index (http://HOST:8000 or grpc://HOST:8001).")
@click.option("--json", "as_json", is_flag=True)
@debug_option
def cli(
    queries: tuple[Path, ...],
    query_spec: str | None,
    limit: int,
    index_dir: Path | None,
    k: int,
    engine: str,
    nprobe: int | None,
    ef_search: int | None,
    attribute: str | None,
    model_dir: Path | None,
    backend: str,
    precision: str,
    device: str,
    threads: int | None,
    grid: Path | None,
    html_out: Path | None,
    server: str | None,
    as_json: bool,
) -> int:
    from fashion_match.runtime.index import Index
    from fashion_match.runtime.matcher import Matcher

    if bool(queries) == bool(query_spec):
        raise UsageError("give query images or --queries SPEC (one of the two)")
    if server is not None:
        return _ask_server(server, queries, index_dir, k, as_json, bool(query_spec or grid or html_out or attribute))
    if index_dir is None:
        raise UsageError("--index INDEX is required (or --server URL of an fm-serve that holds one)")
    sources: list[Any] = list(queries)
    labels: list[str] | None = None
    items: list[str | None] | None = None
    if query_spec:
        sources, labels, items = spec_queries(query_spec, limit)
    idx = Index.open(index_dir)
    if engine != "faiss" and (nprobe or ef_search):
        raise UsageError("--nprobe and --ef-search apply to --engine faiss")
    params = {"nprobe": nprobe, "ef_search": ef_search} if engine == "faiss" else {}
    space = attribute or idx.manifest.get("space")  # the index says which space its vectors are in
    with Matcher(model_dir, backend=backend, precision=precision, device=device, threads=threads, space=space) as m:
        results, skipped = idx.search(sources, k, matcher=m, engine=engine, engine_params=params)
        threshold = m.threshold
    if labels is not None:  # in-memory queries of a spec: name them by their records
        for r in results:
            r.query = labels[r.position]
    bad = [{"path": name, "reason": reason} for name, reason in skipped]
    if grid or html_out:
        from fashion_match.runtime.result_grid import draw_grid, rows_for, spec_gallery, write_html

        in_memory = any(not m["path"] for r in results for m in r.matches)
        gallery = spec_gallery(idx.manifest["sources"]) if in_memory else None
        rows = rows_for(sources, results, skipped, labels=labels, item_ids=items, gallery=gallery)
        if grid:
            click.echo(f"fm-search: grid -> {draw_grid(rows, threshold, grid, title='fm-search')}", err=True)
        if html_out:
            click.echo(f"fm-search: page -> {write_html(rows, threshold, html_out)}", err=True)
    if as_json:
        echo_json(
            {
                "engine": engine,
                "k": k,
                "threshold": threshold,
                "results": [{"query": r.query, "matches": r.matches} for r in results],
                "bad": bad,
            }
        )
    else:
        click.echo(result_table(results, threshold))
    for name, reason in skipped:
        click.echo(f"fm-search: skipped {name}: {reason}", err=True)
    if not results:
        raise (
            BadImage(str(sources[0]), "no query image could be read")
            if len(sources) == 1
            else BadImage(f"{len(sources)} queries", "none could be read")
        )
    return 0


def _ask_server(
    server: str, queries: tuple[Path, ...], index_dir: Path | None, k: int, as_json: bool, local: bool
) -> int:
    from fashion_match.runtime.index import SearchResult
    from fashion_match.serve import Client
    from fashion_match.serve.client import ServerImageError

    if index_dir is not None or local:
        raise UsageError(
            "--server searches the index fm-serve holds: give query files and -k (no --index, "
            "--queries, --attribute, --grid or --html)"
        )
    results, bad, threshold = [], [], 0.0
    with Client(server) as c:
        for q in queries:
            try:
                got = c.search(q, k=k)
            except (ServerImageError, UsageError) as e:  # the server's refusal, or a file unreadable here
                bad.append({"path": str(q), "reason": str(e).split(": ", 1)[-1]})
                continue
            threshold = got["threshold"]
            results.append(SearchResult(str(q), got["matches"]))
    if as_json:
        echo_json(
            {
                "server": server,
                "k": k,
                "threshold": threshold,
                "results": [{"query": r.query, "matches": r.matches} for r in results],
                "bad": bad,
            }
        )
    elif results:
        click.echo(result_table(results, threshold))
    for b in bad:
        click.echo(f"fm-search: skipped {b['path']}: {b['reason']}", err=True)
    if not results:
        raise BadImage(str(queries[0]) if len(queries) == 1 else f"{len(queries)} queries", "none could be read")
    return 0


def spec_queries(spec: str, limit: int) -> tuple[list[Any], list[str], list[str | None]]:
    """`limit` evenly spaced protocol queries of a dataset spec: sources, names and, when the
    protocol matches on item ids, the item each query shows (else None: no right/wrong marks)."""
    from fashion_match.data.spec import load_dataset

    ds = load_dataset(spec)
    q = ds.protocol.queries
    if not q:
        raise UsageError(f"--queries {spec}: its protocol has no queries")
    picked = [q[round(i * (len(q) - 1) / max(1, min(limit, len(q)) - 1))] for i in range(min(limit, len(q)))]
    recs = [ds.records[i] for i in picked]
    by_item = ds.protocol.match_on == "item_id"
    return [r.source for r in recs], [r.name for r in recs], [r.item_id if by_item else None for r in recs]


def result_table(results: list[Any], threshold: float) -> str:
    """Each query, then its matches: rank, similarity, match or not at the model's threshold, path."""
    lines = []
    for r in results:
        lines.append(f"{r.query}  (match at similarity >= {score_text(threshold)})")
        lines.append("  rank  similarity  verdict   path")
        for mt in r.matches:
            item = f"  [item {mt['item_id']}]" if mt["item_id"] else ""
            verdict = "match" if mt.get("match") else "no match"
            lines.append(f"  {mt['rank']:>4}  {mt['similarity']:>10.3f}  {verdict:<8}  {mt['path'] or mt['id']}{item}")
    return "\n".join(lines)


main = entrypoint(cli, "fm-search")
