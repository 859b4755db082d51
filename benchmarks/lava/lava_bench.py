"""Lava backends on the Fashion-MNIST models: accuracy vs the float SNN, and throughput.

For the VGG-BN and the ResNet, converted with snnc's defaults for T = 32 (advanced
calibration, 1024 calibration images), the first ``--test`` Fashion-MNIST test images are
run at T = 32 under the reference simulator (the float SNN), ``lava`` (float processes) and
``lava-fixed`` (Loihi fixed point), one after the other in one run: samples/s, argmax
agreement with the reference, accuracy, the number of Lava processes, and where the time
goes (time inside the process kernels vs Lava's messaging and synchronisation).

    python benchmarks/lava/lava_bench.py            # -> results/lava.{json,md}
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import snnc  # noqa: E402
from snnc.utils.io import write_json, write_text  # noqa: E402
from snnc.backend import get_backend  # noqa: E402

MODELS = ROOT / "examples" / "fashion_mnist" / "models"
OUT = Path(__file__).resolve().parent / "results"


def artifact(name: str, T: int, cache: Path) -> snnc.SpikingModel:
    """The model converted as `snnc convert MODEL -T T --calib .data/fashion_mnist/calib.npz`
    (defaults: advanced calibration on the 1024 images of `make data`), cached."""
    path = cache / f"{name}_T{T}.snn"
    if not path.exists():
        calib = np.load(ROOT / ".data" / "fashion_mnist" / "calib.npz")["x"]
        snnc.convert(MODELS / f"{name}.onnx", calib, timesteps=T).save(path)
    return snnc.load(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vgg_bn,resnet")
    p.add_argument("--test", type=int, default=500)
    p.add_argument("-T", "--timesteps", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--cache", default=str(ROOT / "out" / "lava_bench"))
    p.add_argument("--out", default=str(OUT / "lava"))
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    T = args.timesteps
    d = np.load(ROOT / ".data" / "fashion_mnist" / "test.npz")  # `make data`: the first 2000 test images
    x, y = d["x"][: args.test], d["y"][: args.test]
    import importlib.metadata

    res = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads()},
        "versions": {"snnc": snnc.__version__, "torch": torch.__version__, "lava-nc": importlib.metadata.version("lava-nc"), "python": platform.python_version()},
        "test_images": len(x),
        "timesteps": T,
        "batch": args.batch,
        "models": {},
    }
    for name in args.models.split(","):
        sm = artifact(name, T, cache)
        entry = {}
        ref_out = None
        for be in ("reference", "lava", "lava-fixed"):
            t0 = time.perf_counter()
            r = get_backend(be).run(sm.snn, x, [T], batch_size=None if be == "reference" else args.batch)
            dt = time.perf_counter() - t0
            out = r.output(T)
            if ref_out is None:
                ref_out = out
            row = {
                "seconds": round(dt, 2),
                "samples_per_second": len(x) / dt,
                "accuracy": float(np.mean(out.argmax(1) == y)),
                "agreement_with_reference": float(np.mean(out.argmax(1) == ref_out.argmax(1))),
                "max_abs_diff_vs_reference": float(np.abs(out - ref_out).max()),
            }
            lava = r.details.get("lava")
            if lava:
                busy = lava["compute_seconds"]
                row.update(
                    processes=lava["processes"],
                    lava_runs=lava["lava_runs"],
                    compute_seconds_total=round(sum(busy.values()), 2),
                    compute_share=round(sum(busy.values()) / lava["wall_seconds"], 3),
                    top_compute=[[k, round(v, 2)] for k, v in sorted(busy.items(), key=lambda kv: -kv[1])[:4]],
                )
            if "deployment" in r.details:
                dep = r.details["deployment"]
                row["deployment"] = {"resources": dep["resources"], "layers": [{k: L[k] for k in ("layer", "vth", "synapses", "bias_relative_rms_error", "neurons", "connections", "cores")} for L in dep["layers"]]}
            entry[be] = row
            print(f"{name} {be}: {row['samples_per_second']:.2f} samples/s, acc {100 * row['accuracy']:.2f}, agree {100 * row['agreement_with_reference']:.2f}", flush=True)
        res["models"][name] = entry
    out = Path(args.out)
    write_json(out.with_suffix(".json"), res)
    write_text(out.with_suffix(".md"), markdown(res))
    print(markdown(res))
    return 0


def markdown(res: dict) -> str:
    lines = [
        f"# Lava backends, Fashion-MNIST, T = {res['timesteps']}",
        "",
        f"{res['test_images']} test images; Lava sample batch {res['batch']}; {res['machine']['processor']}, {res['machine']['cpu_threads']} threads; "
        + ", ".join(f"{k} {v}" for k, v in res["versions"].items())
        + ".",
        "",
        "| model | backend | samples/s | accuracy | agreement with reference | Lava processes | time in kernels / wall |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in res["models"].items():
        for be, r in e.items():
            lines.append(
                f"| {name} | {be} | {r['samples_per_second']:.2f} | {100 * r['accuracy']:.2f} | {100 * r['agreement_with_reference']:.2f} | "
                f"{r.get('processes', '-')} | {100 * r['compute_share']:.0f} %" + " |"
                if "compute_share" in r
                else f"| {name} | {be} | {r['samples_per_second']:.2f} | {100 * r['accuracy']:.2f} | {100 * r['agreement_with_reference']:.2f} | - | - |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
