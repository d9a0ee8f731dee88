"""fashion-match's own graph surgery against the libraries built for it, on the export gate's data.

    python benchmarks/quantizer_compare.py [--model DIR] [--out FILE]

- INT8, TensorRT flavour (symmetric int8 Q/DQ): fashion-match's placement (ONNX Runtime's quantiser
  with our rules) against NVIDIA Model Optimizer's (`modelopt.onnx.quantization.quantize`), both on
  the same activation ranges (our calibration: 128 fmnist-c2s train images, percentile 99.99);
- FP16 with the tail kept FP32: fashion-match's `onnx2fp16` against onnxconverter-common's
  `float16.convert_float_to_float16` (node_block_list = the same tail, keep_io_types).
All files run on ONNX Runtime CPU through the export gate (category Recall@1, instance Recall@1,
verification accuracy, cosine to FP32), the only place either INT8 file can run here: their
TensorRT accuracy and speed have not been measured.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fashion_match.bench.machine import machine_info
from fashion_match.export import gate as gates
from fashion_match.export.modelopt_int8 import onnx2int8_modelopt
from fashion_match.export.onnx2fp16 import onnx2fp16
from fashion_match.export.onnx2int8 import calibration_sources, decode_calibration, onnx2int8
from fashion_match.export.regions import split_names
from fashion_match.runtime.manifest import default_model_dir, load_manifest

FIGURES = (
    "mean_cosine",
    "min_cosine",
    "recall_at_1_drop_pts",
    "instance_recall_at_1_drop_pts",
    "verification_accuracy_drop_pts",
    "standard_error_pts",
)


def fp16_onnxconverter(src: Path, dst: Path) -> dict:
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    _, kept = split_names(model.graph)
    half = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=kept)
    onnx.save(half, str(dst))
    onnx.checker.check_model(str(dst), full_check=True)
    return {"converter": "onnxconverter-common float16.convert_float_to_float16", "blocked_nodes": len(kept)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    folder = args.model or default_model_dir()
    man = load_manifest(folder)
    fp32, _ = man.artifact("onnxruntime", "fp32")
    sources, described = calibration_sources("fmnist-c2s", 128)
    pixels = decode_calibration(sources, man.preprocess)
    gs = gates.build_gate_set(man.preprocess)
    ref = gates.embed_gate_set(fp32, gs)
    makers = {
        "int8_trt/fashion-match": lambda d: onnx2int8(fp32, d, pixels, target="tensorrt"),
        "int8_trt/modelopt": lambda d: onnx2int8_modelopt(fp32, d, pixels),
        "fp16/fashion-match": lambda d: onnx2fp16(fp32, d),
        "fp16/onnxconverter-common": lambda d: fp16_onnxconverter(fp32, d),
    }
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in makers.items():
            dst = Path(tmp) / (name.replace("/", "_") + ".onnx")
            t0 = time.perf_counter()
            info = make(dst)
            seconds = round(time.perf_counter() - t0, 1)
            precision = name.split("/")[0].split("_")[0]
            g = gates.run_gate(dst, precision, gs, ref, man.threshold, allow_drop_pts=100.0)
            rows[name] = {"made_in_s": seconds, "bytes": dst.stat().st_size, **{k: g.get(k) for k in FIGURES}}
            rows[name]["made_by"] = info.get("quantizer") or info.get("converter") or "fashion-match onnx2fp16"
            print(name, json.dumps({k: rows[name][k] for k in FIGURES[:5]}), flush=True)
    result = {
        "command": "python benchmarks/quantizer_compare.py",
        "model": man.short_id(),
        "data": gs.description,
        "calibration": described + ", percentile 99.99 (both INT8 files use these ranges)",
        "runtime": "ONNX Runtime CPU (TensorRT not available: neither INT8 file was built into an engine)",
        "rows": rows,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
