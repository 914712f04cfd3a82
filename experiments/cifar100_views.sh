#!/usr/bin/env bash
# Augmentation views for KD (Wang et al., arXiv 2012.02909) on CIFAR-100 (JPEG), sized for 2 CPU cores: resnet20 teacher (all 50k images, 12 epochs),
# resnet8 students on 100 images/class, 10 epochs (1×) and 20 epochs (2×), seeds 0 and 1, then T. stddev.
# Usage: bash experiments/cifar100_views.sh [OUT]; then: .venv/bin/python experiments/collect.py OUT
set -euo pipefail
OUT=${1:-runs/c100}
KD=".venv/bin/kdlab"
S=configs/cifar100/small/student_resnet8.yaml
T=$OUT/c100-teacher-resnet20
[ -f "$T/summary.json" ] || $KD train --no-progress --config configs/cifar100/small/teacher_resnet20.yaml output_dir=$OUT
TEACH="teacher.name=resnet20 teacher.checkpoint=$T"
run() {  # run NAME kdlab-args...: skip runs that already finished
  local name=$1; shift
  [ -f "$OUT/$name/summary.json" ] && return 0
  rm -rf "$OUT/$name"
  "$@" output_dir=$OUT name=$name
}
for seed in 0 1; do
  run ce-s$seed            $KD train   --no-progress --config $S seed=$seed method.name=ce
  run kd-s$seed            $KD distill --no-progress --config $S seed=$seed method.name=kd $TEACH
  run kd-tlmixup-s$seed    $KD distill --no-progress --config $S seed=$seed method.name=kd $TEACH views.strong=mixup
  run kd-tlcutmix-s$seed   $KD distill --no-progress --config $S seed=$seed method.name=kd $TEACH views.strong=cutmix
  run kd-cutmixce-s$seed   $KD distill --no-progress --config $S seed=$seed method.name=kd $TEACH views.strong=cutmix method.strong_target=labels
  run kd-tlcmpick-s$seed   $KD distill --no-progress --config $S seed=$seed method.name=kd $TEACH views.strong=cutmix_pick
done
for seed in 0 1; do
  run ce-2x-s$seed $KD train   --no-progress --config $S seed=$seed method.name=ce schedule.epoch_factor=2
  run kd-2x-s$seed $KD distill --no-progress --config $S seed=$seed method.name=kd $TEACH schedule.epoch_factor=2
done
[ -f "$OUT/tstddev-resnet20/tstddev.json" ] || $KD tstddev --config $S $TEACH output_dir=$OUT name=tstddev-resnet20 \
  --views identity,flip,crop_flip,cutout,mixup,cutmix,autoaugment,randaugment --epochs 2
