#!/usr/bin/env bash
# The CRD CIFAR-100 protocol on one GPU, whole: a resnet56 teacher with CE, then KD resnet56 → resnet20, each
# `configs/cifar100/teacher_resnet56.yaml` / `kd_resnet56_resnet20.yaml` (240 epochs, batch 64, lr ×0.1 at
# 150/180/210), in kdlab's fastest GPU mode (bf16 + channels_last + engine.cuda_graphs; MODE="" for the defaults
# without graphs, MODE="engine.amp=none engine.channels_last=false" for fp32 eager).
# EPOCHS below 240 shortens both runs with their milestones scaled (schedule.epoch_factor = EPOCHS/240): a
# shorter schedule, to be reported as such. Writes OUT/crd_protocol.md (accuracy, wall time, img/s) and
# OUT/crd_protocol.log; the run folders go to OUT/runs (not returned by the device tool: only what is needed).
#   bash benchmarks/crd_protocol_gpu.sh [EPOCHS] [OUT]     (data: .gpu-data/cifar100-jpg.tar.gz, carried)
set -uo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-240}; OUT=${2:-crd-protocol}
MODE=${MODE-engine.amp=bf16 engine.channels_last=true engine.cuda_graphs=true}
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
DATA=${DATA:-cifar100:.gpu-data/cifar100-jpg.tar.gz}
FACTOR=$($PY -c "print($EPOCHS / 240)")
mkdir -p "$OUT"
read -r -a MODE_ARGS <<< "$MODE"
COMMON=(data.dataset="$DATA" schedule.epoch_factor="$FACTOR" output_dir="$OUT/runs" engine.progress=false
        engine.report=false "${MODE_ARGS[@]}")
{
  start=$(date +%s)
  $PY -m kdlab train --config configs/cifar100/teacher_resnet56.yaml name=teacher "${COMMON[@]}"
  mid=$(date +%s)
  $PY -m kdlab distill --config configs/cifar100/kd_resnet56_resnet20.yaml name=kd \
    teacher.checkpoint="$OUT/runs/teacher" "${COMMON[@]}"
  end=$(date +%s)
  echo "wall: teacher $((mid - start)) s, student $((end - mid)) s"
} > "$OUT/crd_protocol.log" 2>&1
status=$?
$PY - "$OUT" "$EPOCHS" "$MODE" <<'PY' > "$OUT/crd_protocol.md"
import json, sys
from pathlib import Path
out, epochs, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3] or "fp32 eager"
print(f"# CRD protocol on one GPU: {epochs} epochs ({'the protocol' if epochs == '240' else 'a shorter schedule'}), {mode}\n")
print("| run | test acc (%) last / best | train wall time (s) | mean img/s |")
print("|---|---|---|---|")
for name in ("teacher", "kd"):
    f = out / "runs" / name / "summary.json"
    if not f.is_file():
        print(f"| {name} | did not finish (crd_protocol.log) | – | – |")
        continue
    s = json.loads(f.read_text())
    print(f"| {name} | {s['last_epoch_test_acc']:.2f} / {s['best_test_acc']:.2f} | "
          f"{s['train_seconds_this_session']:.0f} | {s['mean_images_per_s']:.0f} |")
PY
cat "$OUT/crd_protocol.md"; tail -1 "$OUT/crd_protocol.log"
exit $status
