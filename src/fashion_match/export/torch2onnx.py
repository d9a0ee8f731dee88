"""`torch2onnx`: embedding model -> ONNX with preprocessing inside the graph.

The graph takes what a decoder gives: uint8 RGB pixels (N, S, S, 3). It casts, reorders
channels and normalises in-graph, so the runtime cannot drift from training, and returns
L2-normalised float32 embeddings (N, D). Batch is dynamic.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fashion_match import __version__
from fashion_match.data.images import load_batch
from fashion_match.errors import ExportError
from fashion_match.export.onnx_graph import shapes_from_the_cast
from fashion_match.export.parity import check_parity, parity_images
from fashion_match.export.trt_rules import tensorrt_problems
from fashion_match.fileio import make_temp, sha256_file
from fashion_match.formats import FP32_ONNX, WEIGHTS
from fashion_match.models.embedding import EmbeddingModel
from fashion_match.models.ingraph import InGraphOutputs, InGraphPreprocess
from fashion_match.progress import stage
from fashion_match.runtime.manifest import FORMAT_VERSION, write_manifest
from fashion_match.runtime.tagging import POSTERIORS_OUTPUT, SPACES_OUTPUT, TAGS_OUTPUT

log = logging.getLogger(__name__)
OPSET = 18  # torch's current (dynamo) exporter targets 18; >= 17 as the issue asks
INPUT, OUTPUT = "pixels", "embedding"


def output_names(model: EmbeddingModel) -> list[str]:
    """The graph's outputs, in InGraphOutputs' order: the embedding, then the heads the model has."""
    return (
        [OUTPUT]
        + ([TAGS_OUTPUT] if model.tag_heads is not None else [])
        + ([SPACES_OUTPUT] if model.attr_spaces is not None else [])
        + ([POSTERIORS_OUTPUT] if model.space_readout is not None else [])
    )


def check_extra_parity(
    model: EmbeddingModel, onnx_path: Path, pixels: np.ndarray, tol: float = 1e-3
) -> dict[str, float]:
    """The tag probabilities and attribute spaces of the ONNX graph against PyTorch's, same pixels."""
    import onnxruntime as ort

    names = output_names(model)
    with torch.no_grad():
        ref = [t.numpy() for t in InGraphOutputs(model).eval()(torch.from_numpy(pixels))]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(names, {sess.get_inputs()[0].name: pixels})
    out = {}
    for name, r, g in list(zip(names, ref, got, strict=True))[1:]:
        diff = float(np.abs(np.asarray(g) - r).max())
        if not diff <= tol:
            raise ExportError(f"{onnx_path}: {name} parity failed: differs by up to {diff:.2e} (allowed {tol})")
        out[name] = round(diff, 8)
    return out


