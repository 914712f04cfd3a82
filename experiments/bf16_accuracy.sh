#!/usr/bin/env bash
# Does bf16 autocast change what a run learns? CIFAR-100 (JPEG), resnet20 with CE on 100 images/class (the full
# 10k test split), 15 epochs cosine, channels_last, fp32 (engine.amp=none) against bf16 (engine.amp=bf16),
# seeds 0/1/2, with `kdlab sweep` (two 1-thread runs at a time). bf16 rounds the same way on a CPU with
# avx512_bf16 as on a GPU; the accumulation order differs. (The frozen teacher's bf16 forward alone is measured
# in docs/benchmarks.md; the device check's end-to-end rows repeat this on full CIFAR-100.)
# Usage: bash experiments/bf16_accuracy.sh [OUT] [JOBS]   (≈ 30 min on 2 cores; resumes where it stopped)
set -euo pipefail
OUT=${1:-runs/c100-bf16}
JOBS=${2:-2}
KD=".venv/bin/kdlab"
if [ -f "$OUT/sweep.json" ]; then exec $KD sweep --resume "$OUT" --jobs "$JOBS"; fi
exec $KD sweep --out "$OUT" --jobs "$JOBS" --no-analyze --config configs/cifar100/small/bf16_resnet20.yaml \
  --grid 'engine.amp=[none,bf16] seed=[0,1,2]'
