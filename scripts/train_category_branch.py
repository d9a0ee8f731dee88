"""Train a category branch for an exported model (a recipe around `fashion_match.train.branch`).

    python scripts/train_category_branch.py --model DIR --out branch.safetensors [--from-block 16]
        [--epochs 4] [--shift 1] [--seed 0]

Prints the test accuracy after each epoch; `make_default_model.py --category-branch FILE
--category-share W` then builds the model that uses the branch.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from fashion_match.train.branch import train_category_branch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="an exported model directory")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--from-block", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-4, help="branch blocks; the classifier gets 10x")
    ap.add_argument("--shift", type=int, default=1, help="random shift of the maps, in cells")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="fashion-mnist")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    meta = train_category_branch(
        args.model,
        args.out,
        from_block=args.from_block,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        shift=args.shift,
        seed=args.seed,
        data=args.data,
    )
    print(json.dumps(meta["history"][-1]))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
