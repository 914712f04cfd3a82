#!/usr/bin/env bash
# CPU-sized real-data check for the foundation (docs/results.md): CIFAR-10 (JPEG) from ../shared/data,
# resnet20 teacher trained with CE, then resnet8 with CE and with KD from it. Same schedule for all.
# Usage: bash experiments/cifar10_small.sh [EPOCHS] [OUT]
set -euo pipefail
EPOCHS=${1:-10}
OUT=${2:-runs/cifar10_small}
KD=.venv/bin/kdlab
$KD train --no-progress --config configs/cifar10/small_teacher_resnet20.yaml output_dir=$OUT schedule.epochs=$EPOCHS
$KD train --no-progress --config configs/cifar10/small_ce_resnet8.yaml output_dir=$OUT schedule.epochs=$EPOCHS
$KD distill --no-progress --config configs/cifar10/small_kd_resnet20_resnet8.yaml output_dir=$OUT \
  schedule.epochs=$EPOCHS teacher.checkpoint=$OUT/c10-teacher-resnet20
