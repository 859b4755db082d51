"""GPU equivalence of the spikingjelly backend, and proof that SpikingJelly's own CUDA /
Triton neuron kernels ran (not a torch fallback).

For each artifact: the 2000 Fashion-MNIST test images at T = 8, 16, 32 through the
reference simulator on the GPU and the spikingjelly backend on the GPU (batch 256);
argmax agreement, max |output difference|, spike rates, accuracy; and, when a file of CPU
reference outputs is given, the same against the CPU run. Then one batch under the torch
profiler: the CUDA kernels that ran, and SpikingJelly's implementation selection for its
activation-aware IF operator.

    python benchmarks/throughput/gpu_check.py --data test.npz --cpu-ref cpu_ref.npz \
        vgg_bn_T32.snn resnet_T32.snn -o gpu_check.json
    python benchmarks/throughput/gpu_check.py --make-cpu-ref cpu_ref.npz --data test.npz ART...  # on a CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import snnc  # noqa: E402
from snnc.backend import get_backend  # noqa: E402
from snnc.utils.io import write_json  # noqa: E402

STEPS = [8, 16, 32]


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    return {"argmax_agreement": float(np.mean(a.argmax(1) == b.argmax(1))), "max_abs_diff": float(np.abs(a - b).max())}


def kernels_that_ran(net, x: torch.Tensor, T: int) -> dict:
    """CUDA kernels of one batch, and SpikingJelly's selected implementation."""
    from torch.profiler import ProfilerActivity, profile

    cuda = x.is_cuda
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.inference_mode():
        net.sequence(x, T)  # warm-up (Triton JIT)
        sync()
        with profile(activities=activities) as prof:
            net.sequence(x, T)
            sync()
    kernels: Counter = Counter()
    cuda_us: Counter = Counter()
    ops: Counter = Counter()
    for e in prof.events():
        if "CUDA" in str(getattr(e, "device_type", "")):
            kernels[e.name] += 1
            cuda_us[e.name] += getattr(e, "device_time_total", 0.0)
        elif e.name.startswith("sj_"):
            ops[e.name] += 1
    neurons = len(net.neurons())
    sj_kernels = {k: v for k, v in kernels.items() if "activation_aware" in k.lower() or k.startswith("_kernel") or "triton" in k.lower()}
    selection = {}
    try:
        from spikingjelly._ops.activation_aware_if import _selection

        selection = {str(k): (v.name if hasattr(v, "name") else repr(v)) for k, v in _selection._selections.items()}
    except Exception as e:  # private API: report rather than fail
        selection = {"error": f"{type(e).__name__}: {e}"}
    total = sum(cuda_us.values()) or 1.0
    return {
        "if_neuron_layers": neurons,
        "spikingjelly_ops_called": dict(ops),
        "spikingjelly_neuron_kernels": sj_kernels,
        "spikingjelly_selection": selection,
        "top_kernels_by_gpu_time": [
            {"kernel": k[:120], "calls": kernels[k], "share": round(us / total, 4)} for k, us in cuda_us.most_common(12)
        ],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifacts", nargs="+")
    p.add_argument("--data", required=True)
    p.add_argument("--cpu-ref", default=None, help="NPZ of CPU reference outputs to compare with")
    p.add_argument("--make-cpu-ref", default=None, help="write CPU reference outputs to this NPZ and stop")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--no-tf32", action="store_true", help="full float32 convolutions and matmuls (torch's default allows TF32 in cuDNN)")
    p.add_argument("-o", "--output", default="gpu_check.json")
    args = p.parse_args(argv)
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    d = np.load(args.data)
    x, y = d["x"], d["y"]
    if args.make_cpu_ref:
        outs = {}
        for art in args.artifacts:
            res = snnc.load(art).simulate(x, STEPS, batch_size=args.batch)
            for t in STEPS:
                outs[f"{Path(art).stem}_T{t}"] = res.output(t)
        np.savez(args.make_cpu_ref, **outs)
        return 0
    cpu_ref = np.load(args.cpu_ref) if args.cpu_ref else None
    report = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
        "images": len(x),
        "models": {},
    }
    sj = get_backend("spikingjelly", device="cuda")
    ref = get_backend("reference", device="cuda")
    for art in args.artifacts:
        name = Path(art).stem
        sm = snnc.load(art)
        t0 = time.perf_counter()
        r_ref = ref.run(sm.snn, x, STEPS, batch_size=args.batch)
        t1 = time.perf_counter()
        r_sj = sj.run(sm.snn, x, STEPS, batch_size=args.batch)
        t2 = time.perf_counter()
        entry = {"seconds": {"reference_gpu": round(t1 - t0, 2), "spikingjelly_gpu": round(t2 - t1, 2)}, "per_T": {}}
        for t in STEPS:
            a, b = r_ref.output(t), r_sj.output(t)
            row = {
                "spikingjelly_vs_reference_gpu": compare(b, a),
                "bit_identical": bool(np.array_equal(a, b)),
                "accuracy": {"reference_gpu": float(np.mean(a.argmax(1) == y)), "spikingjelly_gpu": float(np.mean(b.argmax(1) == y))},
            }
            if cpu_ref is not None and f"{name}_T{t}" in cpu_ref:
                c = cpu_ref[f"{name}_T{t}"]
                row["spikingjelly_gpu_vs_reference_cpu"] = compare(b, c)
                row["accuracy"]["reference_cpu"] = float(np.mean(c.argmax(1) == y))
            entry["per_T"][str(t)] = row
        entry["spike_rates_equal"] = r_ref.spike_rates == r_sj.spike_rates
        entry["max_spike_rate_diff"] = max(abs(r_ref.spike_rates[k] - r_sj.spike_rates[k]) for k in r_ref.spike_rates)
        report["models"][name] = entry
        print(json.dumps({name: entry}, indent=1), flush=True)
        try:
            net = sj.lower(sm.snn)
            entry["kernels"] = kernels_that_ran(net, torch.from_numpy(x[: args.batch]).cuda(), 32)
        except Exception as e:  # the evidence is optional; the equivalence numbers stand
            entry["kernels"] = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(entry["kernels"], indent=1), flush=True)
        write_json(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
