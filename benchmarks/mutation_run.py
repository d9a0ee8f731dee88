"""Mutation testing of the code where a wrong answer hurts users most: does a test fail on each mutant?

    python benchmarks/mutation_run.py [--only ID,ID] [--out benchmarks/results/mutation_run.json]
    bash dev.sh mutate

Each mutant is one realistic, hand-written change (a flipped sign, an off-by-one, a dropped step)
to one module: metrics, search and engines, backends and manifests, image decoding and preprocessing, index
build and resume, the accuracy gate, INT8 calibration, the P x K sampler. For each, the module is
changed in a copy of `src/`, the tests that own that module run against the copy
(PYTHONPATH first, so subprocesses such as fm-index see it too), and the mutant is *killed* when
they fail. A mutant marked `equivalent` cannot change any result; it is listed with the reason and
not run. Runs outside CI (minutes, not seconds); re-run it whenever these modules change.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mutants import MUTANTS  # benchmarks/mutants.py, beside this script

from fashion_match.bench.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
PKG = "src/fashion_match/"


def _apply(text: str, m: dict[str, str]) -> str:
    if text.count(m["old"]) != 1:
        raise SystemExit(f"mutant {m['id']}: its text occurs {text.count(m['old'])} times in {m['file']}, not once")
    out = text.replace(m["old"], m["new"])
    if m.get("prelude"):
        out = out.replace(
            "from __future__ import annotations\n", "from __future__ import annotations\n\n" + m["prelude"], 1
        )
    compile(out, m["file"], "exec")  # a mutant that does not parse would be killed for nothing
    return out


def run(m: dict[str, str], copy: Path) -> dict[str, object]:
    target = copy / "fashion_match" / m["file"]
    original = target.read_text(encoding="utf-8")
    target.write_text(_apply(original, m), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    t0 = time.perf_counter()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m["tests"].split()],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        target.write_text(original, encoding="utf-8")
    tail = (r.stdout.strip().splitlines() or [""])[-1]
    killed = r.returncode not in (0, 5)  # 5: no test ran, which kills nothing
    return {
        "id": m["id"],
        "file": m["file"],
        "tests": m["tests"],
        "killed": killed,
        "summary": tail[:200],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated mutant ids")
    ap.add_argument("--out", type=Path, help="write the record here (default: print only)")
    args = ap.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m["id"] in args.only.split(",")]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="fm-mutants-") as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(ROOT / "src", copy, ignore=shutil.ignore_patterns("assets", "__pycache__", "*.egg-info"))
        (copy / "fashion_match" / "assets").symlink_to(ROOT / PKG / "assets")
        for m in chosen:
            if m.get("equivalent"):
                _apply((ROOT / PKG / m["file"]).read_text(encoding="utf-8"), m)  # still names real code
                rows.append({"id": m["id"], "file": m["file"], "equivalent": m["equivalent"]})
                print(f"{m['id']:<28} equivalent: {m['equivalent']}", flush=True)
                continue
            row = run(m, copy)
            rows.append(row)
            print(f"{m['id']:<28} {'killed' if row['killed'] else 'SURVIVED'}  {row['summary']}", flush=True)
    live = [r for r in rows if "equivalent" not in r]
    killed = sum(1 for r in live if r["killed"])
    summary = {
        "mutants": len(rows),
        "equivalent": len(rows) - len(live),
        "killed": killed,
        "survived": [r["id"] for r in live if not r["killed"]],
        "kill_rate": round(killed / len(live), 4) if live else None,
    }
    print(json.dumps(summary))
    if args.out:
        record = {
            "benchmark": "hand-written mutants of the modules where wrong answers hurt",
            **summary,
            "rows": rows,
            "command": "python benchmarks/mutation_run.py --out benchmarks/results/mutation_run.json",
            "machine": machine_info(),
            "date": time.strftime("%Y-%m-%d"),
        }
        args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
