"""What ONNX Runtime's exact INT8 kernels cost on this CPU: a model's INT8 file with the fast and the exact kernels.

    python benchmarks/int8_kernel_speed.py [--model DIR] [--batch 32] [--rounds 5] [--out FILE]

On x86 CPUs without VNNI the fast U8S8 kernels can saturate with full-range weights, so the runtime
asks for the exact ones (`session.x64quantprecision`, docs/precision.md); on CPUs with VNNI or on ARM
the option changes nothing. This times `model.int8.onnx` both ways and `model.onnx` for reference, in
interleaved rounds (each a warm-up call, then at least 10 calls and 2 s), on the same random pixels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def session(path: Path, exact: bool) -> Any:
    import onnxruntime as ort

    from fashion_match.runtime.onnxruntime_backend import PRECISE_INT8

    opts = ort.SessionOptions()
    if exact:
        opts.add_session_config_entry(PRECISE_INT8, "1")
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    feed = sess.get_inputs()[0].name
    return lambda x: sess.run(["embedding"], {feed: x})


def images_per_second(run: Any, pixels: np.ndarray) -> float:
    run(pixels)
    times: list[float] = []
    while len(times) < 10 or sum(times) < 2.0:
        t = time.perf_counter()
        run(pixels)
        times.append(time.perf_counter() - t)
    return len(pixels) / statistics.median(times)


def main() -> None:
    from fashion_match.bench.machine import has_vnni, machine_info
    from fashion_match.bench.records import add_output_args, write_result
    from fashion_match.formats import FP32_ONNX
    from fashion_match.runtime.manifest import default_model_dir, load_manifest

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    add_output_args(ap, "int8_kernel_speed.json")
    args = ap.parse_args()
    model = args.model or default_model_dir()
    spec = load_manifest(model).preprocess
    pixels = np.random.default_rng(0).integers(0, 256, (args.batch, spec.size, spec.size, 3), dtype=np.uint8)
    runs = {
        "fp32": session(model / FP32_ONNX, exact=False),
        "int8 fast kernels": session(model / "model.int8.onnx", exact=False),
        "int8 exact kernels": session(model / "model.int8.onnx", exact=True),
    }
    rounds = []
    for r in range(args.rounds):
        row = {name: round(images_per_second(run, pixels), 1) for name, run in runs.items()}
        rounds.append(row)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v} img/s" for k, v in row.items()), flush=True)
    median = {k: statistics.median(r[k] for r in rounds) for k in runs}
    result = {
        "benchmark": "ONNX Runtime CPU throughput of model.int8.onnx with the fast and the exact INT8 kernels",
        "model": load_manifest(model).model,
        "batch": args.batch,
        "vnni": has_vnni(),
        "rounds": rounds,
        "median_images_per_second": median,
        "exact_over_fast": round(median["int8 exact kernels"] / median["int8 fast kernels"], 3),
        "command": " ".join(["python", "benchmarks/int8_kernel_speed.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_result(args, ROOT / "benchmarks/results/int8_kernel_speed.json", result)
    print(json.dumps(median))


if __name__ == "__main__":
    main()
