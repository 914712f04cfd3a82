#!/usr/bin/env bash
# Ensemble KD under weak and strong augmentation (Guo et al., "Why does Knowledge Distillation work? Rethink
# its attention and fidelity mechanism", arXiv 2405.00739) on CIFAR-100 (JPEG), sized for 2 CPU cores, with `kdlab sweep`:
#   1. two resnet20 teachers (seeds 0, 1) under weak and under strong augmentation (100 images/class, 15 epochs);
#   2. resnet8 students distilled from the two weak or the two strong teachers (mean of per-teacher KD),
#      each under weak and strong augmentation, seeds STUDENT_SEEDS (default "0,1"), analysed (fidelity, MI,
#      IoU, ECE, gap);
#   3. their control: strong teachers → strong student with direct logit matching (method.mse_weight=0.1)
#      and with a 5× KD weight (compare with the strong/strong cell of step 2); CONTROL_SEEDS (default "0,1").
# Teachers are evaluated every 5 epochs (the last epoch always), which changes nothing in their training.
# Usage: bash experiments/cifar100_ensemble.sh [OUT] [JOBS]   (sweeps resume where they stopped)
# EXTRA="key=value …" adds overrides to every run (e.g. a smoke test: EXTRA="data.train_per_class=3
# data.test_per_class=2 schedule.epochs=1" bash experiments/cifar100_ensemble.sh /tmp/ens-smoke).
set -euo pipefail
OUT=${1:-runs/c100-ens}
JOBS=${2:-2}
KD=".venv/bin/kdlab"
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
STUDENT_SEEDS=${STUDENT_SEEDS:-0,1}
CONTROL_SEEDS=${CONTROL_SEEDS:-0,1}
sweep() {  # sweep DIR args…: start, or resume a sweep that exists
  local dir=$1; shift
  if [ -f "$dir/sweep.json" ]; then $KD sweep --resume "$dir" --jobs "$JOBS" || true
  else $KD sweep --out "$dir" --jobs "$JOBS" "$@" "${EXTRA_ARGS[@]}" || true; fi
}
sweep $OUT/teachers --config configs/cifar100/small/ensemble_teacher_resnet20.yaml --no-analyze \
  --grid 'views.standard=[weak,strong] seed=[0,1]' engine.eval_every=5
for aug in weak strong; do
  T="teachers=[{name: resnet20, checkpoint: $OUT/teachers/standard-${aug}_seed-0}, {name: resnet20, checkpoint: $OUT/teachers/standard-${aug}_seed-1}]"
  sweep $OUT/students-$aug-teachers --config configs/cifar100/small/ensemble_student_resnet8.yaml \
    --grid "views.standard=[weak,strong] seed=[$STUDENT_SEEDS]" "$T"
done
T="teachers=[{name: resnet20, checkpoint: $OUT/teachers/standard-strong_seed-0}, {name: resnet20, checkpoint: $OUT/teachers/standard-strong_seed-1}]"
sweep $OUT/control-logit-matching --config configs/cifar100/small/ensemble_student_resnet8.yaml \
  --grid "method.mse_weight=[0.1] seed=[$CONTROL_SEEDS]" views.standard=strong "$T"
sweep $OUT/control-kd-weight --config configs/cifar100/small/ensemble_student_resnet8.yaml \
  --grid "method.kd_weight=[2.0] seed=[$CONTROL_SEEDS]" views.standard=strong "$T"
for d in $OUT/students-weak-teachers $OUT/students-strong-teachers $OUT/control-logit-matching $OUT/control-kd-weight; do
  $KD report "$d"
done
