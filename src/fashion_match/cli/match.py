"""`fm-match A B`: do two photos show the same item? Exit 0 match, 1 no match, 2 error (like cmp)."""

from __future__ import annotations

import math
from pathlib import Path

import click

from fashion_match.cli.common import debug_option, echo_json, entrypoint, score_text
from fashion_match.cli.options import model_options


def _refuse_nan(value: float) -> float:
    # click's FloatRange lets NaN through (every comparison with it is false)
    raise click.BadParameter(f"{value} is not a number between -1 and 1")


@click.command(help=__doc__)
@click.argument("a", type=click.Path(path_type=Path, dir_okay=True, exists=False))
@click.argument("b", type=click.Path(path_type=Path, dir_okay=True, exists=False))
@model_options
@click.option(
    "--threshold",
    type=click.FloatRange(-1.0, 1.0),
    callback=lambda _c, _p, v: v if v is None or math.isfinite(v) else _refuse_nan(v),
    default=None,
    help="Match when similarity >= T (default: the model's calibrated threshold).",
)
@click.option("--attribute", help="Compare in this attribute's space (a model with attribute spaces): same value?")
@click.option(
    "--server",
    metavar="URL",
    help="Ask a running fm-serve (http://HOST:8000 or grpc://HOST:8001) instead of loading the model here; "
    "the photos are sent as bytes.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@debug_option
def cli(
    a: Path,
    b: Path,
    model_dir: Path | None,
    backend: str,
    precision: str,
    device: str,
    threads: int | None,
    threshold: float | None,
    attribute: str | None,
    server: str | None,
    as_json: bool,
) -> int:
    from fashion_match.runtime.matcher import Matcher

    if server is not None:
        return _ask_server(server, a, b, threshold, attribute, as_json)
    with Matcher(model_dir, backend=backend, precision=precision, device=device, threads=threads) as m:
        v = m.verify(a, b, threshold) if attribute is None else m.verify_attribute(a, b, attribute, threshold)
        if as_json:
            record = {
                "a": str(a),
                "b": str(b),
                "similarity": round(v.similarity, 6),
                "threshold": v.threshold,
                "match": v.match,
                "backend": m.info.backend,
                "precision": m.info.precision,
                "device": m.info.device,
                "model": m.manifest.short_id(),
                **({"attribute": attribute} if attribute else {}),
            }
            echo_json(record)
        else:
            verdict = "match" if v.match else "no match"
            space = f"  ({attribute})" if attribute else ""
            click.echo(f"{verdict}  similarity {score_text(v.similarity)}  threshold {score_text(v.threshold)}{space}")
    return 0 if v.match else 1


def _ask_server(server: str, a: Path, b: Path, threshold: float | None, attribute: str | None, as_json: bool) -> int:
    from fashion_match.errors import UsageError
    from fashion_match.serve import Client

    if attribute is not None:
        raise UsageError("--attribute with --server: fm-serve compares item embeddings; run fm-match locally")
    with Client(server) as c:
        v = c.match(a, b)
    t = v.threshold if threshold is None else threshold
    match = v.similarity >= t
    if as_json:
        echo_json(
            {
                "a": str(a),
                "b": str(b),
                "similarity": round(v.similarity, 6),
                "threshold": t,
                "match": match,
                "server": server,
            }
        )
    else:
        click.echo(f"{'match' if match else 'no match'}  similarity {v.similarity:.3f}  threshold {t:.3f}  ({server})")
    return 0 if match else 1


main = entrypoint(cli, "fm-match", fast_exit=True)
