#!/usr/bin/env bash
# The device check in one command (≤ 6 minutes on one GPU): the device-parametrised tests on the device, then
# the throughput table (kdlab vs a plain PyTorch loop, view and CRD costs, bf16 + channels_last, concurrent
# runs). Everything lands in one folder of at most 8 files (the device tool returns no more).
#   bash benchmarks/gpu_check.sh [--device cuda] [--out DIR] [--smoke]   (--device cpu --smoke: seconds, here)
# Runs from a plain checkout: PYTHONPATH=. with the machine's python3 when there is no .venv.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda; OUT=${OUT:-gpu-check}; SMOKE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --smoke) SMOKE=--smoke; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
{
  date -u +%FT%TZ
  $PY -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
  git rev-parse --short=12 HEAD 2>/dev/null || echo "no git"
} > "$OUT/env.txt" 2>&1
status=0
TESTS=(tests/test_device.py tests/test_graphed_step.py tests/test_strong_views.py tests/test_release_presets.py tests/test_image_ops.py
       tests/test_device_decode.py)
PICK=()
[ -n "$SMOKE" ] && TESTS=(tests/test_device.py) && PICK=(-k image_ops)  # `make test` runs the rest on the CPU
KDLAB_TEST_DEVICE=$DEVICE $PY -m pytest -p no:cacheprovider "${TESTS[@]}" "${PICK[@]}" > "$OUT/tests.txt" 2>&1 \
  || status=1
tail -3 "$OUT/tests.txt"
# the end-to-end rows need CIFAR-100, carried to the device in a git-ignored folder:
#   mkdir -p .gpu-data && cp ../shared/data/cifar100-jpg.tar.gz .gpu-data/   (then carry [".gpu-data"])
DATA=()
[ -f .gpu-data/cifar100-jpg.tar.gz ] && [ -z "$SMOKE" ] && DATA=(--data cifar100:.gpu-data/cifar100-jpg.tar.gz)
$PY benchmarks/device_check.py --device "$DEVICE" --out "$OUT" $SMOKE "${DATA[@]}" > "$OUT/throughput.log" 2>&1 \
  || status=1
cat "$OUT/throughput.md" 2>/dev/null || tail -20 "$OUT/throughput.log"
exit $status
