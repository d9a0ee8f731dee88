"""`fm-data`: inspect and validate datasets before anyone trains on them."""

from __future__ import annotations

from pathlib import Path

import click

from fashion_match.cli.common import debug_option, echo_json, entrypoint
from fashion_match.errors import BadDataset


@click.group(help="Inspect and validate datasets (--data specs).")
@debug_option
def cli() -> None:
    pass


@cli.command("check")
@click.argument("spec")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--strict", is_flag=True, help="Exit 2 when any image is missing or undecodable.")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Decoding threads.")
@debug_option
def check(spec: str, as_json: bool, strict: bool, workers: int | None) -> int:
    """Validate dataset SPEC, e.g. fashion-mnist, deepfashion-inshop:DIR, folder:DIR, csv:FILE."""
    from fashion_match.data.check import check_dataset
    from fashion_match.data.spec import load_dataset

    ds = load_dataset(spec)
    report = check_dataset(ds, workers=workers, progress=not as_json)
    if as_json:
        echo_json(report)
    else:
        splits = ", ".join(f"{k} {v:,}" for k, v in report["splits"].items())
        click.echo(f"{report['format']}: {report['images']:,} images of {report['items']:,} items ({splits})")
        if report["notes"]:
            click.echo(report["notes"])
        click.echo(
            f"protocol: {report['protocol']['queries']:,} queries x {report['protocol']['gallery']:,} gallery"
            f" - {ds.protocol.description}"
        )
        for a in report["attributes"]:
            skew = f", most/least frequent value {a['most_to_least']}:1" if a["most_to_least"] else ""
            never = f", {a['never_positive']} never seen" if a["never_positive"] else ""
            what = f"attribute {a['name']} ({a['kind']}, {a['values']} values)"
            click.echo(f"{what}: {a['labelled_images']:,} images{skew}{never}")
        for b in report["bad"][:20]:
            click.echo(f"  bad: {b['path']}: {b['reason']}")
        if len(report["bad"]) > 20:
            click.echo(f"  ... and {len(report['bad']) - 20} more bad images (--json lists all)")
        click.echo(f"bad images: {len(report['bad'])}" if report["bad"] else "all images readable")
    if strict and report["bad"]:
        raise BadDataset(
            f"{spec}: {len(report['bad'])} images missing or undecodable (--strict), first: "
            f"{report['bad'][0]['path']}: {report['bad'][0]['reason']}"
        )
    return 0


@cli.command("export")
@click.argument("spec")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--limit", type=click.IntRange(1), help="About N images: whole items, in dataset order.")
@click.option("--json", "as_json", is_flag=True)
@debug_option
def export(spec: str, out: Path, limit: int | None, as_json: bool) -> int:
    """Write the images of SPEC to OUT as OUT/<split>/<item_id>/<image>, the layout folder:OUT reads."""
    from fashion_match.data.export_folder import export_folder
    from fashion_match.data.spec import load_dataset

    report = export_folder(load_dataset(spec), out, limit=limit)
    if as_json:
        echo_json(report)
    else:
        click.echo(f"{out}: {report['images']:,} images of {report['items']:,} items; read it back as folder:{out}")
    for b in report["bad"][:20]:
        click.echo(f"  skipped {b['path']}: {b['reason']}", err=True)
    return 0


main = entrypoint(cli, "fm-data")
