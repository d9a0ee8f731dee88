"""`fm-tag IMAGE...`: each photo's attribute values and tags, with probabilities (a model with tag heads)."""

from __future__ import annotations

from pathlib import Path

import click

from fashion_match.cli.common import debug_option, echo_json, entrypoint
from fashion_match.cli.options import model_options


@click.command(help=__doc__ + " Exit 0 when every image was tagged, 2 on an error or when none could be read.")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_options
@click.option("--top", type=click.IntRange(1, 100), default=3, show_default=True, help="Values shown per attribute.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@debug_option
def cli(
    images: tuple[Path, ...],
    model_dir: Path | None,
    backend: str,
    precision: str,
    device: str,
    threads: int | None,
    top: int,
    as_json: bool,
) -> int:
    from fashion_match.errors import BadImage
    from fashion_match.runtime.matcher import Matcher

    with Matcher(model_dir, backend=backend, precision=precision, device=device, threads=threads) as m:
        results, indices, bad = m.tag([str(p) for p in images], top=top)
        model = m.manifest.model
    rows = [{"image": str(images[i]), **r} for i, r in zip(indices, results, strict=True)]
    if as_json:
        echo_json({"model": model, "images": rows, "bad": [{"path": b.name, "reason": b.reason} for b in bad]})
    else:
        for row in rows:
            click.echo(row["image"])
            for name, vals in row.items():
                if name == "image":
                    continue
                shown = ", ".join(f"{v.get('value', v.get('tag'))} {v['prob']:.2f}" for v in vals) or "-"
                click.echo(f"  {name}: {shown}")
    for b in bad:
        click.echo(f"fm-tag: skipped {b.name}: {b.reason}", err=True)
    if not rows:
        raise BadImage(str(images[0]) if len(images) == 1 else f"{len(images)} images", "none could be read")
    return 0


main = entrypoint(cli, "fm-tag")
