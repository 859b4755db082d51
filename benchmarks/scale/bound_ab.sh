#!/usr/bin/env bash
# Peak memory of a ResNet-50 224x224 light conversion (T = 32, 2 ranks of one thread, spike
# trains on disk) against the number of calibration samples, before and after HeapBound
# (snnc.utils.memory: the freed heap memory a batch loop leaves resident stays within half of
# what its first batch left), 2026-12-04. 64 samples with the code before (a worktree of
# ba17887) and after (a worktree of 1b6077a), side by side, then 256 samples after. The
# artifacts of one sample count must be identical (trimming the heap changes no number):
# scale.py compare checks parameters and outputs.
#   bash benchmarks/scale/bound_ab.sh        (about 30 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
export SCALE_WORK=${SCALE_WORK:-/tmp/snnc-bound-ab}
W=$SCALE_WORK/snnc-scale
declare -A REV=([old]=ba17887 [new]=1b6077a)
trees=()
cleanup() { for t in "${trees[@]}"; do git worktree remove --force "$t"; done; }
trap cleanup EXIT
for v in old new; do
  t=/tmp/snnc-bound-$v
  [ -d "$t" ] || { git worktree add -q "$t" "${REV[$v]}"; trees+=("$t"); }
done
run() {  # version samples
  PYTHONPATH=/tmp/snnc-bound-$1 $PY benchmarks/scale/scale.py ranks --arch resnet50 --levels light --samples "$2" --store disk \
    --ranks 2 --check-samples 4 --tag "bound$1" --note "HeapBound A/B (2026-12-04): $1 code (${REV[$1]})"
}
run old 64
run new 64
run new 256
$PY benchmarks/scale/scale.py compare "$W/resnet50_light_64_disk_2x1_boundold.snn" "$W/resnet50_light_64_disk_2x1_boundnew.snn" --samples 4 \
  --note "HeapBound A/B: ResNet-50 light 64 samples 2 ranks, before vs after"
$PY benchmarks/scale/scale.py table
