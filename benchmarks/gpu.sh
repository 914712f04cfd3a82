#!/usr/bin/env bash
# The step benchmarks on a CUDA device: kdlab's Trainer vs the plain PyTorch loop (fp32), then kdlab with
# bf16 autocast, channels_last and torch.compile, batch 64 and 128. Writes benchmarks/results/gpu-<date>.md.
# Usage (on a machine with a GPU): bash benchmarks/gpu.sh [PYTHON]
set -euo pipefail
PY=${1:-.venv/bin/python}
OUT=benchmarks/results/gpu-$(date +%Y%m%d-%H%M).md
mkdir -p benchmarks/results
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to measure')"
{
  echo "# GPU step throughput ($(date -u +%F), $($PY -c 'import torch; print(torch.cuda.get_device_name())'))"
  echo
  for batch in 64 128; do
    for extra in "engine.amp=none engine.channels_last=false" "" "engine.amp=bf16 engine.channels_last=false" \
                 "engine.amp=bf16 engine.channels_last=true engine.compile=true"; do
      echo "### batch $batch, kdlab ${extra:-defaults (engine.amp=auto, engine.channels_last=auto)}"
      # shellcheck disable=SC2086
      $PY benchmarks/step_throughput.py --device cuda --batch $batch --steps 100 --repeats 3 ${extra:+--extra $extra}
      echo
    done
  done
} | tee "$OUT"
echo "written: $OUT"
