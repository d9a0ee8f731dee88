#!/usr/bin/env bash
# Recipe: the embedded default model's FP16 and INT8 files, made again from its FP32 ONNX, and the
# INT8 sensitivity record.
#
# 1. fm-precision: the sensitivity scan of the default model's backbone blocks
#    (record: benchmarks/results/sensitivity_default/sensitivity.{txt,json,png});
# 2. fm-export --fp16 --int8 --int8-max-drop 0.3: both through the gate (category Recall@1,
#    instance Recall@1 and verification accuracy, with standard errors); INT8 keeps the blocks the
#    scan ranks most damaging in FP32 until the gate's largest drop is within 0.3 points, and times
#    all-INT8 against the result in the same run (both in the manifest, `int8.mixed_precision`);
# 3. the two files and their manifest entries put in the package in place of the previous ones.
# Full-protocol figures of the result: python benchmarks/eval_model.py --precision int8 --record
#
# Usage: bash benchmarks/recipes/default_model_int8.sh   (needs Fashion-MNIST: apt install dataset-fashion-mnist)
set -euo pipefail
OUT=${OUT:-runs/default-int8}
INSTALL=${INSTALL:-1}
fm-precision --out benchmarks/results/sensitivity_default
fm-export --out "$OUT" --fp16 --int8 --int8-max-drop 0.3
if [ "$INSTALL" = 1 ]; then
  python - "$OUT" <<'PY'
import shutil
import sys
from pathlib import Path

from fashion_match.runtime.manifest import default_model_dir, load_manifest, write_manifest

src = load_manifest(Path(sys.argv[1]))
dst = load_manifest(default_model_dir())
for name in ("model.fp16.onnx", "model.int8.onnx"):
    shutil.copyfile(src.folder / name, dst.folder / name)
    dst.data["artifacts"][name] = src.artifacts[name]
write_manifest(dst.folder, dst.data)
load_manifest(default_model_dir()).artifact("onnxruntime", "int8")  # the hashes check out
PY
fi
