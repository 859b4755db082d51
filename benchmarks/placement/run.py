"""Placement benchmark: snnc map's placement against the naive one (layers in order, filling
cores) on the same blocks, for the shipped CNNs, on Loihi 2 and on multi-chip settings.

Usage: python benchmarks/placement/run.py [--samples 64] [--out benchmarks/placement/results]

Each model is converted with the default pipeline and `--calibration none` (placement depends
on the structure and the spike rates; calibration moves the rates little), T = 32. The spike
traffic is measured on the first `--samples` test images. Writes placement.json (all numbers)
and placement.md (the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MODELS = {
    "fashion VGG-BN": ("examples/fashion_mnist/models/vgg_bn.onnx", ".data/fashion_mnist"),
    "fashion ResNet": ("examples/fashion_mnist/models/resnet.onnx", ".data/fashion_mnist"),
    "fashion MobileNetV2-style": ("examples/fashion_mnist/models/mobilenet.onnx", ".data/fashion_mnist"),
    "brain-MRI tumour CNN": ("examples/brain_tumour/models/tumour_cnn.onnx", ".data/brain_tumour"),
}
# (target, chips): Loihi 2 with room for two chips (the placement also chooses how many it
# needs), Loihi 2 forced onto the fewest chips that hold it, and SpiNNaker2 (small PEs: many chips).
SETTINGS = [("loihi2", 1), ("loihi2", 4), ("spinnaker2", 8), ("speck", 1)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "placement" / "results"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    import snnc
    from snnc.mapping.api import map_model

    rows = []
    for label, (onnx_path, data_dir) in MODELS.items():
        if not (ROOT / onnx_path).exists():
            print(f"skip {label}: {onnx_path} missing")
            continue
        calib = np.load(ROOT / data_dir / "calib.npz")["x"]
        test = np.load(ROOT / data_dir / "test.npz")["x"][: args.samples]
        t0 = time.perf_counter()
        sm = snnc.convert(str(ROOT / onnx_path), calib, timesteps=32, calibration="none")
        conv_s = time.perf_counter() - t0
        for target, chips in SETTINGS:
            t0 = time.perf_counter()
            try:
                rep = map_model(sm.snn, target, chips=chips, x=test, timesteps=32)
            except Exception as e:  # noqa: BLE001 - a model that does not fit is a result
                rows.append({"model": label, "target": target, "chips": chips, "fits": False, "reason": str(e)})
                print(f"{label} on {chips} {target}: does not fit: {e}")
                continue
            s, base = rep["summary"], rep["naive"]
            rows.append(
                {
                    "model": label,
                    "target": target,
                    "chips": chips,
                    "fits": True,
                    "seconds": time.perf_counter() - t0,
                    "convert_seconds": conv_s,
                    "blocks": s["blocks"],
                    "snnc": {k: s[k] for k in ("cores_used", "chips_used", "spikes_per_step_between_cores", "spikes_per_step_between_chips", "energy_per_step_nj", "time_per_step_us", "synops_per_step")},
                    "naive": {k: base.get(k) for k in ("cores_used", "chips_used", "spikes_per_step_between_cores", "spikes_per_step_between_chips", "energy_per_step_nj", "time_per_step_us")} if base.get("fits", True) else {"fits": False, "reason": base.get("reason")},
                }
            )
            print(json.dumps(rows[-1]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "torch": torch.__version__, "samples": args.samples, "timesteps": 32}
    (out / "placement.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        "# Placement: snnc map vs naive (layers in order, filling cores)",
        "",
        f"Traffic measured on the first {args.samples} test images at T = 32 (reference simulator); default pipeline, `--calibration none`; {meta['machine']}, torch {meta['torch']}.",
        "Same blocks for both; spikes per time step. Energy and time per step: the target file's figures (docs/mapping.md).",
        "snnc's placement minimises the spikes between chips first: spikes it keeps off the chip links can appear between the cores of one chip instead.",
        "",
        "| model | target x chips | blocks | cores: snnc / naive | chips used | spikes/step between chips: snnc / naive | between cores of one chip: snnc / naive | energy/step nJ: snnc / naive | time/step us: snnc / naive |",
        "|---|---|---:|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r["fits"]:
            lines.append(f"| {r['model']} | {r['target']} x {r['chips']} | - | does not fit: {r['reason'][:160]} | | | | | |")
            continue
        a, b = r["snnc"], r["naive"]
        if b.get("fits") is False:
            lines.append(f"| {r['model']} | {r['target']} x {r['chips']} | {r['blocks']} | {a['cores_used']} / does not fit | {a['chips_used']} | {a['spikes_per_step_between_chips']:,.0f} / - | {a['spikes_per_step_between_cores']:,.0f} / - | {a['energy_per_step_nj']:,.0f} / - | {a['time_per_step_us']:,.1f} / - |")
            continue
        lines.append(
            f"| {r['model']} | {r['target']} x {r['chips']} | {r['blocks']} | {a['cores_used']} / {b['cores_used']} | {a['chips_used']} / {b['chips_used']} | "
            f"{a['spikes_per_step_between_chips']:,.0f} / {b['spikes_per_step_between_chips']:,.0f} | {a['spikes_per_step_between_cores']:,.0f} / {b['spikes_per_step_between_cores']:,.0f} | "
            f"{a['energy_per_step_nj']:,.0f} / {b['energy_per_step_nj']:,.0f} | {a['time_per_step_us']:,.1f} / {b['time_per_step_us']:,.1f} |"
        )
    (out / "placement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
