#!/usr/bin/env bash
# The loss zoo and ATSC on CIFAR-100 (JPEG), sized for 2 CPU cores (docs/results.md). Same small pair and schedule as
# cifar100_views.sh (resnet20 teacher on all 50k images, resnet8 students on 100 images/class, 10 epochs cosine):
#   the loss zoo: dkd dist fitnet at sp rkd pkt crd simkd, each plain and with TLCutMix+pick, seeds 0 and 1;
#   ATSC (Jang et al., arXiv 2406.08528) as published; ATSC with kdlab's BatchNorm anchor (anchor_bn) alone, with TLCutMix+pick, and
#   with two teachers (a second resnet20 teacher, seed 1).
# Recipe weights are the CRD-benchmark ones; two are rescaled to the small setting: DKD's warm-up (20 of 240 epochs
# → 1 of 10) and CRD's negatives (16384 of 50k samples → 4096 of 10k). Runs go two at a time with one thread each
# (1.5× the throughput of one 2-thread run on this machine).
# Usage: bash experiments/cifar100_methods.sh [OUT] [JOBS]; then: .venv/bin/python experiments/collect.py OUT
# SEEDS="1" limits the student runs to those seeds (default "0 1"); TWO_TEACHERS=no leaves out the second
# teacher and the two-teacher ATSC runs.
set -euo pipefail
OUT=${1:-runs/c100}
JOBS=${2:-2}
SEEDS=${SEEDS:-0 1}
TWO_TEACHERS=${TWO_TEACHERS:-yes}
KD=".venv/bin/kdlab"
S=configs/cifar100/small/student_resnet8.yaml
T=$OUT/c100-teacher-resnet20
T2=$OUT/c100-teacher-resnet20-s1
[ -f "$T/summary.json" ] || $KD train --no-progress --config configs/cifar100/small/teacher_resnet20.yaml output_dir=$OUT
TEACH="teacher.name=resnet20 teacher.checkpoint=$T"
declare -A EXTRA=([dkd]="method.warmup_epochs=1" [crd]="method.nce_k=4096")
# ATSC as published collapses here (the teacher's unanchored BatchNorm parameters let teacher and projector
# meet at a constant map; experiments/atsc_guards_probe.sh): its variants also run with the BN anchor.
ABN="method.anchor_bn=true"

jobs_list() {  # one shell command per line; a finished run (summary.json) is skipped
  job() { local name=$1; shift; [ -f "$OUT/$name/summary.json" ] || echo "rm -rf $OUT/$name && $* engine.threads=1 output_dir=$OUT name=$name > $OUT/$name.log 2>&1"; }
  [ "$TWO_TEACHERS" = no ] || job c100-teacher-resnet20-s1 $KD train --no-progress --config configs/cifar100/small/teacher_resnet20.yaml seed=1
  for seed in $SEEDS; do
    for m in dkd dist fitnet at sp rkd pkt crd simkd; do
      job $m-s$seed        $KD distill --no-progress --config $S seed=$seed method.name=$m ${EXTRA[$m]:-} $TEACH
      job $m-tlcmpick-s$seed $KD distill --no-progress --config $S seed=$seed method.name=$m ${EXTRA[$m]:-} $TEACH views.strong=cutmix_pick
    done
    job atsc-s$seed              $KD distill --no-progress --config $S seed=$seed method.name=atsc $TEACH
    job atsc-abn-s$seed          $KD distill --no-progress --config $S seed=$seed method.name=atsc $ABN $TEACH
    job atsc-abn-tlcmpick-s$seed $KD distill --no-progress --config $S seed=$seed method.name=atsc $ABN $TEACH views.strong=cutmix_pick
    # the second teacher may still be training in the other job slot: wait for its summary
    [ "$TWO_TEACHERS" = no ] || job atsc-abn-2t-s$seed "until [ -f $T2/summary.json ]; do sleep 20; done;" $KD distill --no-progress --config $S seed=$seed method.name=atsc $ABN $TEACH \
      "'teachers=[{name: resnet20, checkpoint: $T2}]'"  # quoted for the bash -c that runs the line
  done
}
mkdir -p "$OUT"
if [ -n "${LIST_ONLY:-}" ]; then jobs_list; exit 0; fi  # print the job lines (for another scheduler)
jobs_list | xargs -d '\n' -P "$JOBS" -I{} bash -c '{}' || echo "some runs failed: see $OUT/*.log"
