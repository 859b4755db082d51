"""Thresholds with the ANN batch cap at 64 MiB (before) and 16 MiB (after), per model:
bit-identical parameters expected (maxima and integer histogram counts do not depend on how the
samples are batched), and the time of the threshold statistics in one process.

    python benchmarks/scale/ann_cap_check.py      # writes results/ann_cap.json (about 2 minutes)

Models: the Br35H ResNet-18 (128 calibration images; `python -m examples.brain_tumour_224.data`
first), the brain-tissue U-Net (its 60 calibration slices, from nilearn) and a random-weight
ResNet-18 at 224x224 (64 N(0, 1) images, as in scale.py).
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
if "SCALE_WORK" not in os.environ:  # a work folder of our own (the random ResNet-18 and its inputs), removed at exit
    os.environ["SCALE_WORK"] = tempfile.mkdtemp(prefix="snnc-ann-cap-")
    atexit.register(shutil.rmtree, os.environ["SCALE_WORK"], True)
import scale  # noqa: E402  (benchmarks/scale/scale.py: the random ResNet-18 and its inputs)

import snnc  # noqa: E402
import snnc.ir.executor as executor  # noqa: E402

PIPELINE = "canonicalize,fold-bn,balance-thresholds,insert-if"


def models():
    from examples.brain_seg.data import load_split

    yield "br35h_resnet18_224", ROOT / "examples/brain_tumour_224/models/tumour_resnet18_224.onnx", np.load(ROOT / ".data/brain_tumour_224/calib.npz")["x"][:128]
    yield "brain_seg_unet", ROOT / "examples/brain_seg/models/brain_seg_unet.onnx", load_split("train")[0]
    yield "random_resnet18_224", scale.model_file("resnet18"), np.load(scale.data_file(64))["x"]


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for name, path, x in models():
        runs = {}
        for cap in (64, 16):
            executor.ANN_VALUE_BYTES = cap << 20
            t0 = time.perf_counter()
            sm = snnc.convert(str(path), calib=x, timesteps=32, passes=PIPELINE, check=False, calib_samples=len(x))
            seconds = time.perf_counter() - t0
            g = sm.snn
            runs[cap] = (sm, round(seconds, 2), executor.ann_batch_size(g, 128))
        (a, ta, ba), (b, tb, bb) = runs[64], runs[16]
        pairs = [(m.params[k], o.params[k]) for m, o in zip(a.snn.nodes, b.snn.nodes) for k in m.params]
        row = {"model": name, "samples": len(x), "parameters": len(pairs), "identical_parameters": sum(np.array_equal(p, q) for p, q in pairs),
               "batch_64MiB": ba, "batch_16MiB": bb, "seconds_64MiB": ta, "seconds_16MiB": tb}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = Path(__file__).resolve().parent / "results" / "ann_cap.json"
    out.write_text(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, one thread, torch {torch.__version__}", "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
