#!/usr/bin/env bash
# Recipe: a smoke training run that visibly learns in about two minutes on a 2-core CPU.
#
# MobileNetV2 (ImageNet weights) on 3,000 Fashion-MNIST training images, category labels, only the
# last 2 backbone blocks trained on cached maps of the rest (--cache-frozen --train-blocks 2), one
# head-only epoch then four more. Recorded on a 2-core AMD EPYC (benchmarks/results/smoke_train_cpu.json):
# mAP@R 0.484 -> 0.602 and Recall@1 0.788 -> 0.812 over the 5 epochs, on 500 test queries x 2,000
# train images, in 110 s. A real model needs the full data and far more epochs (docs/training.md);
# this run is for checking that a set-up trains at all. `--model tiny` is a 32-px test network for
# the test suite: it does not learn anything useful.
#
# Usage: bash benchmarks/recipes/smoke_cpu_fashion_mnist.sh   (needs Fashion-MNIST: apt install dataset-fashion-mnist)
set -euo pipefail
OUT=${OUT:-runs/smoke}
fm-train --data fashion-mnist --model mobilenet_v2 --cache-frozen --train-blocks 2 --epochs 5 --freeze-epochs 1 \
  --batch 10x8 --lr 3e-4 --train-limit 3000 --eval-queries 500 --eval-gallery 2000 --out "$OUT"
