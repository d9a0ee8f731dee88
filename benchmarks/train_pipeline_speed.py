"""CPU cost of one training image in fm-train's loader: decode, synthesise, augment, normalise.

    python benchmarks/train_pipeline_speed.py [--data fmnist-c2s] [--augment consumer] [--n 400] [--out FILE]

On a GPU the loader workers, not the GPU, set fm-train's pace (7 workers fed 700-840 fmnist-c2s
images/s on an H100 box): images/s per worker is about 1000 / (ms per image). One process, one torch
thread (as in a DataLoader worker), the first N training records of each domain (shop and consumer
photos for fmnist-c2s), after one warm-up pass; the median of 3 passes is reported.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fashion_match.bench.machine import machine_info
from fashion_match.data.preprocess import IMAGENET
from fashion_match.data.spec import load_dataset
from fashion_match.train.augment import train_transform
from fashion_match.train.dataset import RecordDataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fmnist-c2s")
    ap.add_argument("--augment", default="consumer")
    ap.add_argument("--n", type=int, default=400, help="records per domain")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.data)
    train = [r for r in ds.records if r.split == "train"]
    domains = sorted({r.domain for r in train})
    rows = {}
    for dom in domains:
        recs = [r for r in train if r.domain == dom][: args.n]
        data = RecordDataset(recs, np.zeros(len(recs), np.int64), None, train_transform(IMAGENET, args.augment))
        for i in range(len(data)):  # warm-up: imports, caches
            data[i]
        passes = []
        for _ in range(3):
            t = time.perf_counter()
            for i in range(len(data)):
                data[i]
            passes.append((time.perf_counter() - t) / len(data) * 1e3)
        rows[dom] = {"ms_per_image": round(float(np.median(passes)), 3), "passes_ms": [round(p, 3) for p in passes]}
        print(f"{dom:10s} {rows[dom]['ms_per_image']:.2f} ms per image ({len(recs)} images, median of 3 passes)")
    if args.out:
        found = {
            "command": "python benchmarks/train_pipeline_speed.py "
            + " ".join(f"--{k} {v}" for k, v in (("data", args.data), ("augment", args.augment), ("n", args.n))),
            "machine": machine_info(),
            "torch_threads": 1,
            "rows": rows,
        }
        args.out.write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main()
