"""`fm-export`: FP16 / INT8 ONNX, TensorRT engines and a Triton repository, each accuracy-gated."""

from __future__ import annotations

from pathlib import Path

import click

from fashion_match.cli.common import F, debug_option, echo_json, entrypoint
from fashion_match.export.gate import MAX_DROP_PTS, MIN_MEAN_COSINE
from fashion_match.export.modelopt_int8 import QUANTIZERS
from fashion_match.export.onnx2int8 import CALIB_METHODS, DEFAULT_CALIB, DEFAULT_CALIB_IMAGES, TARGETS
from fashion_match.export.pipeline import QUICK_GATE
from fashion_match.formats import PRECISION_TABLE, REDUCED


def _batch(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, int, int]:
    from fashion_match.export.onnx2engine import parse_batch

    return parse_batch(value)


def precision_flags(f: F) -> F:
    """--fp16, --int8, --bf16 ...: one flag per reduced or execution-only precision of the format table."""
    for row in reversed([r for r in PRECISION_TABLE if r.name in REDUCED or r.execution_only]):
        f = click.option(f"--{row.name}", is_flag=True, help=row.help)(f)
    return f


@click.command(
    help="Export SOURCE (an fm-train output directory or a model directory; default: the embedded model) "
    "to FP16/INT8 ONNX, TensorRT engines and a Triton model repository. Every reduced-precision artifact "
    "passes an accuracy gate against FP32 first."
)
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Model directory to write (default: SOURCE itself).")
@precision_flags
@click.option("--calib", help=f"Dataset spec of the calibration images [default: {DEFAULT_CALIB} train split].")
@click.option("--calib-images", type=click.IntRange(1, 100_000), default=DEFAULT_CALIB_IMAGES, show_default=True)
@click.option("--calib-method", type=click.Choice(CALIB_METHODS), default="percentile", show_default=True)
@click.option(
    "--target",
    type=click.Choice(TARGETS),
    help="Who runs the INT8 file: onnxruntime (uint8 activations) or tensorrt (symmetric int8) "
    "[default: tensorrt with --trt, else onnxruntime].",
)
@click.option("--trt", is_flag=True, help="Build TensorRT engines (fp32, plus fp16/int8 when asked) on this GPU.")
@click.option("--batch", default="1,32,128", show_default=True, callback=_batch, help="MIN,OPT,MAX engine batch.")
@click.option("--timing-cache", type=click.Path(path_type=Path), help="TensorRT timing cache file (reused, updated).")
@click.option("--triton", type=click.Path(path_type=Path), help="Write a Triton model repository here.")
@click.option(
    "--allow-accuracy-drop",
    type=click.FloatRange(0, 100),
    help="Points of Recall@1 and verification accuracy an artifact may lose [default: "
    + ", ".join(f"{v} for {k}" for k, v in MAX_DROP_PTS.items())
    + "]; also waives the mean-cosine floor ("
    + ", ".join(f"{v} for {k}" for k, v in MIN_MEAN_COSINE.items())
    + ").",
)
@click.option(
    "--gate",
    "gate_mode",
    type=click.Choice(["full", "quick"]),
    default="full",
    show_default=True,
    help=f"quick: for trying things, {QUICK_GATE[0]} queries, {QUICK_GATE[1]} gallery images and "
    f"{QUICK_GATE[2]} pairs unless given, and an allowance of at least two queries' worth; the manifest "
    "labels such artifacts.",
)
@click.option("--gate-data", default="fashion-mnist", show_default=True, help="Retrieval data of the accuracy gate.")
@click.option("--gate-queries", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--gate-gallery", type=click.IntRange(1), default=5000, show_default=True)
@click.option(
    "--gate-pairs",
    type=click.IntRange(0),
    default=1000,
    show_default=True,
    help="Held-out fmnist-c2s consumer/shop pairs: verification accuracy, and instance Recall@1 of the consumer "
    "photos against the pairs' shop photos and others (0: none).",
)
@click.option(
    "--gate-instance-gallery",
    type=click.IntRange(1),
    default=3000,
    show_default=True,
    help="Shop photos the instance Recall@1 ranks (the pairs' own, then other items').",
)
@click.option(
    "--int8-max-drop",
    type=click.FloatRange(0),
    metavar="PTS",
    help="Automatic mixed precision: keep the backbone units that hurt most (ranked by a sensitivity scan) "
    "in FP32 until the gate's largest drop is at most PTS points; the manifest records which and the speed "
    "it costs.",
)
@click.option(
    "--int8-quantizer",
    type=click.Choice(QUANTIZERS),
    default="auto",
    show_default=True,
    help="Who places the Q/DQ pairs of the TensorRT flavour: NVIDIA Model Optimizer (auto, when installed: "
    "pip install 'fashion-match[modelopt]') or fashion-match's own rules; ONNX Runtime's flavour is always ours.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was made as JSON.")
@debug_option
def cli(
    source: Path | None,
    out: Path | None,
    calib: str | None,
    calib_images: int,
    calib_method: str,
    target: str | None,
    trt: bool,
    batch: tuple[int, int, int],
    timing_cache: Path | None,
    triton: Path | None,
    allow_accuracy_drop: float | None,
    gate_mode: str,
    gate_data: str,
    gate_queries: int,
    gate_gallery: int,
    gate_pairs: int,
    gate_instance_gallery: int,
    int8_max_drop: float | None,
    int8_quantizer: str,
    as_json: bool,
    **flags: bool,
) -> None:
    from fashion_match.errors import UsageError
    from fashion_match.export.pipeline import ExportOptions, run_export

    precisions = tuple(p.name for p in PRECISION_TABLE if flags.get(p.name))
    if gate_mode == "quick":  # the quick sizes stand in for the defaults, never for what was typed
        src = click.get_current_context().get_parameter_source
        default = click.core.ParameterSource.DEFAULT
        gate_queries = QUICK_GATE[0] if src("gate_queries") == default else gate_queries
        gate_gallery = QUICK_GATE[1] if src("gate_gallery") == default else gate_gallery
        gate_pairs = QUICK_GATE[2] if src("gate_pairs") == default else gate_pairs
        if src("gate_instance_gallery") == default:
            gate_instance_gallery = 3 * gate_pairs
    if (calib or target or int8_max_drop is not None) and "int8" not in precisions:
        raise UsageError("--calib, --target and --int8-max-drop apply to --int8")
    opts = ExportOptions(
        precisions=precisions,
        calib=calib,
        calib_images=calib_images,
        calib_method=calib_method,
        target=target,
        trt=trt,
        batch=batch,
        timing_cache=timing_cache,
        triton=triton,
        allow_accuracy_drop=allow_accuracy_drop,
        gate_data=gate_data,
        gate_queries=gate_queries,
        gate_gallery=gate_gallery,
        gate_verification="fmnist-c2s" if gate_pairs else None,
        gate_pairs=gate_pairs,
        gate_instance_gallery=gate_instance_gallery,
        gate_mode=gate_mode,
        int8_max_drop=int8_max_drop,
        int8_quantizer=int8_quantizer,
    )
    result = run_export(source, out, opts, say=(lambda s: None) if as_json else click.echo)
    if as_json:
        echo_json({"out": str(result.out), "made": result.made, "triton": [str(p) for p in result.triton]})


main = entrypoint(cli, "fm-export")
