"""What the proxy loss's scale and margin do to attribute spaces, on one frozen set of maps.

    python benchmarks/space_margin.py --model DIR [--train-items 10800] [--epochs 4] [--record | --out F]

On fmnist-attr (a stand-in rendered from Fashion-MNIST, not real photos): the maps the model's spaces
read (its attribute branch's, with its taps) are computed once for evenly spaced training items (both
renders) and the 1,000-item test split; fresh spaces train on them once per loss setting, the same
seed and steps each time, and are scored by the ASEN protocol (test consumer renders rank test shop
renders, relevant = the same value). The branch stays as it is, so only the loss differs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fashion_match.bench.machine import machine_info
from fashion_match.bench.records import add_output_args, write_result
from fashion_match.data.spec import load_dataset
from fashion_match.formats import WEIGHTS
from fashion_match.models.checkpoint import load_weights
from fashion_match.runtime.manifest import load_manifest
from fashion_match.train import attr_spaces as asp
from fashion_match.train.tags import split_records

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ((16.0, 0.0), (32.0, 0.0), (32.0, 0.4))  # (scale, margin): the old loss, scale alone, the default


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="a model directory with an attribute branch")
    ap.add_argument("--train-items", type=int, default=10800)
    ap.add_argument("--epochs", type=int, default=4)
    add_output_args(ap, "space_margin.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    manifest = load_manifest(args.model)
    model = load_weights(args.model / WEIGHTS, manifest.data["architecture"]).eval()
    if model.attr_branch is None:
        sys.exit(f"{args.model}: has no attribute branch (its spaces would read the backbone's maps)")
    ds = load_dataset("fmnist-attr")
    attrs = asp.single_attributes(ds.attributes)
    train, _, test = split_records(ds, 2 * args.train_items, 2000)
    maps, labels = {}, {}
    for name, recs in (("train", train), ("test", test)):
        m, kept = asp.feature_maps(model, recs, f"branch maps ({name})")
        recs[:] = [recs[i] for i in kept]
        maps[name], labels[name] = m, asp.value_labels(recs, attrs)
    q, g = asp.query_gallery(test)
    rows = []
    for scale, margin in SETTINGS:
        spaces = asp.train_spaces(maps["train"], labels["train"], attrs, epochs=args.epochs, scale=scale, margin=margin)
        e = asp.embed_spaces(spaces, maps["test"])
        got = asp.attribute_map(e[q], e[g], labels["test"][q], labels["test"][g], attrs)
        rows.append({"scale": scale, "margin": margin, "test_map": got})
        print(f"scale {scale:g} margin {margin:g}: " + "  ".join(f"{a} {x:.4f}" for a, x in got.items()), flush=True)
    write_result(
        args,
        ROOT / "benchmarks/results/space_margin.json",
        {
            "benchmark": "attribute spaces trained on one model's frozen branch maps, per proxy-loss scale and margin",
            "data": "fmnist-attr (stand-in): test consumer renders rank test shop renders, relevant = same value",
            "model": manifest.model,
            "train_images": len(maps["train"]),
            "epochs": args.epochs,
            "rows": rows,
            "seconds": round(time.perf_counter() - t0, 1),
            "command": " ".join(["python", "benchmarks/space_margin.py", *sys.argv[1:]]),
            "machine": machine_info(),
            "date": time.strftime("%Y-%m-%d"),
        },
    )


if __name__ == "__main__":
    main()
