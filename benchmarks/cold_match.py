"""Cold `fm-match` wall time: a fresh process per run, as a user types it.

    python benchmarks/cold_match.py [--runs 20] [--out FILE | --record]

Each run starts `fm-match A B` from the same virtual environment (new interpreter, imports,
model load with manifest hash check, decode, inference, verdict). The first run is reported
apart: it may pay for a cold page cache. No caches are dropped; the figures are warm-disk.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fashion_match.bench.machine import machine_info
from fashion_match.bench.records import add_output_args, output_path
from fashion_match.fileio import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
PAIR = (ROOT / "examples/sample/01-pullover/consumer.jpg", ROOT / "examples/sample/01-pullover/shop.png")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    add_output_args(ap, "cold_match.json")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = ap.parse_args()
    exe = Path(sys.executable).parent / "fm-match"
    cmd = [str(exe), str(PAIR[0]), str(PAIR[1])]
    times, out = [], ""
    for _ in range(args.runs + 1):
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if r.returncode not in (0, 1):
            raise SystemExit(f"fm-match failed: {r.stderr.strip()}")
        out = r.stdout.strip()
    first, rest = times[0], sorted(times[1:])
    result = {
        "benchmark": "cold fm-match of two images, default model, one process per run",
        "command": " ".join(["fm-match", *(str(p.relative_to(ROOT)) for p in PAIR)]),
        "output": out,
        "runs": args.runs,
        "first_run_s": round(first, 4),
        "median_s": round(statistics.median(rest), 4),
        "p90_s": round(rest[int(0.9 * (len(rest) - 1))], 4),
        "max_s": round(rest[-1], 4),
        "min_s": round(rest[0], 4),
        "target_s": 0.4,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    out_path = output_path(args, ROOT / "benchmarks/results/cold_match.json")
    if out_path:
        write_json_atomic(out_path, result)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"cold fm-match: median {result['median_s']:.3f} s, p90 {result['p90_s']:.3f} s, "
            f"first {result['first_run_s']:.3f} s over {args.runs} runs" + (f" -> {out_path}" if out_path else "")
        )


if __name__ == "__main__":
    main()
