#!/usr/bin/env bash
# Before/after comparison of the heap reuse (snnc/utils/memory.py), 2026-12-04: the same
# conversions with the code before it (a worktree of 74260e6 on PYTHONPATH) and with the
# current code, side by side, then the artifacts compared bit for bit.
#   bash benchmarks/scale/heap_ab.sh            (about 20 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
OLD=${OLD:-/tmp/snnc-before-heap}
export SCALE_WORK=${SCALE_WORK:-/tmp/snnc-heap-ab}
if [ ! -d "$OLD" ]; then  # the code before the change, removed again at the end
  git worktree add -q "$OLD" 74260e6
  trap 'git worktree remove --force "$OLD"' EXIT
fi
# 1. ResNet-18 224x224, light, 16 samples, 1 and 2 ranks, before then after
PYTHONPATH=$OLD $PY benchmarks/scale/scale.py ranks --arch resnet18 --levels light --samples 16 --check-samples 16 --ranks 1,2 --tag old --note "A/B: before heap reuse (74260e6)"
$PY benchmarks/scale/scale.py ranks --arch resnet18 --levels light --samples 16 --check-samples 16 --ranks 1,2 --tag new --note "A/B: heap reuse"
W=$SCALE_WORK/snnc-scale
mkdir -p "$W/tmp"
export TMPDIR="$W/tmp"  # torchrun's torchelastic_* logs stay in the work folder
$PY benchmarks/scale/scale.py compare $W/resnet18_light_16_auto_1x1_old.snn $W/resnet18_light_16_auto_1x1_new.snn $W/resnet18_light_16_auto_2x1_new.snn --samples 16
# 2. Br35H ResNet-18 (needs `python -m examples.brain_tumour_224.data`), advanced with a short fit, 2 ranks
M=examples/brain_tumour_224/models/tumour_resnet18_224.onnx
C=.data/brain_tumour_224/calib.npz
P="canonicalize,fold-bn,balance-thresholds{method=percentile percentile=98 granularity=channel},insert-if{maxpool=gate},calibrate-weights{iterations=60},calibrate-bias,calibrate-potential,fuse-synapses"
for v in old new; do
  pp=; [ $v = old ] && pp=$OLD
  PYTHONPATH=$pp OMP_NUM_THREADS=1 /usr/bin/time -f "$v: %e s wall, peak RSS %M kB (largest rank), user %U s, sys %S s" \
    .venv/bin/torchrun --standalone --nproc-per-node 2 --no-python .venv/bin/snnc convert $M -T 32 --calib $C --calib-samples 32 \
    --check-samples 4 --passes "$P" --no-progress -o "$W/br35h_adv_$v.snn"
done
$PY benchmarks/scale/scale.py compare "$W/br35h_adv_old.snn" "$W/br35h_adv_new.snn" --calib $C --samples 4
