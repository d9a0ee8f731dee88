"""Where should the attribute branch start, and how long should it train? A small side-by-side.

    python benchmarks/attr_branch_depth.py [--items 2000] [--out FILE | --record]

Trains the attribute branch and spaces on the item model the embedded default was made from (git
commit 33b33d5, as benchmarks/recipes/default_model_attributes.sh does) with `fm-train --spaces-for`,
on `--items` fmnist-attr items (both renders), for each configuration below, and records each run's
test mAP per space (ASEN protocol on the run's own test split), its wall time and the command. A
smaller budget than the shipped model's (10,000 items, 10 epochs): it compares settings, it does not
reproduce the shipped figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fashion_match.bench.machine import machine_info
from fashion_match.bench.records import add_output_args, write_result

ROOT = Path(__file__).resolve().parents[1]
BASE_COMMIT = "33b33d5"
CONFIGS = (  # (label, fm-train arguments)
    ("from block 14, 4 epochs", ["--from-block", "14", "--taps", "3,6", "--epochs", "4"]),
    ("from block 11, 4 epochs", ["--from-block", "11", "--taps", "3,6", "--epochs", "4"]),
    ("from block 14, 8 epochs", ["--from-block", "14", "--taps", "3,6", "--epochs", "8"]),
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=2000)
    add_output_args(ap, "attr_branch_depth.json")
    args = ap.parse_args()
    fm_train = str(Path(sys.executable).parent / "fm-train")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        archive = subprocess.run(
            ["git", "archive", BASE_COMMIT, "src/fashion_match/assets/default_model"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "--strip-components=4", "-C", str(base)], input=archive, check=True)
        for i, (label, extra) in enumerate(CONFIGS):
            cmd = [fm_train, "--spaces-for", str(base), "--data", "fmnist-attr", *extra]
            cmd += [
                "--train-limit",
                str(2 * args.items),
                "--eval-limit",
                "2000",
                "--out",
                str(Path(tmp) / f"run{i}"),
                "--json",
            ]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            row = {"config": label, "args": extra, "seconds": round(time.perf_counter() - t0)}
            if r.returncode:
                row["error"] = r.stderr.strip().splitlines()[-1:]
            else:
                row["test_map"] = json.loads(r.stdout)["test_map"]
            runs.append(row)
            print(json.dumps(row), flush=True)
    write_result(
        args,
        ROOT / "benchmarks/results/attr_branch_depth.json",
        {
            "command": "python benchmarks/attr_branch_depth.py"
            + (f" --items {args.items}" if args.items != 2000 else ""),
            "base_commit": BASE_COMMIT,
            "items": args.items,
            "runs": runs,
            "machine": machine_info(),
            "date": time.strftime("%Y-%m-%d"),
        },
    )


if __name__ == "__main__":
    main()
