"""Tag heads on an exported model's frozen features: imbalance-weighted, focal and plain losses side by side.

    python benchmarks/tag_imbalance.py [--model DIR] [--data fmnist-attr] [--train-limit 8000]
        [--eval-limit 4000] [--epochs 30] [--record]

The features are computed once and every loss trains on the same ones with the same seed and
budget, so the rows differ by the loss alone. Reported on the test split: tag mAP, macro-F1 at the
thresholds calibrated on held-out training items, DeepFashion-style top-3 / top-5 tag recall, the
AP of the three rarest tags (rarest in the training data), and accuracy of each single-valued
attribute. fmnist-attr is a stand-in rendered from Fashion-MNIST, not real photos.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fashion_match.bench.machine import machine_info
from fashion_match.bench.records import add_output_args, write_result
from fashion_match.data.spec import load_dataset
from fashion_match.formats import WEIGHTS
from fashion_match.models.checkpoint import load_weights
from fashion_match.runtime.manifest import default_model_dir, load_manifest
from fashion_match.train import tags

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--data", default="fmnist-attr")
    ap.add_argument("--train-limit", type=int, default=8000)
    ap.add_argument("--eval-limit", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=30)
    add_output_args(ap, "tag_imbalance.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    model_dir = args.model or default_model_dir()
    manifest = load_manifest(model_dir)
    model = load_weights(model_dir / WEIGHTS, manifest.data["architecture"]).eval()
    ds = load_dataset(args.data)
    train, held, test = tags.split_records(ds, args.train_limit, args.eval_limit)
    feats, ys = {}, {}
    for name, recs in (("train", train), ("held", held), ("test", test)):
        f, kept = tags.pooled_features(model, recs, f"features ({name})", True)
        feats[name], ys[name] = f, tags.targets([recs[i] for i in kept], ds.attributes)
    multi = [a for a in ds.attributes if a.kind == "multi"]
    counts = {a.name: (ys["train"][a.name] == 1).sum(0).numpy() for a in multi}
    rarest = {a.name: [a.values[j] for j in np.argsort(counts[a.name], kind="stable")[:3]] for a in multi}
    rows = []
    for loss in tags.LOSSES:
        cfg = tags.TagConfig(loss=loss, epochs=args.epochs)
        heads = tags.train_heads(feats["train"], ys["train"], ds.attributes, cfg)
        thresholds = tags.calibrate(tags.predict(heads, feats["held"]), ys["held"], ds.attributes)
        rep = tags.evaluate(tags.predict(heads, feats["test"]), ys["test"], ds.attributes, thresholds)
        row: dict[str, object] = {"loss": loss}
        for a in ds.attributes:
            r = rep[a.name]
            if a.kind == "single":
                row[f"{a.name} accuracy"] = round(r["accuracy"], 4)
            else:
                row |= {f"{a.name} {k}": round(r[k], 4) for k in ("map", "macro_f1", "top3_recall", "top5_recall")}
                row |= {f"AP {t}": r["ap"].get(t) for t in rarest[a.name]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    train_pos = {a.name: {a.values[j]: int(c) for j, c in enumerate(counts[a.name])} for a in multi}
    result = {
        "benchmark": "tag heads on frozen features: weighted vs focal vs plain loss, same features and budget",
        "model": manifest.model,
        "data": args.data,
        "images": {"train": len(feats["train"]), "held_out": len(feats["held"]), "test": len(feats["test"])},
        "epochs": args.epochs,
        "rarest_tags": rarest,
        "train_positives": train_pos,
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
        "command": " ".join(["python", "benchmarks/tag_imbalance.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_result(args, ROOT / "benchmarks/results/tag_imbalance.json", result)


if __name__ == "__main__":
    main()
