#!/usr/bin/env bash
# Speed-up of 2 ranks over 1 (one thread each), ResNet-18 224x224 light, 64 calibration
# samples, T = 32, check on the 64 samples, before (a worktree of 1b6077a) and after the
# fourth session's changes (ANN batches capped at 16 MiB, histogram counts reduced as int32, no
# heap trim after every calibrated layer): new, old, new interleaved. Then ResNet-50 light at 64
# samples on 2 ranks with the new code (peak memory after dropping the per-layer trim).
# The recorded run (README: "How close 2 ranks get") had fbde3bc as new; the per-layer trim came
# back in 9a47690 (the ResNet-50 peak rose to 3.57 GiB without it), so a rerun's "new" is HEAD.
# Artifacts of old and new must be identical (compare).
#   bash benchmarks/scale/speedup_ab.sh        (about 25 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
export SCALE_WORK=${SCALE_WORK:-/tmp/snnc-speedup-ab}
W=$SCALE_WORK/snnc-scale
NEW=$(git rev-parse --short HEAD)
OLDT=/tmp/snnc-speedup-old NEWT=/tmp/snnc-speedup-new
git worktree add -q "$OLDT" 1b6077a
git worktree add -q "$NEWT" "$NEW"
trap 'git worktree remove --force "$OLDT"; git worktree remove --force "$NEWT"' EXIT
run() {  # version ranks-list [arch]
  local t=$OLDT rev=1b6077a; [ "$1" = new ] && { t=$NEWT; rev=$NEW; }
  PYTHONPATH=$t $PY benchmarks/scale/scale.py ranks --arch "${3:-resnet18}" --levels light --samples 64 --check-samples "${4:-64}" \
    --ranks "$2" --tag "sp$1" --note "speed-up A/B (2026-12-04, fourth session): $1 code ($rev)"
}
run new 1,2
run old 1,2
run new 1,2
$PY benchmarks/scale/scale.py compare "$W/resnet18_light_64_auto_1x1_spold.snn" "$W/resnet18_light_64_auto_1x1_spnew.snn" "$W/resnet18_light_64_auto_2x1_spnew.snn" --samples 4 \
  --note "speed-up A/B: ResNet-18 light 64 samples, old 1 rank vs new 1 and 2 ranks"
PYTHONPATH=$NEWT $PY benchmarks/scale/scale.py ranks --arch resnet50 --levels light --samples 64 --store disk --ranks 2 --check-samples 4 \
  --tag "spnew" --note "after the fourth session's changes ($NEW): no heap trim after every layer"
$PY benchmarks/scale/scale.py table
