"""`fm-match A B`: do two photos show the same item? Exit 0 match, 1 no match, 2 error (like cmp)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fashion_match.cli.common import debug_option, entrypoint
from fashion_match.formats import BACKENDS, PRECISIONS


@click.command(help=__doc__)
@click.argument("a", type=click.Path(path_type=Path, dir_okay=True, exists=False))
@click.argument("b", type=click.Path(path_type=Path, dir_okay=True, exists=False))
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Model directory (default: the embedded model).",
)
@click.option("--backend", type=click.Choice(("auto", *BACKENDS)), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option(
    "--threshold",
    type=click.FloatRange(-1.0, 1.0),
    default=None,
    help="Match when similarity >= T (default: the model's calibrated threshold).",
)
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Inference threads.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@debug_option
def cli(
    a: Path,
    b: Path,
    model_dir: Path | None,
    backend: str,
    precision: str,
    device: str,
    threshold: float | None,
    threads: int | None,
    as_json: bool,
) -> int:
    from fashion_match.runtime.matcher import Matcher

    with Matcher(model_dir, backend=backend, precision=precision, device=device, threads=threads) as m:
        v = m.verify(a, b, threshold)
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "a": str(a),
                        "b": str(b),
                        "similarity": round(v.similarity, 6),
                        "threshold": v.threshold,
                        "match": v.match,
                        "backend": m.info.backend,
                        "precision": m.info.precision,
                        "model": m.manifest.short_id(),
                    }
                )
            )
        else:
            click.echo(
                f"{'match' if v.match else 'no match'}  similarity {v.similarity:.3f}  threshold {v.threshold:.3f}"
            )
    return 0 if v.match else 1


main = entrypoint(cli, "fm-match", fast_exit=True)
