"""Attribute-specific spaces against the item embedding and zero-shot ImageNet features, ASEN protocol.

    python benchmarks/attr_spaces.py [--train-items 3000] [--test-items 1000] [--epochs 20] [--record]
    python benchmarks/attr_spaces.py --model DIR --epochs 0 [--record --out F]   # a model's own spaces

On fmnist-attr (a stand-in rendered from Fashion-MNIST, not real photos): test consumer renders
query test shop renders; for each single-valued attribute (category, colour, pattern) the relevant
gallery images are those with the same value; mean average precision per attribute, for
- zero-shot: ImageNet MobileNetV2's pooled features, one space for every attribute;
- item: the embedded default model's item embedding (trained for "same item"), one space;
- spaces: attribute-conditioned spaces (models.attr_spaces) trained on the same frozen ImageNet
  feature maps of the training items (shop and consumer renders), one space per attribute
  (skipped with --epochs 0);
- with --model DIR: that model's item embedding instead of the embedded default's, and, when it
  has attribute spaces, its own spaces ranked by cosine and, when it has their value readout, by
  value posteriors (what fm-match --attribute and fm-search --attribute then compare);
- when the model has tag heads: each attribute's softmax probabilities (`tag_probs`) used as an
  embedding, a reference for its space: images whose predicted values agree rank first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fashion_match.bench.accuracy import all_outputs
from fashion_match.bench.machine import machine_info
from fashion_match.bench.records import add_output_args, write_result
from fashion_match.data.images import load_batch
from fashion_match.data.records import spaced
from fashion_match.data.spec import load_dataset
from fashion_match.models import create_model
from fashion_match.runtime import Matcher
from fashion_match.runtime.tagging import (
    POSTERIORS_OUTPUT,
    SPACES_OUTPUT,
    TAGS_OUTPUT,
    query_form,
    space_of,
    tag_blocks,
)
from fashion_match.train import attr_spaces as asp

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="fmnist-attr")
    ap.add_argument("--train-items", type=int, default=3000)
    ap.add_argument("--test-items", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--model", type=Path, default=None, help="model directory [default: the embedded model]")
    add_output_args(ap, "attr_spaces.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    ds = load_dataset(args.data)
    attrs = asp.single_attributes(ds.attributes)

    def items(split: str, n: int) -> list[str]:
        ids = list(dict.fromkeys(r.item_id for r in ds.records if r.split == split))
        return [ids[i] for i in spaced(list(range(len(ids))), n)]

    train_ids, test_ids = set(items("train", args.train_items)), set(items("test", args.test_items))
    train = [r for r in ds.records if r.item_id in train_ids]
    queries = [r for r in ds.records if r.item_id in test_ids and r.domain == "consumer"]
    gallery = [r for r in ds.records if r.item_id in test_ids and r.domain == "shop"]
    imagenet = create_model("mobilenet_v2", None, pretrained=True).eval()
    maps = {}
    for name, recs in (("train", train), ("queries", queries), ("gallery", gallery)):
        if name == "train" and not args.epochs:
            continue  # training maps feed only the spaces trained here
        m, kept = asp.feature_maps(imagenet, recs, f"ImageNet maps ({name})")
        maps[name], recs[:] = m, [recs[i] for i in kept]
    labels = {k: asp.value_labels(v, attrs) for k, v in (("train", train), ("queries", queries), ("gallery", gallery))}

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)

    rows = {}
    zq, zg = (unit(maps[k].mean(dim=(2, 3)).numpy()) for k in ("queries", "gallery"))
    rows["zero-shot ImageNet pooled features"] = asp.attribute_map(zq, zg, labels["queries"], labels["gallery"], attrs)
    with Matcher(args.model) as m:  # one pass per image gives every output the model has
        model_name, manifest = m.manifest.model, m.manifest
        out = []
        for recs in (queries, gallery):
            b = load_batch([r.source for r in recs], m.spec)
            if b.bad:
                sys.exit(f"unreadable render {b.bad[0]}")
            out.append(all_outputs(m.backend.outputs, b.pixels, 64))
    iq, ig = (o["embedding"] for o in out)
    rows[f"item embedding ({model_name})"] = asp.attribute_map(iq, ig, labels["queries"], labels["gallery"], attrs)
    train_s = 0.0
    if args.epochs:
        t1 = time.perf_counter()
        spaces = asp.train_spaces(maps["train"], labels["train"], attrs, dim=args.dim, epochs=args.epochs)
        train_s = time.perf_counter() - t1
        sq, sg = (asp.embed_spaces(spaces, maps[k]) for k in ("queries", "gallery"))
        rows["attribute spaces on frozen ImageNet maps (trained here)"] = asp.attribute_map(
            sq, sg, labels["queries"], labels["gallery"], attrs
        )
    if manifest.data.get("spaces"):
        order = [space_of(manifest, a.name)[0] for a in attrs]  # the dataset's attribute order
        mq, mg = (o[SPACES_OUTPUT][:, order] for o in out)
        rows[f"the model's own attribute spaces, by cosine ({model_name})"] = asp.attribute_map(
            mq, mg, labels["queries"], labels["gallery"], attrs
        )
        if POSTERIORS_OUTPUT in out[0]:  # what fm-search --attribute and fm-match --attribute compare
            pq, pg = (o[POSTERIORS_OUTPUT][:, order] for o in out)
            rows[f"the model's own attribute spaces, by value posteriors ({model_name})"] = asp.attribute_map(
                query_form(pq), pg, labels["queries"], labels["gallery"], attrs
            )
    if manifest.data.get("tags"):
        blocks = {b.name: b for b in tag_blocks(manifest)}
        width = max(len(b.values) for b in blocks.values())
        probs = []
        for o in out:
            e = np.zeros((len(o[TAGS_OUTPUT]), len(attrs), width), np.float32)  # zero padding keeps cosines
            for a, attr in enumerate(attrs):
                b = blocks[attr.name]
                e[:, a, : len(b.values)] = unit(o[TAGS_OUTPUT][:, b.offset : b.offset + len(b.values)])
            probs.append(e)
        rows[f"the model's tag probabilities as an embedding ({model_name})"] = asp.attribute_map(
            probs[0], probs[1], labels["queries"], labels["gallery"], attrs
        )
    for k, v in rows.items():
        print(f"{k:<70} " + "  ".join(f"{a} {x:.4f}" for a, x in v.items()), flush=True)
    result = {
        "benchmark": "per-attribute mAP (ASEN protocol): attribute spaces vs item embedding vs zero-shot features",
        "data": args.data,
        "protocol": "test consumer renders query test shop renders; relevant = same value of the attribute",
        "images": {"train": len(train), "queries": len(queries), "gallery": len(gallery)},
        "spaces": {"dim": args.dim, "epochs": args.epochs, "train_seconds": round(train_s, 1)},
        "model": model_name,
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
        "command": " ".join(["python", "benchmarks/attr_spaces.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_result(args, ROOT / "benchmarks/results/attr_spaces.json", result)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
