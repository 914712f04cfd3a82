#!/usr/bin/env bash
# Does bf16 autocast (engine.amp=bf16: teacher and student forward, loss) change what a distillation run learns,
# against fp32 (engine.amp=none)? kd and one feature method (at), seeds 0/1/2, channels_last in both arms
# (configs/cifar100/small/amp_parity_resnet20_resnet8.yaml), with `kdlab sweep` (two 1-thread runs at a time).
# The teacher is the methods table's (experiments/cifar100_methods_table.sh trains it when OUT has none).
# `python experiments/tables.py amp_parity_table OUT` prints the table of docs/results.md.
# Cost: fp32 ≈ 300 img/s per thread; bf16 runs at native speed on CPUs with avx512_bf16/AMX and ≈ 10× slower than
# fp32 where bf16 is emulated (AVX2-only CPUs: ≈ 20 min per bf16 run there). Resumes where it stopped.
# Usage: bash experiments/amp_parity.sh [OUT] [TEACHER_DIR] [JOBS]
set -euo pipefail
OUT=${1:-runs/c100-amp-parity}
T=${2:-runs/c100-methods/c100-teacher-resnet20}
JOBS=${3:-2}
KD=".venv/bin/kdlab"
[ -f "$T/summary.json" ] || $KD train --no-progress --config configs/cifar100/small/teacher_resnet20.yaml \
  output_dir="$(dirname "$T")" name="$(basename "$T")"
if [ -f "$OUT/sweep.json" ]; then exec $KD sweep --resume "$OUT" --jobs "$JOBS" --no-analyze; fi
exec $KD sweep --out "$OUT" --jobs "$JOBS" --no-analyze --config configs/cifar100/small/amp_parity_resnet20_resnet8.yaml \
  --grid 'engine.amp=[bf16,none] method.name=[kd,at] seed=[0,1,2]' teacher.checkpoint="$T"
