"""What the calibration papers leave open, measured: the light pipeline with one choice changed.

On the Fashion-MNIST models (first N test images, 1024 seeded calibration images), at each T:

* ``light``: the default light pipeline (per-channel 98th-percentile thresholds, v(0) = θ/2,
  calibrate-bias on every spiking layer and the output layer);
* ``per-layer thresholds``: one threshold per layer instead of per channel;
* ``half step as bias``: θ/(2T) added to the input current every step instead of v(0) = θ/2;
* ``output layer not calibrated``: calibrate-bias{output=false};
* ``calibrated for T=32``: the light pipeline converted for T = 32, run at T (what happens when
  the T used at run time is not the one calibrated for);
* ``none``: no calibration (reference point).

Usage: ``python benchmarks/accuracy/ablation.py [--models vgg_bn,resnet] [--timesteps 8,16] [--test 2000]``.
Writes ``results/ablation.json`` and ``results/ablation.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import snnc  # noqa: E402
from benchmarks.accuracy.fashion_mnist import common_setup  # noqa: E402

MODELS_DIR = ROOT / "examples" / "fashion_mnist" / "models"
OUT_DIR = Path(__file__).resolve().parent / "results"


def pipeline(granularity="channel", v_init="half", output="true") -> str:
    return (
        f"canonicalize,fold-bn,balance-thresholds{{method=percentile percentile=98 granularity={granularity}}},"
        f"insert-if{{v-init={v_init}}},calibrate-bias{{output={output}}}"
    )


VARIANTS = {
    "light": {"passes": pipeline()},
    "per-layer thresholds": {"passes": pipeline(granularity="layer")},
    "half step as bias θ/(2T)": {"passes": pipeline(v_init="bias")},
    "output layer not calibrated": {"passes": pipeline(output="false")},
    "calibrated for T=32": {"passes": pipeline(), "convert_T": 32},
    "none": {"calibration": "none"},
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vgg_bn,resnet")
    p.add_argument("--timesteps", default="8,16")
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--calib", type=int, default=1024)
    p.add_argument("--out", default=str(OUT_DIR))
    args = p.parse_args(argv)
    steps, calib, x, y, results = common_setup(args)
    for name in args.models.split(","):
        onnx = str(MODELS_DIR / f"{name}.onnx")
        rows: dict = {}
        cache: dict = {}
        for label, v in VARIANTS.items():
            rows[label] = {}
            for t in steps:
                conv_T = v.get("convert_T", t)
                key = (label, conv_T)
                if key not in cache:
                    t0 = time.perf_counter()
                    opts = {"passes": v["passes"]} if "passes" in v else {"calibration": v["calibration"]}
                    cache[key] = snnc.convert(onnx, calib, timesteps=conv_T, calib_samples=len(calib), check=False, **opts), time.perf_counter() - t0
                sm, secs = cache[key]
                res = snnc.evaluate(sm, x, y, timesteps=[t])
                rows[label][t] = res["results"][0]["accuracy"]
                results["models"].setdefault(name, {"ann_accuracy": res["ann_accuracy"], "rows": rows})
                print(f"[{name}] {label} T={t} (converted for T={conv_T}, {secs:.1f} s): {100 * rows[label][t]:.2f}", flush=True)
            cache = {k: c for k, c in cache.items() if k[1] == 32}  # keep only the T=32 conversion
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(results, indent=1))
    (out / "ablation.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def markdown(results: dict) -> str:
    steps = results["timesteps"]
    lines = [
        f"Light-pipeline ablation, Fashion-MNIST, first {results['test_images']} test images, "
        f"{results['calibration_images']} calibration images; {results['machine']['platform']}, torch {results['versions']['torch']}",
        "",
        "| model | variant | " + " | ".join(f"T={t}" for t in steps) + " |",
        "|---|---|" + "---|" * len(steps),
    ]
    for name, e in results["models"].items():
        for i, (label, row) in enumerate(e["rows"].items()):
            head = f"{name} (ANN {100 * e['ann_accuracy']:.2f})" if i == 0 else ""
            lines.append(f"| {head} | {label} | " + " | ".join(f"{100 * row[t if t in row else str(t)]:.2f}" for t in steps) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
