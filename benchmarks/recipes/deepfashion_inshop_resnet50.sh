#!/usr/bin/env bash
# Recipe: DeepFashion In-shop Clothes Retrieval, ResNet-50 at 224 px, 512-d, Proxy-Anchor.
#
# Target: Recall@1 91.9 on the official In-shop protocol (14,218 queries ranking the 12,612-image
# gallery), the Proxy-Anchor figure (Kim et al., "Proxy Anchor Loss for Deep Metric Learning",
# CVPR 2020) that this project aims to reproduce.
#
# NOT RUN HERE: this recipe has not been run by the project. It needs the DeepFashion In-shop data
# (not reachable from our machines) and a GPU; nothing in this repository has measured its result.
#
# Hyper-parameters follow the paper's released setup: AdamW, lr 1e-4 for the backbone and 100x for
# the proxies and the embedding layer, weight decay 1e-4, margin 0.1, alpha 32, one frozen
# warm-up epoch, 512-d embedding, 224 px crops with flips. The paper decays the learning rate in
# steps; fm-train uses cosine decay, a known, small difference. Batch: 45 items x 4 images = 180.
#
# Usage: DATA=/path/to/In-shop bash benchmarks/recipes/deepfashion_inshop_resnet50.sh
# Multi-GPU: prefix with `torchrun --nproc_per_node N -m fashion_match.cli.train` instead of fm-train.
set -euo pipefail
: "${DATA:?set DATA to the In-shop root (it holds img/ and Eval/list_eval_partition.txt)}"
OUT=${OUT:-runs/inshop-resnet50-pa}
fm-data check "deepfashion-inshop:$DATA" --strict
fm-train \
  --data "deepfashion-inshop:$DATA" \
  --model resnet50 --pretrained imagenet --embedding-dim 512 --image-size 224 \
  --loss proxy_anchor --label item \
  --epochs 60 --freeze-epochs 1 --batch 45x4 \
  --lr 1e-4 --head-lr-mult 100 --weight-decay 1e-4 \
  --workers 8 --seed 0 --out "$OUT"
