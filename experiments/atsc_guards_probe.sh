#!/usr/bin/env bash
# ATSC drift probe: does the adaptive ATSC teacher keep its accuracy? 2 epochs of ATSC (resnet20 → resnet8,
# CIFAR-100 JPEG, 100 img/class) without and with each drift guard; read teacher_test_acc in metrics.jsonl.
# Usage: bash experiments/atsc_guards_probe.sh   (run folders: runs/atsc-probe/<variant>)
set -u
cd "$(dirname "$0")/.."
S=configs/cifar100/small/student_resnet8.yaml
T="teacher.name=resnet20 teacher.checkpoint=runs/c100/c100-teacher-resnet20"
for v in "base:" "anchor_bn:method.anchor_bn=true" "bn_eval:method.teacher_bn_eval=true" "lr01:method.teacher_lr_scale=0.1" "all:method.anchor_bn=true method.teacher_bn_eval=true method.teacher_lr_scale=0.1"; do
  name=${v%%:*}; ov=${v#*:}
  [ -f runs/atsc-probe/$name/summary.json ] && continue
  rm -rf runs/atsc-probe/$name
  .venv/bin/kdlab distill --no-progress --config $S method.name=atsc $T $ov schedule.epochs=2 engine.threads=1 engine.report=false output_dir=runs/atsc-probe name=$name > runs/atsc-probe-$name.log 2>&1
done
