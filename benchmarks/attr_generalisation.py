"""Where an attribute branch's test gap comes from: its spaces on items it trained on, on the held-out
items that only set its thresholds, on items of the same split it never saw (none once a run takes
the whole split), and on the test split.

    python benchmarks/attr_generalisation.py --items 10000 [--model DIR] [--per-set 1000] [--record | --out F]

`--items` is the `--train-limit` / 2 the model's `fm-train --spaces-for` ran with (the recipe's ITEMS),
so the same evenly spaced train items are "seen" here (train.tags.split_records). On fmnist-attr
(a stand-in rendered from Fashion-MNIST, not real photos), for each set of `--per-set` items:
consumer renders rank the set's shop renders, relevant = the same value (ASEN protocol), one mAP
per space. Seen well above unseen-train says the branch over-fits its items (more items help);
unseen-train well above test would say the frozen trunk knows the train split's items instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fashion_match.bench.accuracy import all_outputs
from fashion_match.bench.machine import machine_info
from fashion_match.bench.records import add_output_args, write_result
from fashion_match.data.images import load_batch
from fashion_match.data.records import spaced
from fashion_match.data.spec import load_dataset
from fashion_match.runtime import Matcher
from fashion_match.runtime.tagging import SPACES_OUTPUT
from fashion_match.train import attr_spaces as asp
from fashion_match.train.tags import split_records

ROOT = Path(__file__).resolve().parents[1]


def by_item(records: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(r.item_id, []).append(r)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, required=True, help="training items of the model's spaces run")
    ap.add_argument("--model", type=Path, default=None, help="model directory [default: the embedded model]")
    ap.add_argument("--per-set", type=int, default=1000)
    add_output_args(ap, "attr_generalisation.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    ds = load_dataset("fmnist-attr")
    attrs = asp.single_attributes(ds.attributes)
    train, held, test = split_records(ds, 2 * args.items, 2000)
    seen = by_item(train)
    used = set(seen) | {r.item_id for r in held}
    unseen = by_item([r for r in ds.records if r.split == "train" and r.item_id not in used])
    tested = by_item([r for r in ds.records if r.split == "test"])
    rows = {}
    with Matcher(args.model) as m:
        if not m.manifest.data.get("spaces"):
            sys.exit(f"{m.model_dir}: has no attribute spaces")
        model = m.manifest.model
        for label, groups in (
            ("items the branch trained on", seen),
            ("held-out train-split items (thresholds only)", by_item(held)),
            ("train-split items it never saw", unseen),
            ("test split", tested),
        ):
            if not groups:  # a run on the whole train split leaves no unseen train items
                print(f"{label:<44} none", flush=True)
                continue
            keys = sorted(groups)
            keys = [keys[i] for i in spaced(list(range(len(keys))), args.per_set)]
            sets = {d: [r for k in keys for r in groups[k] if r.domain == d] for d in ("consumer", "shop")}
            emb = {}
            for d, recs in sets.items():
                b = load_batch([r.source for r in recs], m.spec)
                if b.bad:
                    sys.exit(f"{label}: unreadable render {b.bad[0]}")
                emb[d] = all_outputs(m.backend.outputs, b.pixels, 64)[SPACES_OUTPUT]
            lab = {d: asp.value_labels(sets[d], attrs) for d in sets}
            rows[label] = asp.attribute_map(emb["consumer"], emb["shop"], lab["consumer"], lab["shop"], attrs)
            print(f"{label:<44} " + "  ".join(f"{a} {x:.4f}" for a, x in rows[label].items()), flush=True)
    write_result(
        args,
        ROOT / "benchmarks/results/attr_generalisation.json",
        {
            "benchmark": "attribute space mAP on seen training items, unseen training-split items and the test split",
            "data": "fmnist-attr (stand-in): consumer renders rank shop renders of the same set",
            "model": model,
            "items_trained": args.items,
            "items_per_set": args.per_set,
            "rows": rows,
            "seconds": round(time.perf_counter() - t0, 1),
            "command": " ".join(["python", "benchmarks/attr_generalisation.py", *sys.argv[1:]]),
            "machine": machine_info(),
            "date": time.strftime("%Y-%m-%d"),
        },
    )


if __name__ == "__main__":
    main()
