"""Do two model directories give the same embeddings? Bitwise, per precision, on real images.

    python benchmarks/compare_models.py A_DIR B_DIR [--images 2000] [--out FILE]

Embeds the same evenly spaced Fashion-MNIST test images and fmnist-c2s test consumer photos with
each directory's FP32, FP16 and INT8 files through the runtime (`Matcher`, ONNX Runtime CPU) and
records, per precision, the largest absolute difference and whether every value is identical.
Used when a model is re-exported with the same weights (a graph rewrite that must change nothing).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fashion_match.bench.machine import machine_info
from fashion_match.data.records import spaced
from fashion_match.data.spec import load_dataset
from fashion_match.formats import FILE_PRECISIONS
from fashion_match.runtime import Matcher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--images", type=int, default=2000, help="per dataset")
    ap.add_argument("--precisions", default=",".join(p.name for p in FILE_PRECISIONS))  # a file each
    ap.add_argument("--out", type=Path, help="write the record here (default: print only)")
    args = ap.parse_args()
    sources = []
    for spec, pick in (
        ("fashion-mnist", lambda r: r.split == "test"),
        ("fmnist-c2s", lambda r: r.split == "test" and r.domain == "consumer"),
    ):
        recs = [r for r in load_dataset(spec).records if pick(r)]
        sources += [recs[i].source for i in spaced(list(range(len(recs))), args.images)]
    rows = []
    for precision in args.precisions.split(","):
        t0 = time.perf_counter()
        with Matcher(args.a, precision=precision) as ma, Matcher(args.b, precision=precision) as mb:
            va, vb = ma.embed_strict(sources), mb.embed_strict(sources)
            ids = (ma.manifest.short_id(), mb.manifest.short_id())
        diff = float(np.abs(va - vb).max())
        rows.append(
            {
                "precision": precision,
                "images": len(sources),
                "identical": bool(np.array_equal(va, vb)),
                "max_abs_diff": diff,
                "a": ids[0],
                "b": ids[1],
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(json.dumps(rows[-1]))
    record = {
        "benchmark": "same embeddings from two model directories",
        "rows": rows,
        "command": f"python benchmarks/compare_models.py {args.a} {args.b} --images {args.images}",
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
