#!/usr/bin/env bash
# Before/after comparison of the weight fit's fixed-size minibatch shards
# (snnc.passes.calibrate.FitDraw), 2026-12-04: Br35H ResNet-18 224x224, advanced with a
# short fit (calibrate-weights{iterations=60}), 32 calibration samples, T = 32, in one
# process and on 2 ranks, with the code before the change (a worktree of 27a8186 on
# PYTHONPATH: the fit under glibc's default allocation, uneven shards) and after it (the fit
# inside the heap reuse, fixed shards). One process must give a bit-identical artifact (same
# draw); 2 ranks draw differently (stratified), so their artifact moves within the fit's noise.
#   bash benchmarks/scale/fit_ab.sh            (about 25 minutes on 2 cores)
#   (needs `python -m examples.brain_tumour_224.data` first)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
OLD=${OLD:-/tmp/snnc-before-fitdraw}
W=${SCALE_WORK:-/tmp/snnc-fit-ab}/snnc-scale
mkdir -p "$W/tmp"
export TMPDIR="$W/tmp"  # torchrun's torchelastic_* logs stay in the work folder
if [ ! -d "$OLD" ]; then  # the code before the change, removed again at the end
  git worktree add -q "$OLD" 27a8186
  trap 'git worktree remove --force "$OLD"' EXIT
fi
M=examples/brain_tumour_224/models/tumour_resnet18_224.onnx
C=.data/brain_tumour_224/calib.npz
P="canonicalize,fold-bn,balance-thresholds{method=percentile percentile=98 granularity=channel},insert-if{maxpool=gate},calibrate-weights{iterations=60},calibrate-bias,calibrate-potential,fuse-synapses"
for ranks in 1 2; do
  for v in old new; do
    pp=; [ $v = old ] && pp=$OLD
    if [ $ranks = 1 ]; then launch=(.venv/bin/snnc); else launch=(.venv/bin/torchrun --standalone --nproc-per-node 2 --no-python .venv/bin/snnc); fi
    PYTHONPATH=$pp OMP_NUM_THREADS=1 /usr/bin/time -f "$v, $ranks rank(s): %e s wall, peak RSS %M KiB (largest rank), user %U s, sys %S s" \
      "${launch[@]}" convert $M -T 32 --calib $C --calib-samples 32 --check-samples 4 --passes "$P" --no-progress --time-passes \
      -o "$W/br35h_fit_${ranks}_$v.snn" --report "$W/br35h_fit_${ranks}_$v.json"
  done
done
$PY benchmarks/scale/scale.py compare "$W/br35h_fit_1_old.snn" "$W/br35h_fit_1_new.snn" --calib $C --samples 4 --note "fit A/B: 1 process, before vs after"
$PY benchmarks/scale/scale.py compare "$W/br35h_fit_2_old.snn" "$W/br35h_fit_2_new.snn" --calib $C --samples 4 --note "fit A/B: 2 ranks, before vs after (draw changed)" || true
$PY benchmarks/scale/scale.py compare "$W/br35h_fit_1_old.snn" "$W/br35h_fit_2_old.snn" --calib $C --samples 4 --note "fit A/B: 1 process vs 2 ranks, both before the change (27a8186): the rank count's effect then"
$PY benchmarks/scale/scale.py compare "$W/br35h_fit_1_old.snn" "$W/br35h_fit_2_new.snn" --calib $C --samples 4 --note "fit A/B: 1 process (before; bit-identical after) vs 2 ranks after the change (per-rank draw)"
