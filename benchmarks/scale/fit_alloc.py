"""What the allocator does to weight calibration's Adam loop (snnc/utils/memory.py).

A synthetic fit step shaped like calibrate-weights' on a 224x224 network: a 3x3 convolution
over a minibatch shard of [n, 64, 112, 112] time-averaged inputs, a straight-through rate
and a squared error, backward, with the shard size n drawn from 26..38 each step (as when
a 64-sample minibatch was split over 2 ranks before snnc.passes.calibrate.FitDraw), and again
with n fixed at 32 (FitDraw's shards). Each once with glibc's default, once inside
``reuse_freed_memory()`` (every allocation from the heap) and once inside it with a
``HeapBound`` stepped before every step (as calibrate-weights' loop does since the fourth
session), one thread each, in fresh processes; prints wall time, kernel time, minor page
faults, peak RSS and the bound's trims.

    python benchmarks/scale/fit_alloc.py            # all three modes, both shard sizes, 30 steps
    python benchmarks/scale/fit_alloc.py --steps 90
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _rss_mib() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1]) // 1024


def run(mode: str, steps: int, fixed: bool = False) -> dict:
    import torch

    from snnc.utils import memory

    torch.set_num_threads(1)
    torch.manual_seed(0)
    x_all = torch.randn(48, 64, 112, 112)
    w = torch.randn(64, 64, 3, 3, requires_grad=True)
    gen = torch.Generator().manual_seed(0)

    bound = memory.HeapBound()

    def loop() -> dict:
        t0, r0, peak = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF), 0
        for _ in range(steps):
            if mode == "bound":
                bound.step()
            n = int(torch.randint(26, 39, (1,), generator=gen)) if not fixed else 32
            x = x_all[:n].clone()
            y = torch.nn.functional.conv2d(x, w, padding=1)
            rate = ((y > 0.5).float() * 2.0 + y).clamp(0, 3).floor() / 3
            ((rate - x) ** 2).sum().backward()
            peak = max(peak, _rss_mib())
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        return {"mode": mode, "shards": "fixed 32" if fixed else "26..38", "steps": steps, "seconds": round(time.perf_counter() - t0, 2), "kernel_seconds": round(r1.ru_stime - r0.ru_stime, 2),
                "minor_faults": r1.ru_minflt - r0.ru_minflt, "peak_rss_mib": peak, "trims": bound.trims}  # fmt: skip

    if mode in ("heap", "bound"):
        with memory.reuse_freed_memory():
            return loop()
    return loop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--mode", choices=["default", "heap", "bound"], help=argparse.SUPPRESS)
    ap.add_argument("--fixed", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mode:
        print(json.dumps(run(a.mode, a.steps, a.fixed)))
        return
    for fixed in ([], ["--fixed"]):
        for mode in ("default", "heap", "bound"):
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--steps", str(a.steps), *fixed], capture_output=True, text=True, check=True)
            print(out.stdout.strip())


if __name__ == "__main__":
    main()
