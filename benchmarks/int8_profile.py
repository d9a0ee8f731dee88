"""Where ONNX Runtime's CPU time goes in the default model, per kernel, FP32 against INT8.

    python benchmarks/int8_profile.py [--model DIR] [--batch 32] [--out FILE]

ONNX Runtime's own profiler (`export.ort_profile`), one session per file, one warm-up call, then
the mean of `--runs` calls on real Fashion-MNIST test images. Per kernel type: milliseconds per
batch and share of the total, for `model.onnx` and `model.int8.onnx`. With `--openvino` (the
[openvino] extra), OpenVINO's per-layer counters on the same files as a second opinion
(`bench.ov_profile`): per layer type and the kernel it ran on, FP32 arithmetic for both files, and
bf16 for `model.onnx` when the CPU has bf16 units.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fashion_match.bench.machine import machine_info
from fashion_match.data.evalset import load_eval_set
from fashion_match.export.ort_profile import node_times
from fashion_match.fileio import write_json_atomic
from fashion_match.runtime.manifest import default_model_dir, load_manifest


def by_kernel(path: Path, pixels, runs: int) -> dict:  # noqa: ANN001
    t = node_times(path, pixels, runs, by="op")
    total = sum(t.values())
    rows = sorted(t.items(), key=lambda kv: -kv[1])
    return {
        "total_ms": round(total / 1000, 2),
        "kernels": {k: {"ms": round(v / 1000, 2), "share": round(v / total, 4)} for k, v in rows},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--openvino", action="store_true", help="add OpenVINO's per-layer counters")
    args = ap.parse_args()
    folder = args.model or default_model_dir()
    man = load_manifest(folder)
    pixels = load_eval_set("fashion-mnist", man.preprocess, (args.batch, 1), (args.batch, 1)).q_pixels[: args.batch]
    result = {
        "command": "python benchmarks/int8_profile.py"
        + (f" --batch {args.batch}" if args.batch != 32 else "")
        + (" --openvino" if args.openvino else ""),
        "model": man.short_id(),
        "batch": args.batch,
        "runs": args.runs,
        "files": {},
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    for precision in ("fp32", "int8"):
        path, entry = man.artifact("onnxruntime", precision)
        result["files"][path.name] = by_kernel(path, pixels, args.runs)
        kept = entry.get("int8", {}).get("mixed_precision", {}).get("kept", [])
        if kept:
            result["files"][path.name]["kept_fp32"] = [k["unit"] for k in kept]
    if args.openvino:
        from fashion_match.bench import ov_profile
        from fashion_match.runtime.openvino_backend import cpu_capabilities

        runs = [("fp32", "fp32"), ("int8", "int8")] + ([("fp32", "bf16")] if "BF16" in cpu_capabilities() else [])
        result["openvino"] = {}
        for file_precision, arithmetic in runs:
            path, _ = man.artifact("onnxruntime", file_precision)
            layers = ov_profile.layer_times(path, pixels, args.runs, arithmetic)
            result["openvino"][f"{path.name} ({arithmetic})"] = ov_profile.by_kernel(layers)
    for name, r in [*result["files"].items(), *(("openvino " + k, v) for k, v in result.get("openvino", {}).items())]:
        top = ", ".join(f"{k} {v['share']:.0%}" for k, v in list(r["kernels"].items())[:6])
        print(f"{name}: {r['total_ms']} ms per batch of {args.batch}; {top}")
    if args.out:
        write_json_atomic(args.out, result)
    else:
        print(json.dumps(result["files"], indent=1)[:2000])


if __name__ == "__main__":
    main()
