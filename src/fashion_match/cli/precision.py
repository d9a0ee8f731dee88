"""`fm-precision MODEL`: which backbone blocks (or layers) cost INT8 its accuracy, and what they cost in time.

Quantises one unit at a time (and everything but one unit), measures the embedding drift and the
Recall@1 change on a held-out scan set, profiles each unit's share of ONNX Runtime's CPU time, and
writes sensitivity.txt, sensitivity.json and sensitivity.png. `fm-export --int8 --int8-max-drop PTS`
uses the same ranking to keep the most damaging units in FP32.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fashion_match.cli.common import debug_option, echo_json, entrypoint
from fashion_match.export.onnx2int8 import CALIB_METHODS, DEFAULT_CALIB, DEFAULT_CALIB_IMAGES, TARGETS
from fashion_match.export.quant_units import GRANULARITIES
from fashion_match.export.sensitivity import SCAN_SET


@click.command(help=__doc__)
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("sensitivity"), show_default=True)
@click.option("--granularity", type=click.Choice(GRANULARITIES), default="block", show_default=True)
@click.option("--calib", help=f"Dataset spec of the calibration images [default: {DEFAULT_CALIB} train split].")
@click.option("--calib-images", type=click.IntRange(1, 100_000), default=DEFAULT_CALIB_IMAGES, show_default=True)
@click.option("--calib-method", type=click.Choice(CALIB_METHODS), default="percentile", show_default=True)
@click.option("--target", type=click.Choice(TARGETS), default="onnxruntime", show_default=True)
@click.option("--gate-data", default="fashion-mnist", show_default=True, help="Category retrieval data of the scan.")
@click.option("--queries", type=click.IntRange(1), default=SCAN_SET[0], show_default=True)
@click.option("--gallery", type=click.IntRange(1), default=SCAN_SET[1], show_default=True)
@click.option("--pairs", type=click.IntRange(1), default=SCAN_SET[2], show_default=True, help="fmnist-c2s pairs.")
@click.option("--instance-gallery", type=click.IntRange(1), default=SCAN_SET[3], show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON instead of the table.")
@debug_option
def cli(
    model: Path | None,
    out: Path,
    granularity: str,
    calib: str | None,
    calib_images: int,
    calib_method: str,
    target: str,
    gate_data: str,
    queries: int,
    gallery: int,
    pairs: int,
    instance_gallery: int,
    as_json: bool,
) -> None:
    from fashion_match.bench.machine import machine_info
    from fashion_match.export import sensitivity, sensitivity_report
    from fashion_match.export.onnx2int8 import calibration_sources, decode_calibration
    from fashion_match.fileio import check_output_dir
    from fashion_match.progress import say, stage
    from fashion_match.runtime.manifest import default_model_dir, load_manifest

    folder = model or default_model_dir()
    manifest = load_manifest(folder)
    fp32_path, _ = manifest.artifact("onnxruntime", "fp32")
    check_output_dir(out, "sensitivity output (--out)")
    sources, described = calibration_sources(calib or DEFAULT_CALIB, calib_images)
    pixels = decode_calibration(sources, manifest.preprocess)
    with stage("scan set: decoding"):
        gs = sensitivity.scan_set(manifest.preprocess, gate_data, (queries, gallery, pairs, instance_gallery))
    found = sensitivity.scan(
        fp32_path, pixels, gs, granularity=granularity, target=target, method=calib_method, progress=say
    )
    record = {
        "command": "fm-precision " + " ".join(sys.argv[1:]),
        "model": manifest.short_id(),
        "calibration": {"data": described, "method": calib_method, "target": target},
        **found.to_dict(),
        "machine": machine_info(),
    }
    paths = sensitivity_report.write(record, out)
    if as_json:
        echo_json(record)
    else:
        click.echo(sensitivity_report.table(record), nl=False)
        click.echo(f"wrote {', '.join(str(p) for p in paths)}")


main = entrypoint(cli, "fm-precision")