def export_graph(model: EmbeddingModel, path: Path, opset: int = OPSET) -> None:
    """Write the ONNX graph (single file, weights inside) and check it with onnx.checker."""
    import onnx

    names = output_names(model)
    wrapper = (InGraphOutputs(model) if len(names) > 1 else InGraphPreprocess(model)).eval()
    s = model.preprocess.size
    example = torch.zeros((2, s, s, 3), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            input_names=[INPUT],
            output_names=names,
            opset_version=opset,
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
        graph = onnx.load(str(path))
        shapes_from_the_cast(graph)
        problems = tensorrt_problems(graph)
        if problems:  # every FP32 graph is an engine source; say so now, not on the user's GPU
            raise ExportError(f"the exported graph breaks TensorRT's input rules: {'; '.join(problems[:3])}")
        onnx.save(graph, str(path))
        onnx.checker.check_model(str(path), full_check=True)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - exporter internals raise many types
        raise ExportError(
            f"ONNX export of {model.name} failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
        ) from e


def torch2onnx(
    model: EmbeddingModel,
    out_dir: str | Path,
    *,
    threshold: float | None = None,
    threshold_rule: str | None = None,
    kept_calibration: dict[str, Any] | None = None,
    calibration_data: str = "fmnist-c2s",
    calibration_items: int = 1000,
    parity_sources: list[Any] | None = None,
    opset: int = OPSET,
    source: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    spaces: dict[str, Any] | None = None,
    save_weights: bool = True,
    display_name: str | None = None,
) -> dict[str, Any]:
    """Export `model` into `out_dir` (model.onnx [+ model.safetensors] + manifest.json).

    With `threshold=None` the match threshold is calibrated on held-out pairs of
    `calibration_data` (see `export.calibrate`); the figures go into the manifest.

    Files are written under temporary names and renamed only after the parity gate passes;
    the manifest is written last, so a crash never leaves a directory the runtime would accept.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    t0 = time.perf_counter()
    tmp = make_temp(out, FP32_ONNX)
    try:
        with stage(f"fp32: ONNX graph of {model.name}"):
            export_graph(model, tmp, opset)
        sources = parity_sources if parity_sources is not None else parity_images()
        batch = load_batch(sources, model.preprocess)
        if batch.bad or len(batch.indices) < 3:
            raise ExportError(f"parity: need >= 3 decodable real images, got {len(batch.indices)} ({batch.bad[:1]})")
        with stage("fp32: parity with PyTorch"):
            parity = check_parity(InGraphPreprocess(model).eval(), tmp, batch.pixels)
            extra_parity = check_extra_parity(model, tmp, batch.pixels) if len(output_names(model)) > 1 else {}
        if threshold is None:
            from fashion_match.export.threshold import calibrate_onnx

            with stage(f"match threshold: calibrating on {calibration_items} {calibration_data} items"):
                calibration: dict[str, Any] = calibrate_onnx(tmp, model.preprocess, calibration_data, calibration_items)
            threshold = float(calibration["threshold"])
        else:
            calibration = {"rule": threshold_rule or "given by the user", "threshold": float(threshold)}
            if kept_calibration:  # a threshold kept from a base model keeps the figures it was chosen by
                calibration = {**kept_calibration, "kept": calibration["rule"], "threshold": float(threshold)}
        os.replace(tmp, out / FP32_ONNX)
    finally:
        tmp.unlink(missing_ok=True)
    artifacts: dict[str, Any] = {
        FP32_ONNX: {
            "backend": "onnxruntime",
            "precision": "fp32",
            "sha256": sha256_file(out / FP32_ONNX),
            "bytes": (out / FP32_ONNX).stat().st_size,
            "opset": opset,
            "input": {"name": INPUT, "dtype": "uint8", "layout": "NHWC", "channels": "RGB"},
            "output": {"name": OUTPUT, "dtype": "float32", "l2_normalised": True},
            "parity": parity,
        }
    }
    if save_weights:
        from fashion_match.models.checkpoint import save_weights as save

        sw = save(model, out / WEIGHTS)
        artifacts[WEIGHTS] = {"backend": "torch", "precision": "fp32", **sw}
    manifest = {
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": display_name or model.name,
        "architecture": model.config(),
        "embedding_dim": model.output_dim,
        "preprocess": model.preprocess.to_dict(),
        "threshold": float(threshold),
        "calibration": calibration,
        "source": source or {"weights": model.weights_origin, "weights_sha256": model.weights_sha256},
        "torch_version": torch.__version__,
        "artifacts": artifacts,
    }
    if model.tag_heads is not None:  # what each block of the second output means, and when a tag is on
        manifest["tags"] = {
            "output": TAGS_OUTPUT,
            "attributes": model.tag_layout(),
            "thresholds": (tags or {}).get("thresholds", {}),
            "parity_max_abs_diff": extra_parity.get(TAGS_OUTPUT),
            **{k: v for k, v in (tags or {}).items() if k != "thresholds"},
        }
    if model.attr_spaces is not None:  # one space per attribute, each with its own match threshold
        thresholds = (spaces or {}).get("thresholds", {})
        block: dict[str, Any] = {
            "output": SPACES_OUTPUT,
            "dim": model.attr_spaces.dim,
            "attributes": [
                {"name": n, "values": v, "threshold": thresholds.get(n)}
                for n, v in zip(model.space_names, model.space_values, strict=True)
            ],
            "parity_max_abs_diff": extra_parity.get(SPACES_OUTPUT),
            **{k: v for k, v in (spaces or {}).items() if k not in ("thresholds", "posteriors")},
        }
        if model.space_readout is not None:  # what attribute matching and search compare by
            block["posteriors"] = {
                **((spaces or {}).get("posteriors") or {}),
                "output": POSTERIORS_OUTPUT,
                "width": model.space_readout.width,
                "parity_max_abs_diff": extra_parity.get(POSTERIORS_OUTPUT),
            }
        manifest["spaces"] = block
    write_manifest(out, manifest)
    log.info(
        "exported %s to %s in %.1fs (parity min cos %.6f)",
        model.name,
        out,
        time.perf_counter() - t0,
        parity["min_cosine"],
    )
    return manifest
