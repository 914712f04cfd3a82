#!/usr/bin/env bash
# Every method at CPU scale, one protocol (configs/cifar100/small/methods_resnet20_resnet8.yaml): CIFAR-100 (JPEG),
# resnet20 teacher → resnet8 students on 100 training images per class, 50 test images per class, 6 epochs, seeds
# 0/1, three `kdlab sweep`s (two 1-thread runs at a time):
#   methods:   method.name over every registered method (the new ones first), each with its own defaults and the
#              config's rescaled recipes;
#   ls:        logit standardisation on kd, dkd, mlkd, ctkd (method.logit_standardize=true, LS-KD's τ = 2, weight 9);
#   dot:       kd trained by DOT (optim.name=dot, δ = 0.075).
# Then `python experiments/tables.py methods_table OUT` prints the table of docs/results.md. The teacher is trained
# first when OUT has none (≈ 25 min on 2 threads). Resumes where it stopped.
# Usage: bash experiments/cifar100_methods_table.sh [OUT] [JOBS]   (≈ 75 min on 2 cores after the teacher)
set -euo pipefail
OUT=${1:-runs/c100-methods}
JOBS=${2:-2}
KD=".venv/bin/kdlab"
C=configs/cifar100/small/methods_resnet20_resnet8.yaml
T=$OUT/c100-teacher-resnet20
mkdir -p "$OUT"
[ -f "$T/summary.json" ] || $KD train --no-progress --config configs/cifar100/small/teacher_resnet20.yaml output_dir="$OUT"
METHODS="[wttm,ctkd,mlkd,nst,kdsvd,ofd,reviewkd,ce,kd,dkd,dist,ttm,fitnet,at,sp,rkd,pkt,vid,crd,simkd,atsc]"
sweep() {  # NAME GRID: a new sweep, or the rest of an interrupted one (a failed run does not stop the others)
  if [ -f "$OUT/$1/sweep.json" ]; then $KD sweep --resume "$OUT/$1" --jobs "$JOBS" --no-analyze || true
  else $KD sweep --out "$OUT/$1" --jobs "$JOBS" --no-analyze --config $C --grid "$2" teacher.checkpoint="$T" || true; fi
}
sweep methods "method.name=$METHODS seed=[0,1]"
sweep ls "method.name=[kd,dkd,mlkd,ctkd] method.logit_standardize=[true] seed=[0,1]"
sweep dot "method.name=[kd] optim.name=[dot] seed=[0,1]"
