"""Does a model still see real colour photos well? A small, honest check on real photos.

    python benchmarks/real_photo_check.py [--model DIR] [--out FILE]

The eight real photos shipped with the package (CC0/public-domain scikit-image samples: an
astronaut, a cat, coffee, a rocket, bricks, grass, gravel, a camera man) are each cut into 12
seeded random crops (30-80% of the side, random flips and mild colour changes): 96 images of 8
"items". Each crop queries the other 95; a hit is a crop of the same photo (leave-one-out
Recall@1, mAP@R). It says whether general visual features survived training on 28-pixel
grayscale clothes; it is not a benchmark of clothing retrieval.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from fashion_match.bench.records import add_output_args, output_path
from fashion_match.fileio import write_json_atomic
from fashion_match.metrics import retrieval_report
from fashion_match.runtime import Matcher

ROOT = Path(__file__).resolve().parents[1]


def crops(per_photo: int = 12, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    folder = resources.files("fashion_match.data") / "assets" / "backgrounds"
    images, keys = [], []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".jpg"):
            continue
        photo = Image.open(io.BytesIO(entry.read_bytes())).convert("RGB")
        for _ in range(per_photo):
            side = int(rng.uniform(0.3, 0.8) * photo.width)
            x, y = rng.integers(0, photo.width - side + 1), rng.integers(0, photo.height - side + 1)
            im = photo.crop((int(x), int(y), int(x) + side, int(y) + side))
            if rng.random() < 0.5:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.8, 1.2)))
            images.append(np.asarray(im))
            keys.append(entry.name)
    return images, np.array(keys, dtype=object)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    add_output_args(ap, "real_photos_<model>.json")
    args = ap.parse_args()
    images, keys = crops()
    with Matcher(args.model) as m:
        emb = m.embed_strict(images)
        name = m.manifest.model
        model_id = m.manifest.short_id()
    ids = np.arange(len(images))
    rep = retrieval_report(emb, keys, emb, keys, q_ids=ids, g_ids=ids, ks=(1, 5))
    result = {
        "model": model_id,
        "images": len(images),
        "photos": len(set(keys)),
        "recall_at_1": rep["recall_at_1"],
        "recall_at_5": rep["recall_at_5"],
        "map_at_r": rep["map_at_r"],
        "pair_auc": rep.get("pair_auc"),
        "date": time.strftime("%Y-%m-%d"),
    }
    out = output_path(args, ROOT / "benchmarks" / "results" / f"real_photos_{name}.json")
    if out:
        write_json_atomic(out, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
