#!/usr/bin/env bash
# What does training from a store of pre-resized images (kdlab prepare --max-side 256, the FFCV practice) cost in
# accuracy? ImageNet's photographs average ≈ 400 px on a side; stored at 256 and trained on 224-px
# RandomResizedCrops, a crop of scale s is upsampled whenever 256·√s < 224 (s < 0.77) where the original would
# still have had pixels to spare. The same ratios at CIFAR scale, on CIFAR-100 (JPEG, 32 px = "the original"):
#   originals: `kdlab prepare --max-side 32` (every file kept byte for byte),
#   stored:    `kdlab prepare --max-side 20` (32 · 256/400: the stored resolution below the original's),
# both read as streamed data, trained at data.image_size=18 (32 · 224/400) with RandomResizedCrop + flip, tested
# with the same rule (shorter side to 18/0.875, centre crop) from their own store. resnet8 with CE, 100 training
# images per class, the full test split, 15 epochs cosine, seeds 0/1/2, two 1-thread runs at a time (≈ 20 min on
# 2 cores). `python experiments/tables.py stored_resolution_table OUT` prints the table of docs/results.md.
# Usage: bash experiments/stored_resolution.sh [OUT] [JOBS]
set -euo pipefail
OUT=${1:-runs/stored-resolution}
JOBS=${2:-2}
KD=".venv/bin/kdlab"
SRC=cifar100:../shared/data/cifar100-jpg.tar.gz
mkdir -p "$OUT"
[ -f "$OUT/originals/kdlab-prepared.json" ] || $KD prepare "$SRC" "$OUT/originals" --max-side 32 --workers 1
[ -f "$OUT/stored20/kdlab-prepared.json" ] || $KD prepare "$SRC" "$OUT/stored20" --max-side 20 --workers 1
if [ -f "$OUT/sweep/sweep.json" ]; then exec $KD sweep --resume "$OUT/sweep" --jobs "$JOBS" --no-analyze; fi
exec $KD sweep --out "$OUT/sweep" --jobs "$JOBS" --no-analyze --config configs/cifar100/small/stored_resolution_resnet8.yaml \
  --grid "data.dataset=[prepared:$OUT/originals,prepared:$OUT/stored20] seed=[0,1,2]"
