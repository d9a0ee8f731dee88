"""`onnx2int8`: explicit INT8 quantisation (QuantizeLinear/DequantizeLinear) calibrated on real images.

The Q/DQ flavour depends on who runs the file, so it is chosen per target and recorded:

- `onnxruntime`: unsigned 8-bit activations with a zero point, signed symmetric per-channel
  weights (U8S8) - what ONNX Runtime's CPU kernels fuse into QLinearConv and run fast. The weights
  use the full -127..127: x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake, AMD before
  Zen 4) add each pair of uint8 x int8 products in 16 bits there, which such weights can overflow,
  so the gates and the runtime ask ONNX Runtime for its exact kernels on those CPUs (`PRECISE_INT8`).
  Weights kept to -64..64 (7 bits) would not overflow, but cost the default model more accuracy
  than saturation-free kernels cost time (benchmarks/results/int8_saturation.json).
- `tensorrt`: signed symmetric INT8 everywhere (zero point 0) - the only form TensorRT accepts
  for explicit quantisation. ONNX Runtime's CPU runs this flavour *slower* than FP32, so it is
  never the `onnxruntime` artifact.

Only the backbone is quantised (see `export.regions`); the tail (pooling, projection, L2
normalisation) stays FP32, which keeps the embedding's direction. The input normalisation stays
FP32 for TensorRT; for ONNX Runtime it is folded into the first convolution so the uint8 pixels
feed it directly (see `export.fold_input`).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fashion_match.data.images import load_batch
from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.data.records import spaced
from fashion_match.errors import ExportError, UsageError
from fashion_match.export.calib_ranges import compute_ranges, write_cache
from fashion_match.export.fold_input import FoldedInput, feed_pixels_directly, fold_normalisation
from fashion_match.export.regions import split_names
from fashion_match.runtime.onnxruntime_backend import SATURATION_FREE_WEIGHT_MAX

log = logging.getLogger(__name__)

TARGETS = ("onnxruntime", "tensorrt")
CALIB_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIB = "fmnist-c2s"  # Fashion-MNIST train items: their clean shop photos and consumer photos
DEFAULT_CALIB_IMAGES = 128


@dataclass(frozen=True)
class Flavour:
    target: str
    activations: str  # uint8 | int8
    weights: str
    activation_symmetric: bool
    weight_symmetric: bool
    quantize_bias: bool  # ORT fuses int32 biases; TensorRT dequantises only int8 (its biases stay float)
    weight_max: int = 127  # largest |quantised weight|; 64 (7 bits) would keep U8S8 kernels from saturating
    per_channel: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "format": "QDQ",
            "activations": self.activations,
            "weights": self.weights,
            "activation_symmetric": self.activation_symmetric,
            "weight_symmetric": self.weight_symmetric,
            "per_channel_weights": self.per_channel,
            "weight_max": self.weight_max,
            "bias": "int32" if self.quantize_bias else "float32",
        }


FLAVOURS = {
    "onnxruntime": Flavour(
        "onnxruntime", "uint8", "int8", activation_symmetric=False, weight_symmetric=True, quantize_bias=True
    ),
    "tensorrt": Flavour(
        "tensorrt", "int8", "int8", activation_symmetric=True, weight_symmetric=True, quantize_bias=False
    ),
}


def calibration_sources(spec: str, n: int) -> tuple[list[Any], str]:
    """`n` evenly spaced images from the train split of dataset `spec` (all images if it has none)."""
    from fashion_match.data.spec import load_dataset

    ds = load_dataset(spec)
    recs = [r for r in ds.records if r.split == "train"] or list(ds.records)
    if not recs:
        raise UsageError(f"--calib {spec}: the dataset has no images")
    picked = [recs[i] for i in spaced(list(range(len(recs))), n)]
    return [r.source for r in picked], f"{spec}: {len(picked)} evenly spaced train images of {len(recs)}"


class _QuietRoot(logging.Filter):
    """The quantiser logs advice through the root logger ("consider pre-processing"): not the user's concern."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "root"


def decode_calibration(sources: list[Any], spec: PreprocessSpec) -> np.ndarray:
    batch = load_batch(sources, spec)
    if batch.bad:
        log.warning("calibration: skipped %d unreadable images (first: %s)", len(batch.bad), batch.bad[0])
    if len(batch.indices) == 0:
        raise UsageError("calibration: no readable images")
    return batch.pixels


