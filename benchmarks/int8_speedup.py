"""How stable is INT8's speed-up over FP32? Interleaved rounds, ONNX Runtime CPU, one batch size.

    python benchmarks/int8_speedup.py [--model DIR] [--batch 32] [--rounds 6] [--out FILE]

fm-bench times each row once; on a shared 2-core machine one timing can move by 10-20 %. Here FP32
and INT8 alternate for `--rounds` rounds (fm-bench's FULL timing plan each: 3 warm-up calls, then
>= 10 calls and >= 2 s, 4 rotated batches of real Fashion-MNIST test images), and every round's
img/s and INT8/FP32 ratio is recorded, so the claim rests on the spread, not on one draw.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fashion_match.bench.machine import machine_info
from fashion_match.bench.timing import FULL, measure, rotated_batches, summarise
from fashion_match.data.evalset import load_eval_set
from fashion_match.runtime.backend import open_backend
from fashion_match.runtime.manifest import default_model_dir, load_manifest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    folder = Path(args.model) if args.model else default_model_dir()
    man = load_manifest(folder)
    pool = load_eval_set("fashion-mnist", man.preprocess, (128, 1), (128, 1)).q_pixels
    batches = rotated_batches(pool, args.batch)
    rounds = []
    with (
        open_backend(folder, "onnxruntime", "fp32", device="cpu") as fp32,
        open_backend(folder, "onnxruntime", "int8", device="cpu") as int8,
    ):
        for r in range(args.rounds):
            row = {"round": r + 1}
            for name, be in (("fp32", fp32), ("int8", int8)):
                row[name] = summarise(measure(be.embed, batches, FULL), args.batch)["throughput_ips"]
            row["ratio"] = round(row["int8"] / row["fp32"], 3)
            rounds.append(row)
            print(json.dumps(row), flush=True)
    ratios = np.array([r["ratio"] for r in rounds])
    result = {
        "command": "python benchmarks/int8_speedup.py" + (f" --batch {args.batch}" if args.batch != 32 else ""),
        "machine": machine_info(),
        "model": man.short_id(),
        "batch": args.batch,
        "rounds": rounds,
        "ratio_median": round(float(np.median(ratios)), 3),
        "ratio_min": round(float(ratios.min()), 3),
        "ratio_max": round(float(ratios.max()), 3),
    }
    print(json.dumps({k: result[k] for k in ("ratio_median", "ratio_min", "ratio_max")}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
