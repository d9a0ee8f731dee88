"""`fm-serve`: matching, search and tagging as a service on Triton Inference Server (PyTriton).

Models: fm_embed (image bytes -> embedding and the model's tag/space outputs), fm_match (two
images -> similarity, threshold, match), fm_search (with --index: image + k -> top-k ids, item ids,
scores) and fm_tag (a model with tag heads). All dynamically batched; Triton's own health, metadata
and Prometheus metrics. Listens on 127.0.0.1 unless --host says otherwise. Runs until SIGTERM or
Ctrl-C, then finishes the requests in flight and exits 0.
"""

from __future__ import annotations

from pathlib import Path

import click

from fashion_match.cli.common import debug_option, entrypoint
from fashion_match.cli.options import device_option
from fashion_match.formats import BACKENDS, PRECISIONS


@click.command(help=__doc__)
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None, help="Model directory.")
@click.option("--index", type=click.Path(path_type=Path), default=None, help="An fm-index folder to serve fm_search.")
@click.option("--engine", type=click.Choice(["exact", "faiss"]), default="exact", show_default=True)
@click.option("--backend", type=click.Choice(("auto", *BACKENDS)), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@device_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@click.option("--max-batch", type=click.IntRange(1, 1024), default=64, show_default=True, help="Images per batch.")
@click.option(
    "--queue-delay-us",
    type=click.IntRange(0, 1_000_000),
    default=2000,
    show_default=True,
    help="How long Triton may hold a request to fill a batch.",
)
@click.option("--instances", type=click.IntRange(1, 64), default=1, show_default=True, help="Model instances.")
@click.option("--decode-workers", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--max-image-mb", type=click.FloatRange(0.01, 1024), default=16.0, show_default=True, help="Per encoded image."
)
@debug_option
def cli(
    model_dir: Path | None,
    index: Path | None,
    engine: str,
    backend: str,
    precision: str,
    device: str,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    max_batch: int,
    queue_delay_us: int,
    instances: int,
    decode_workers: int,
    max_image_mb: float,
) -> int:
    from fashion_match.serve.interpreter import check_interpreter
    from fashion_match.serve.server import ServeOptions, run

    check_interpreter()
    opts = ServeOptions(
        model=model_dir,
        index=index,
        engine=engine,
        backend=backend,
        precision=precision,
        device=device,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        max_batch=max_batch,
        queue_delay_us=queue_delay_us,
        instances=instances,
        decode_workers=decode_workers,
        max_image_bytes=int(max_image_mb * 1024 * 1024),
    )
    return run(opts, say=lambda s: click.echo(s))


main = entrypoint(cli, "fm-serve")
