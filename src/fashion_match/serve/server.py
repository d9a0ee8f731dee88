"""fm-serve: the handlers (serve.handlers) as Triton Inference Server models, through PyTriton.

Triton does the serving: HTTP and gRPC (KServe v2), the dynamic batcher, `/v2/health/ready`,
model metadata and Prometheus metrics; nothing here duplicates them. Every model is batched
dynamically: the batch dimension counts images, merged across requests. Each instance gets its
own Matcher (its own backend session), so `--instances 2` runs two batches at once, one decoding
while the other infers. SIGTERM and SIGINT stop it gracefully: Triton stops taking requests,
finishes the ones in flight, then the process exits 0.
"""

from __future__ import annotations

import json
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.errors import MissingDependency, UsageError
from fashion_match.serve.handlers import Service

log = logging.getLogger(__name__)
MODELS = ("fm_embed", "fm_match", "fm_search", "fm_tag")


@dataclass
class ServeOptions:
    model: Path | None = None
    index: Path | None = None
    backend: str = "auto"
    precision: str = "fp32"
    device: str = "auto"
    engine: str = "exact"
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 64
    queue_delay_us: int = 2000
    instances: int = 1
    decode_workers: int = 4
    max_image_bytes: int = 16 * 1024 * 1024
    exit_timeout_s: int = 30


def _pytriton() -> Any:
    try:
        from pytriton import model_config, triton
    except ImportError as e:
        raise MissingDependency(
            f"fm-serve needs PyTriton ({e}): pip install 'fashion-match[serve]' into a Python whose "
            "libpython is shared (bash dev.sh serve makes one)"
        ) from None
    return model_config, triton


def services(opts: ServeOptions) -> list[Service]:
    from fashion_match.runtime.matcher import Matcher

    out = []
    for _ in range(opts.instances):
        m = Matcher(opts.model, backend=opts.backend, precision=opts.precision, device=opts.device)
        out.append(
            Service(
                m,
                index=opts.index,
                engine=opts.engine,
                workers=opts.decode_workers,
                max_image_bytes=opts.max_image_bytes,
            )
        )
    return out


def bind_all(triton: Any, svcs: list[Service], opts: ServeOptions) -> list[str]:
    """Bind every model the state supports; returns their names."""
    from fashion_match.runtime.tagging import output_dims

    mc, _ = _pytriton()
    Tensor = mc.Tensor
    config = mc.ModelConfig(
        max_batch_size=opts.max_batch,
        batcher=mc.DynamicBatcher(max_queue_delay_microseconds=opts.queue_delay_us),
    )
    manifest = svcs[0].matcher.manifest
    err = Tensor(name="error", dtype=bytes, shape=(1,))
    image = Tensor(name="image", dtype=bytes, shape=(1,))
    dims = output_dims(manifest)
    names = ["fm_embed", "fm_match"]
    triton.bind(
        model_name="fm_embed",
        infer_func=[s.embed for s in svcs],
        inputs=[image],
        outputs=[Tensor(name=n, dtype=np.float32, shape=d) for n, d in dims.items()] + [err],
        config=config,
    )
    triton.bind(
        model_name="fm_match",
        infer_func=[s.match for s in svcs],
        inputs=[Tensor(name="image_a", dtype=bytes, shape=(1,)), Tensor(name="image_b", dtype=bytes, shape=(1,))],
        outputs=[
            Tensor(name="similarity", dtype=np.float32, shape=(1,)),
            Tensor(name="threshold", dtype=np.float32, shape=(1,)),
            Tensor(name="match", dtype=np.bool_, shape=(1,)),
            err,
        ],
        config=config,
    )
    if svcs[0].index is not None:
        triton.bind(
            model_name="fm_search",
            infer_func=[s.search for s in svcs],
            inputs=[image, Tensor(name="k", dtype=np.int32, shape=(1,), optional=True)],
            outputs=[
                Tensor(name="ids", dtype=bytes, shape=(-1,)),
                Tensor(name="item_ids", dtype=bytes, shape=(-1,)),
                Tensor(name="scores", dtype=np.float32, shape=(-1,)),
                Tensor(name="threshold", dtype=np.float32, shape=(1,)),
                err,
            ],
            config=config,
        )
        names.append("fm_search")
    if manifest.data.get("tags") is not None:
        triton.bind(
            model_name="fm_tag",
            infer_func=[s.tag for s in svcs],
            inputs=[image, Tensor(name="top", dtype=np.int32, shape=(1,), optional=True)],
            outputs=[Tensor(name="tags", dtype=bytes, shape=(1,)), err],
            config=config,
        )
        names.append("fm_tag")
    return names


def triton_config(opts: ServeOptions) -> Any:
    _, tr = _pytriton()
    return tr.TritonConfig(
        http_address=opts.host,
        http_port=opts.http_port,
        grpc_address=opts.host,
        grpc_port=opts.grpc_port,
        metrics_address=opts.host,
        metrics_port=opts.metrics_port,
        allow_gpu_metrics=False,
        exit_timeout_secs=opts.exit_timeout_s,
        log_verbose=0,
    )


def run(opts: ServeOptions, say: Any = print) -> int:
    """Start Triton with the models and serve until SIGTERM/SIGINT; 0 after a graceful stop."""
    if opts.instances < 1 or opts.max_batch < 1:
        raise UsageError("--instances and --max-batch must be >= 1")
    _, tr = _pytriton()
    svcs = services(opts)

    def stop(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt  # Triton.serve() stops gracefully on it

    signal.signal(signal.SIGTERM, stop)
    try:
        with tr.Triton(config=triton_config(opts)) as triton:
            names = bind_all(triton, svcs, opts)
            m = svcs[0].matcher
            say(
                json.dumps(
                    {
                        "serving": names,
                        "http": f"http://{opts.host}:{opts.http_port}",
                        "grpc": f"{opts.host}:{opts.grpc_port}",
                        "metrics": f"http://{opts.host}:{opts.metrics_port}/metrics",
                        "model": m.manifest.model,
                        "backend": m.info.backend,
                        "precision": m.info.precision,
                        "device": m.info.device,
                        "index": str(opts.index) if opts.index else None,
                    }
                )
            )
            triton.serve()
    finally:
        for s in svcs:
            s.close()
    return 0
