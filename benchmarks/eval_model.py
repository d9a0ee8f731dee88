"""Retrieval quality of a model directory on Fashion-MNIST and the fmnist-c2s stand-in.

    python benchmarks/eval_model.py [--model DIR] [--precision fp32|fp16|int8] [--out FILE]

Runs the exported ONNX model through the runtime (`Matcher`, ONNX Runtime CPU, fp32 unless
`--precision` says otherwise), exactly as `fm-match` would. Default output:
benchmarks/results/eval_<name>.json (eval_<name>_<precision>.json below fp32). Protocols:
- fashion-mnist (category retrieval): the 10,000 test images query the 60,000 train images; a hit
  shares the category. Recall@K, mAP@R (R = 6,000 same-category gallery images per query).
- fmnist-c2s (instance retrieval, a synthetic stand-in): the 10,000 test consumer photos query the
  10,000 test shop photos; a hit is the same item. Recall@K, mAP@R, pair verification AUC.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fashion_match.bench.accuracy import full_protocol
from fashion_match.bench.machine import machine_info
from fashion_match.bench.records import add_output_args, output_path
from fashion_match.fileio import write_json_atomic
from fashion_match.runtime import Matcher

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--precision", default="fp32")
    add_output_args(ap, "eval_<model>[_<precision>].json")
    args = ap.parse_args()
    with Matcher(args.model, precision=args.precision, batch_size=64) as m:
        result = {
            "model": m.manifest.short_id(),
            "model_dir": str(m.model_dir),
            "backend": m.info.backend,
            "precision": m.info.precision,
            "fashion-mnist": full_protocol(m, "fashion-mnist"),
            "fmnist-c2s": full_protocol(m, "fmnist-c2s"),
            "machine": machine_info(),
            "date": time.strftime("%Y-%m-%d"),
        }
    suffix = "" if args.precision == "fp32" else f"_{args.precision}"
    out = output_path(args, ROOT / "benchmarks" / "results" / f"eval_{m.manifest.model}{suffix}.json")
    if out:
        write_json_atomic(out, result)
    for name in ("fashion-mnist", "fmnist-c2s"):
        r = result[name]
        print(
            f"{name}: R@1 {r['recall_at_1']:.4f}  R@10 {r['recall_at_10']:.4f}  mAP@R {r['map_at_r']:.4f}  "
            f"AUC {r.get('pair_auc', float('nan')):.4f}"
        )
    print(f"-> {out}" if out else "(printed only: --out FILE or --record writes it)")


if __name__ == "__main__":
    main()
