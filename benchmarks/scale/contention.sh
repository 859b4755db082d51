#!/usr/bin/env bash
# The ceiling for 2 ranks on this machine: the same one-thread conversion (ResNet-18 224x224,
# light, 32 calibration samples, T = 32) alone, then two copies at once (independent processes,
# nothing exchanged). If the pair's runs take longer than the lone one, the two cores slow each
# other down (memory bandwidth, the kernel's page faults), and no split of the work into 2 ranks
# can be faster than alone / pair x 2 over one rank.
#   bash benchmarks/scale/contention.sh        (about 4 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
export SCALE_WORK=${SCALE_WORK:-/tmp/snnc-contention}
W=$SCALE_WORK/snnc-scale
mkdir -p "$W/tmp"
export TMPDIR=$W/tmp OMP_NUM_THREADS=1
.venv/bin/python - <<'P'
import sys; sys.argv = ["x"]; sys.path.insert(0, "benchmarks/scale")
import scale; scale.model_file("resnet18"); scale.data_file(32)
P
A=(convert "$W/resnet18.onnx" --calib "$W/x32.npz" --calib-samples 32 -T 32 --calibration light --check-samples 4 --no-progress)
t() { /usr/bin/time -f "$1: %e s wall, user %U s, sys %S s" .venv/bin/snnc "${A[@]}" -o "$W/$1.snn" --report "$W/$1.json" > /dev/null; }
t alone
t pair_a & t pair_b; wait
for r in alone pair_a pair_b; do
  .venv/bin/python -c "import json,sys; p=json.load(open(sys.argv[1]))['provenance']['passes']; print(sys.argv[2], 'calibrate-bias', [x['seconds'] for x in p if x['name']=='calibrate-bias'][0], 's')" "$W/$r.json" "$r"
done
