"""How much of the similarity should the category branch carry? One embedding pass, every share.

    python benchmarks/category_share_sweep.py --model DIR [--shares 0 0.05 0.1 0.2 0.3] [--out FILE]

A model with a category branch outputs [sqrt(1 - w) * item, sqrt(w) * p] (both parts unit
vectors), so its embeddings split back exactly into the item embedding and the class
probabilities, and any other share w' can be scored without embedding again. Per share:
Fashion-MNIST category Recall@1 (10,000 test queries, 60,000 train images), fmnist-c2s instance
Recall@1 (10,000 consumer photos, 10,000 shop photos) and the real-photo check
(`real_photo_check.py`). Runs the exported model through the runtime (ONNX Runtime CPU, fp32).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fashion_match.bench.machine import machine_info
from fashion_match.bench.records import add_output_args, output_path
from fashion_match.data.spec import load_dataset
from fashion_match.fileio import write_json_atomic
from fashion_match.metrics import retrieval_report
from fashion_match.runtime import Matcher

ROOT = Path(__file__).resolve().parents[1]


def split(emb: np.ndarray, dim: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    """(item embeddings, normalised class probabilities) from the model's output."""
    return emb[:, :dim] / np.sqrt(1.0 - share), emb[:, dim:] / np.sqrt(share)


def join(item: np.ndarray, probs: np.ndarray, share: float) -> np.ndarray:
    return np.concatenate([np.sqrt(1.0 - share) * item, np.sqrt(share) * probs], axis=1).astype(np.float32)


def recall_at_1(q: np.ndarray, qk: np.ndarray, g: np.ndarray, gk: np.ndarray, chunk: int = 1000) -> float:
    hits = sum(
        int((gk[np.argmax(q[s : s + chunk] @ g.T, axis=1)] == qk[s : s + chunk]).sum()) for s in range(0, len(q), chunk)
    )
    return hits / len(q)


def protocol(m: Matcher, spec: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ds = load_dataset(spec)
    p = ds.protocol
    keys = [np.array([getattr(ds.records[i], p.match_on) for i in idx]) for idx in (p.queries, p.gallery)]
    q, g = (m.embed_strict([ds.records[i].source for i in idx]) for idx in (p.queries, p.gallery))
    return q, keys[0], g, keys[1]


def main() -> None:
    import real_photo_check

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.15, 0.2, 0.3])
    add_output_args(ap, "category_share_sweep_<model>.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with Matcher(args.model, batch_size=64) as m:
        arch = m.manifest.data["architecture"]
        share, dim = float(arch.get("category_share") or 0.0), int(arch["embedding_dim"])
        if not share:
            raise SystemExit(f"{args.model}: no category share in this model's output to re-weight")
        sets = {"fashion-mnist": protocol(m, "fashion-mnist"), "fmnist-c2s": protocol(m, "fmnist-c2s")}
        images, real_keys = real_photo_check.crops()
        real = m.embed_strict(images)
        name = m.manifest.model
    rows = []
    for w in args.shares:
        row: dict = {"share": w}
        for spec, (q, qk, g, gk) in sets.items():
            (qi, qp), (gi, gp) = split(q, dim, share), split(g, dim, share)
            row[f"{spec} R@1"] = recall_at_1(join(qi, qp, w), qk, join(gi, gp, w), gk)
        r = join(*split(real, dim, share), w)
        ids = np.arange(len(r))
        rep = retrieval_report(r, real_keys, r, real_keys, q_ids=ids, g_ids=ids, ks=(1,))
        row |= {"real R@1": rep["recall_at_1"], "real mAP@R": rep["map_at_r"], "real pair AUC": rep["pair_auc"]}
        rows.append(row)
        print(json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    result = {
        "model": name,
        "model_dir": str(args.model),
        "exported_share": share,
        "rows": rows,
        "seconds": round(time.perf_counter() - t0),
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    out = output_path(args, ROOT / "benchmarks" / "results" / f"category_share_sweep_{name}.json")
    if out:
        write_json_atomic(out, result)
    print(f"-> {out}" if out else "(printed only: --out FILE or --record writes it)")


if __name__ == "__main__":
    main()
