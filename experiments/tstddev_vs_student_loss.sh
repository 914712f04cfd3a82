#!/usr/bin/env bash
# Does T. stddev rank augmentations by the student's test loss? The study of Wang et al., "Knowledge
# Distillation Thrives on Data Augmentation" (arXiv 2012.02909), CPU-sized on CIFAR-100 (JPEG):
#   1. the resnet20 teacher of docs/results.md (all 50k images, 12 epochs cosine: 52.09%);
#   2. resnet8 students, KD + the teacher-labelled view x' (0.1·CE + 0.9·[KL(x) + KL(x')], τ = 4), on 100
#      images/class for EPOCHS epochs (default 5) cosine, seeds 0 and 1, one per augmentation of the paper's
#      study: identity, flip, crop_flip, cutout, autoaugment, mixup, cutmix, cutmix_pick scored by the teacher's
#      entropy (T. ent.) and by the student's (S. ent.); plus a plain KD student (seed 0) whose checkpoint
#      scores the S. ent. candidates of the T. stddev measurement, as the release loads a trained student;
#   3. T. stddev of the nine views for the teacher over TEPOCHS (default 2) passes of the 100-image/class set
#      (the release runs 10 on all 50k images; 2 passes over 10k images fit this machine).
# Runs go JOBS at a time with one thread each; finished runs are skipped (resumable).
# Usage: bash experiments/tstddev_vs_student_loss.sh [OUT] [JOBS]
#        .venv/bin/python experiments/tables.py tstddev OUT
set -euo pipefail
OUT=${1:-runs/c100-tstddev}
JOBS=${2:-2}
EPOCHS=${EPOCHS:-5}
TEPOCHS=${TEPOCHS:-2}
KD=".venv/bin/kdlab"
S=configs/cifar100/small/student_resnet8.yaml
T=$OUT/c100-teacher-resnet20
mkdir -p "$OUT"
[ -f "$T/summary.json" ] || $KD train --no-progress --config configs/cifar100/small/teacher_resnet20.yaml output_dir=$OUT
TEACH="teacher.name=resnet20 teacher.checkpoint=$T"
declare -A VIEW=([identity]="views.strong=identity" [flip]="views.strong=flip" [crop_flip]="views.strong=crop_flip"
  [cutout]="views.strong=cutout" [autoaugment]="views.strong=autoaugment" [mixup]="views.strong=mixup"
  [cutmix]="views.strong=cutmix" [pick-tent]="views.strong=cutmix_pick views.params.score=teacher_entropy"
  [pick-sent]="views.strong=cutmix_pick views.params.score=student_entropy")
SPECS="identity,flip,crop_flip,cutout,autoaugment,mixup,cutmix,cutmix_pick:score=teacher_entropy,cutmix_pick:score=student_entropy"

jobs_list() {  # one shell command per line; a finished run (summary.json) is skipped
  job() { local name=$1; shift; [ -f "$OUT/$name/summary.json" ] || echo "rm -rf $OUT/$name && $* engine.threads=1 output_dir=$OUT name=$name > $OUT/$name.log 2>&1"; }
  job kd-s0 $KD distill --no-progress --config $S seed=0 schedule.epochs=$EPOCHS method.name=kd $TEACH
  for seed in 0 1; do
    for v in identity flip crop_flip cutout autoaugment mixup cutmix pick-tent pick-sent; do
      job kd-$v-s$seed $KD distill --no-progress --config $S seed=$seed schedule.epochs=$EPOCHS method.name=kd $TEACH ${VIEW[$v]}
    done
  done
  [ -f "$OUT/tstddev/tstddev.json" ] || echo "until [ -f $OUT/kd-s0/summary.json ]; do sleep 20; done; $KD tstddev --config $S $TEACH engine.threads=1 output_dir=$OUT name=tstddev --views $SPECS --epochs $TEPOCHS --student $OUT/kd-s0 > $OUT/tstddev.log 2>&1"
}
jobs_list | OMP_NUM_THREADS=1 xargs -d '\n' -P "$JOBS" -I{} bash -c '{}' || echo "some runs failed: see $OUT/*.log"