class Int8Quantiser:
    """One FP32 graph, its activation ranges computed once, quantised as often as needed: the whole
    backbone (`onnx2int8`), or with some of its nodes kept FP32 or only some quantised (the
    sensitivity scan and the mixed-precision search, `export.sensitivity`)."""

    def __init__(
        self,
        src: str | Path,
        pixels: np.ndarray,
        *,
        target: str = "onnxruntime",
        method: str = "percentile",
        percentile: float = 99.99,
        batch: int = 16,
        ranges: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        """`ranges`: activation ranges already computed for these pixels (a graph cut from the same
        one shares its tensors' names), so a second quantiser does not calibrate again."""
        import onnx

        if target not in FLAVOURS:
            raise UsageError(f"--target {target}: choose one of {', '.join(TARGETS)}")
        if method not in CALIB_METHODS:
            raise UsageError(f"--calib-method {method}: choose one of {', '.join(CALIB_METHODS)}")
        self.flavour, self.method, self.percentile = FLAVOURS[target], method, percentile
        self.calibration_images = int(len(pixels))
        self._workdir = tempfile.TemporaryDirectory(prefix="fm-int8-")
        try:
            model = onnx.load(str(src))
            self.folded: FoldedInput | None = fold_normalisation(model) if target == "onnxruntime" else None
            self.backbone, self.kept = split_names(model.graph)
            self.graph = model.graph
            self.float_model = Path(self._workdir.name) / "float.onnx"
            onnx.save(model, str(self.float_model))
            self.ranges = (
                dict(ranges)
                if ranges is not None
                else compute_ranges(self.float_model, pixels, method, percentile, batch)
            )
            if self.folded is not None:  # pixels - z over all of 0..255: uint8 scale 1, zero point z (the pixel)
                self.ranges[self.folded.tensor] = (-float(self.folded.zero_point), 255.0 - self.folded.zero_point)
        except (UsageError, ExportError):
            self._workdir.cleanup()
            raise
        except Exception as e:  # noqa: BLE001 - loading, folding and calibrating raise many types
            self._workdir.cleanup()
            raise ExportError(f"int8 calibration failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from e

    def __enter__(self) -> Int8Quantiser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._workdir.cleanup()

    def quantise(
        self, dst: str | Path, keep_fp32: list[str] | tuple[str, ...] = (), only: list[str] | None = None
    ) -> dict[str, Any]:
        """Write the Q/DQ model to `dst` (atomically); `keep_fp32`: backbone nodes left in FP32;
        `only`: quantise just these backbone nodes."""
        import onnx
        from onnxruntime import quantization as q

        from fashion_match.fileio import make_temp

        unknown = sorted(set(keep_fp32) - set(self.backbone)) + sorted(set(only or ()) - set(self.backbone))
        if unknown:
            raise UsageError(f"not backbone nodes of this graph: {', '.join(unknown[:5])}")
        methods = {
            "minmax": q.CalibrationMethod.MinMax,
            "entropy": q.CalibrationMethod.Entropy,
            "percentile": q.CalibrationMethod.Percentile,
        }
        qtype = {"uint8": q.QuantType.QUInt8, "int8": q.QuantType.QInt8}
        flavour = self.flavour
        extra = {
            "ActivationSymmetric": flavour.activation_symmetric,
            "WeightSymmetric": flavour.weight_symmetric,
            "QuantizeBias": flavour.quantize_bias,
            "CalibPercentile": self.percentile,
        }
        dst = Path(dst)
        tmp = make_temp(dst.parent, dst.name)
        quiet = _QuietRoot()
        logging.getLogger().addFilter(quiet)
        try:
            cache = Path(self._workdir.name) / "ranges.json"
            write_cache(self.ranges, methods[self.method], cache)
            q.quantize_static(
                str(self.float_model),
                str(tmp),
                None,
                calibration_cache_path=cache,
                quant_format=q.QuantFormat.QDQ,
                per_channel=flavour.per_channel,
                # weights only: -64..64 (activations keep 8 bits)
                reduce_range=flavour.weight_max <= SATURATION_FREE_WEIGHT_MAX,
                activation_type=qtype[flavour.activations],
                weight_type=qtype[flavour.weights],
                nodes_to_quantize=list(only) if only is not None else None,
                nodes_to_exclude=[*self.kept, *keep_fp32],
                calibrate_method=methods[self.method],
                extra_options=extra,
            )
            feeds = False
            if self.folded is not None:
                quantised = onnx.load(str(tmp))
                folded = self.folded.tensor
                # the first convolution may be one of the nodes kept FP32: then it takes the float pixels
                feeds = any(n.op_type == "QuantizeLinear" and n.input[0] == folded for n in quantised.graph.node)
                if feeds:
                    feed_pixels_directly(quantised, self.folded)
                    onnx.save(quantised, str(tmp))
            onnx.checker.check_model(str(tmp), full_check=True)
            tmp.replace(dst)
        except (UsageError, ExportError):
            raise
        except Exception as e:  # noqa: BLE001 - the quantiser raises many types
            raise ExportError(f"int8 quantisation failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from e
        finally:
            logging.getLogger().removeFilter(quiet)
            tmp.unlink(missing_ok=True)
        quantised_nodes = len(only) if only is not None else len(self.backbone) - len(keep_fp32)
        return {
            **flavour.to_dict(),
            "quantizer": "fashion-match (onnxruntime.quantization.quantize_static, QDQ)",
            "calibration_method": self.method,
            **({"percentile": self.percentile} if self.method == "percentile" else {}),
            "calibration_images": self.calibration_images,
            "quantised_nodes": quantised_nodes,
            "fp32_nodes": len(self.graph.node) - quantised_nodes,
            "kept_fp32": "global pooling, projection, L2 normalisation"
            + ("" if self.folded else ", input cast and normalisation"),
            **(self.folded.to_dict() if self.folded and feeds else {"pixels_feed_first_conv": False}),
        }


def onnx2int8(
    src: str | Path,
    dst: str | Path,
    pixels: np.ndarray,
    *,
    target: str = "onnxruntime",
    method: str = "percentile",
    percentile: float = 99.99,
    batch: int = 16,
) -> dict[str, Any]:
    """Quantise FP32 `src` to `dst` with activation ranges from uint8 `pixels` (N, S, S, 3)."""
    with Int8Quantiser(src, pixels, target=target, method=method, percentile=percentile, batch=batch) as q:
        return q.quantise(dst)
