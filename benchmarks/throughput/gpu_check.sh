#!/usr/bin/env bash
# The GPU checks of the spikingjelly backend in one command, on a machine without internet:
# install snnc + the backend (+ SpikingJelly and loguru from local wheels), run the backend's
# equivalence tests with both backends on CUDA, the 2000-image equivalence check with the
# kernel evidence, and the throughput benchmark. Everything lands in OUT_DIR.
#
#   bash benchmarks/throughput/gpu_check.sh WHEEL_DIR ARTIFACT_DIR OUT_DIR
#
# WHEEL_DIR: spikingjelly-2.0.0 and loguru wheels (pip download --no-deps ...), or "-" when
# they are installed. ARTIFACT_DIR: test.npz (Fashion-MNIST test x, y), *_T32.snn artifacts,
# and cpu_ref.npz from `gpu_check.py --make-cpu-ref` on a CPU (see benchmarks/throughput/README.md).
set -uo pipefail
WHL=${1:-.whl}; ART=${2:-.gpu}; OUT=${3:-out/gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if [ "$WHL" != "-" ]; then
  $PY -m pip install -q --no-index --no-deps "$WHL"/*.whl || exit 1
fi
$PY -m pip install -q --no-index --no-deps --no-build-isolation -e . -e backends/spikingjelly || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/nvidia-smi.txt" 2>&1
export PYTHONUNBUFFERED=1
SNNC_TEST_DEVICE=cuda $PY -m pytest -q -p no:cacheprovider tests/test_spikingjelly_backend.py 2>&1 | tee "$OUT/pytest_cuda.log"
$PY benchmarks/throughput/gpu_check.py --data "$ART/test.npz" --cpu-ref "$ART/cpu_ref.npz" "$ART"/*_T32.snn \
  -o "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"
$PY benchmarks/throughput/throughput.py --device cuda --out "$OUT/gpu" 2>&1 | grep -v "it/s\]" | tee "$OUT/throughput.log"
