"""Which CPU backend is fastest per precision? ONNX Runtime, OpenVINO and PyTorch eager in interleaved rounds.

    python benchmarks/backend_speed.py [--model DIR] [--batch 32] [--rounds 4] [--out FILE | --record]

fm-bench times each row once; on a shared 2-core machine a timing moves by 10-20 % between
moments. Here every (backend, precision) row that can run is timed once per round, rows in the
same order each round, for `--rounds` rounds (fm-bench's FULL plan each: 3 warm-up calls, then
>= 10 calls and >= 2 s over 4 rotated batches of real Fashion-MNIST test images; a short pause
before each row lets the previous library's spinning threads go idle). Recorded: every round's
images/s, each row's median, its ratio to ONNX Runtime FP32 per round, and per precision the
fastest backend with its lead over the next and the number of rounds it led.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from fashion_match.bench.machine import machine_info
from fashion_match.bench.records import add_output_args, output_path
from fashion_match.bench.timing import FULL, measure, rotated_batches, summarise
from fashion_match.data.evalset import load_eval_set
from fashion_match.errors import FmError
from fashion_match.fileio import write_json_atomic
from fashion_match.runtime.backend import open_backend
from fashion_match.runtime.manifest import default_model_dir, load_manifest

ROOT = Path(__file__).resolve().parents[1]
ROWS = (
    ("onnxruntime", "fp32"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("onnxruntime", "fp16"),
    ("openvino", "fp16"),
    ("onnxruntime", "int8"),
    ("openvino", "int8"),
    ("torch", "fp32"),
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=4)
    add_output_args(ap, "backend_speed.json")
    args = ap.parse_args()
    folder = args.model or default_model_dir()
    man = load_manifest(folder)
    batches = rotated_batches(load_eval_set("fashion-mnist", man.preprocess, (128, 1), (128, 1)).q_pixels, args.batch)
    opened, skipped = {}, {}
    for backend, precision in ROWS:
        try:
            opened[(backend, precision)] = open_backend(folder, backend, precision, device="cpu")
        except FmError as e:  # a row that cannot run here says why, and the others go on
            skipped[f"{backend}/{precision}"] = str(e)
    rates: dict[str, list[float]] = {f"{b}/{p}": [] for b, p in opened}
    details = {f"{b}/{p}": be.info.detail for (b, p), be in opened.items()}
    try:
        for r in range(args.rounds):
            for (backend, precision), be in opened.items():
                time.sleep(0.3)
                ips = summarise(measure(be.embed, batches, FULL), args.batch)["throughput_ips"]
                rates[f"{backend}/{precision}"].append(round(ips, 1))
            print(json.dumps({"round": r + 1, **{k: v[-1] for k, v in rates.items()}}), flush=True)
    finally:
        for be in opened.values():
            be.close()
    ref = rates.get("onnxruntime/fp32")
    rows = {}
    for key, v in rates.items():
        rows[key] = {"images_per_s": v, "median": round(statistics.median(v), 1), "detail": details[key]}
        if ref:
            per_round = [a / b for a, b in zip(v, ref, strict=True)]
            rows[key]["vs_onnxruntime_fp32_per_round"] = [round(x, 3) for x in per_round]
            rows[key]["vs_onnxruntime_fp32_median"] = round(statistics.median(per_round), 3)
    fastest = {}
    for precision in dict.fromkeys(p for _, p in ROWS):
        keys = [k for k in rates if k.endswith("/" + precision)]
        if not keys:
            continue
        best = max(keys, key=lambda k: rows[k]["median"])
        entry = {"backend": best.split("/")[0], "median": rows[best]["median"]}
        others = [k for k in keys if k != best]
        if others:
            nxt = max(others, key=lambda k: rows[k]["median"])
            entry["over"] = nxt.split("/")[0]
            entry["lead_median"] = round(
                statistics.median(a / b for a, b in zip(rates[best], rates[nxt], strict=True)), 3
            )
            entry["rounds_led"] = sum(a > b for a, b in zip(rates[best], rates[nxt], strict=True))
        fastest[precision] = entry
    result = {
        "command": "python benchmarks/backend_speed.py" + (f" --batch {args.batch}" if args.batch != 32 else ""),
        "model": man.short_id(),
        "batch": args.batch,
        "rounds": args.rounds,
        "rows": rows,
        "fastest_per_precision": fastest,
        "not_run": skipped,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(fastest))
    out = output_path(args, ROOT / "benchmarks/results/backend_speed.json")
    if out:
        write_json_atomic(out, result)


if __name__ == "__main__":
    main()
