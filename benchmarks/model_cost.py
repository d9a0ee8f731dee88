"""What a model's extra heads cost: throughput of model directories side by side, interleaved rounds.

    python benchmarks/model_cost.py --models DIR... [--precisions fp32,int8] [--batch 32] [--rounds 4] [--out F]

For each round, each precision and each model in turn: fm-bench's FULL timing plan (3 warm-up calls,
>= 10 calls and >= 2 s, 4 rotated batches of real Fashion-MNIST test images) through `embed` (the
graph computes every output it has), ONNX Runtime CPU. Every round's img/s is recorded and the
median ratio of each model to the first, per precision, so the claim rests on the spread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fashion_match.bench.machine import machine_info
from fashion_match.bench.timing import FULL, measure, rotated_batches, summarise
from fashion_match.data.evalset import load_eval_set
from fashion_match.runtime.backend import open_backend
from fashion_match.runtime.manifest import load_manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", type=Path, required=True, help="the first is the reference")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    mans = [load_manifest(m) for m in args.models]
    pool = load_eval_set("fashion-mnist", mans[0].preprocess, (128, 1), (128, 1)).q_pixels
    batches = rotated_batches(pool, args.batch)
    precisions = args.precisions.split(",")
    backends = {
        (i, p): open_backend(m, "onnxruntime", p, device="cpu") for i, m in enumerate(args.models) for p in precisions
    }
    rounds = []
    try:
        for r in range(args.rounds):
            row: dict[str, object] = {"round": r + 1}
            for p in precisions:
                for i, man in enumerate(mans):
                    ips = summarise(measure(backends[(i, p)].embed, batches, FULL), args.batch)["throughput_ips"]
                    row[f"{man.model} {p}"] = ips
            rounds.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for be in backends.values():
            be.close()
    ratios = {}
    for p in precisions:
        ref = np.array([r[f"{mans[0].model} {p}"] for r in rounds], dtype=float)
        for man in mans[1:]:
            got = np.array([r[f"{man.model} {p}"] for r in rounds], dtype=float)
            ratios[f"{man.model} / {mans[0].model} {p}"] = round(float(np.median(got / ref)), 3)
    result = {
        "benchmark": "throughput of model directories side by side (ONNX Runtime CPU, embed, interleaved rounds)",
        "models": {m.model: str(d) for m, d in zip(mans, args.models, strict=True)},
        "batch": args.batch,
        "rounds": rounds,
        "median_ratio_to_first": ratios,
        "command": f"python benchmarks/model_cost.py --models {' '.join(map(str, args.models))} --rounds {args.rounds}",
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(ratios))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
