"""Weight-space ensembling sweep: trained backbone vs ImageNet backbone, A * trained + (1 - A) * ImageNet.

    python benchmarks/wise_sweep.py --checkpoint RUN[/latest] 0.5 0.75 1.0 [--soup CKPT...] [--mix RUN B] [--full]
        [--out FILE]

For each A: export (ONNX Runtime fp32), then Fashion-MNIST category retrieval (2,000 evenly spaced
test queries x 10,000 train images), fmnist-c2s instance retrieval (the first 2,000 consumer photos x
their shop photos), and benchmarks/real_photo_check.py. `--full` replaces the two subsamples with
benchmarks/eval_model.py's full protocols (10,000 x 60,000 and 10,000 x 10,000; ~6 min more per A on
two cores). Prints one JSON line per A; this is how the shipped default model's A was chosen (see
docs/default_model.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from fashion_match.bench.accuracy import evaluate, full_protocol
from fashion_match.data.evalset import load_eval_set
from fashion_match.export.torch2onnx import torch2onnx
from fashion_match.models.merge import interpolate_with_imagenet, load_checkpoint, mix_with_run, soup_with
from fashion_match.runtime import Matcher
from fashion_match.runtime.backend import embed_in_batches, open_backend
from fashion_match.runtime.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("alphas", type=float, nargs="+")
    ap.add_argument("--mix", nargs=2, metavar=("RUN", "B"), help="as make_default_model.py --mix")
    ap.add_argument("--soup", nargs="+", type=Path, default=[], metavar="CKPT", help="as make_default_model.py --soup")
    ap.add_argument("--full", action="store_true", help="full protocols instead of subsamples")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    model = load_checkpoint(args.checkpoint)[0]
    if args.soup:
        soup_with(model, args.soup)
    if args.mix:
        mix_with_run(model, Path(args.mix[0]), float(args.mix[1]))
    start = {k: v.clone() for k, v in model.state_dict().items()}  # each A starts from the same weights
    for a in args.alphas:
        model.load_state_dict(start)
        interpolate_with_imagenet(model, a)
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "m"
            torch2onnx(model.eval(), out, threshold=0.5, save_weights=False)
            m = load_manifest(out)
            row: dict = {"alpha": a, **({"mix": [args.mix[0], float(args.mix[1])]} if args.mix else {})}
            if args.soup:
                row["soup"] = [str(f) for f in args.soup]
            if args.full:
                row["protocols"] = "full"
                with Matcher(out, batch_size=64) as matcher:
                    for spec in ("fashion-mnist", "fmnist-c2s"):
                        r = full_protocol(matcher, spec)
                        row[spec] = {k: r.get(k) for k in ("recall_at_1", "recall_at_10", "map_at_r", "pair_auc")}
            else:
                for spec, nq, ng in [("fashion-mnist", 2000, 10000), ("fmnist-c2s", 2000, 2000)]:
                    es = load_eval_set(spec, m.preprocess, (nq, ng), (nq, ng))
                    with open_backend(out, "onnxruntime", "fp32", device="cpu") as be:
                        q, g = embed_in_batches(be.embed, es.q_pixels), embed_in_batches(be.embed, es.g_pixels)
                    r = evaluate(q, g, es, m.threshold)
                    row[spec] = {k: r[k] for k in ("recall_at_1", "map_at_r", "pair_auc")}
            real = Path(d) / "real.json"
            cmd = [
                sys.executable,
                str(ROOT / "benchmarks" / "real_photo_check.py"),
                "--model",
                str(out),
                "--out",
                str(real),
            ]
            subprocess.run(cmd, check=True, capture_output=True)
            rp = json.loads(real.read_text())
            row["real_photos"] = {k: rp[k] for k in ("recall_at_1", "map_at_r", "pair_auc")}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        found = {"checkpoint": str(args.checkpoint), "soup": [str(f) for f in args.soup], "mix": args.mix}
        found |= {"full": args.full, "rows": rows}
        args.out.write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main()
