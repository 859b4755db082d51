"""Operations and estimated energy per layer of the Fashion-MNIST VGG-BN and ResNet, ANN vs SNN.

For each model: convert it for T=32 (the default pipeline, the shipped calibration set; an
artifact already in ``--artifacts`` is reused), simulate the first ``--test`` test images once
to T=32 with the reference simulator while counting every neuron's spikes, and estimate
(snnc.analysis.energy) at T = 8, 16, 32 from the first T steps of that run:

* exactly, from per-neuron spike rates (the numbers reported);
* from layer-average rates (what ``snnc convert`` prints), to show the difference;
* with the analog input layer charged every step instead of once.

Writes ``results.json`` and ``results.md`` next to this file; the machine and versions are
recorded. Usage::

    python benchmarks/energy/run.py [--models vgg_bn,resnet] [--test 500] [--artifacts out/energy] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import snnc  # noqa: E402
from snnc.analysis.energy import PROFILES, count_spikes, estimate_energy, format_count  # noqa: E402

MODELS_DIR = ROOT / "examples" / "fashion_mnist" / "models"
DATA_DIR = ROOT / ".data" / "fashion_mnist"
OUT_DIR = Path(__file__).resolve().parent
STEPS = (8, 16, 32)
PROFILE_NAMES = ("cmos45nm", "cmos45nm-int8", "loihi")
ROW_KEYS = ("layer", "op", "kind", "shape", "ann_macs", "connections", "snn_synops", "snn_dense_macs", "input", "input_rate",
            "neurons", "neuron_updates", "spikes", "spike_rate", "energy")  # fmt: skip


def load_or_convert(name: str, artifacts: Path, calib: np.ndarray) -> tuple[snnc.SpikingModel, float | None]:
    path = artifacts / f"{name}.snn"
    if path.exists():
        return snnc.load(path), None
    t0 = time.perf_counter()
    sm = snnc.convert(str(MODELS_DIR / f"{name}.onnx"), calib, timesteps=32)
    seconds = time.perf_counter() - t0
    artifacts.mkdir(parents=True, exist_ok=True)
    sm.save(path)
    return sm, seconds


def totals_brief(est: dict) -> dict:
    t = est["totals"]
    out = {k: t[k] for k in ("ann_macs", "ann_activations", "connections", "snn_synops", "snn_dense_macs", "neuron_updates", "spikes", "synops_per_ann_mac")}
    out["energy"] = {p: {k: e[k] for k in ("ann_nj", "snn_nj", "ratio", "snn_parts_nj", "ann_bytes", "snn_bytes")} for p, e in t["energy"].items()}
    return out


def run_model(name: str, args, calib: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict:
    sm, convert_s = load_or_convert(name, args.artifacts, calib)
    ann_out = sm.ann_outputs(x)
    ann_pred = ann_out.argmax(1)
    t0 = time.perf_counter()
    maps, outs = count_spikes(sm, x, STEPS)
    sim_s = time.perf_counter() - t0
    per_t = {}
    for T in STEPS:
        exact = estimate_energy(sm, maps[T], T, PROFILE_NAMES, samples=len(x))
        averages = {k: float(v.mean()) for k, v in maps[T].items()}
        approx = estimate_energy(sm, averages, T, PROFILE_NAMES, samples=len(x))
        per_step = estimate_energy(sm, maps[T], T, PROFILE_NAMES, samples=len(x), analog_input="per_step")
        pred = outs[T][0].argmax(1)
        per_t[str(T)] = {
            "accuracy": float(np.mean(pred == y)),
            "agreement": float(np.mean(pred == ann_pred)),
            "spike_rates": averages,
            "rows": [{k: r[k] for k in ROW_KEYS} for r in exact["layers"]],
            "totals": totals_brief(exact),
            "totals_layer_average_rates": totals_brief(approx),
            "totals_analog_input_per_step": totals_brief(per_step),
        }
        print(f"{name} T={T}: accuracy {100 * per_t[str(T)]['accuracy']:.2f} %, SynOps {format_count(exact['totals']['snn_synops'])}, "
              f"cmos45nm SNN/ANN {exact['totals']['energy']['cmos45nm']['ratio']:.3f}", flush=True)  # fmt: skip
    return {
        "model": f"examples/fashion_mnist/models/{name}.onnx",
        "artifact": str((args.artifacts / f"{name}.snn").relative_to(ROOT) if (args.artifacts / f"{name}.snn").is_relative_to(ROOT) else args.artifacts / f"{name}.snn"),
        "converted_for_timesteps": sm.timesteps,
        "pipeline": sm.provenance.get("pipeline"),
        "calibration": sm.provenance.get("calibration"),
        "convert_seconds": convert_s,
        "simulate_seconds": round(sim_s, 1),
        "ann_accuracy": float(np.mean(ann_pred == y)),
        "timesteps": per_t,
    }


def fmt_e(nj: float | None) -> str:
    return "-" if nj is None else f"{nj / 1e3:.2f}"


def write_markdown(res: dict, path: Path) -> None:
    lines = [
        f"Fashion-MNIST, first {res['test_samples']} test images; models converted for T=32 (default pipeline); "
        f"rates from one reference-simulator run to T=32 (the first T steps give each T). Machine: {res['machine']}, torch {res['torch']}.",
        "",
        "Energies are estimates per sample, compute only (operations x per-operation energy; see docs/energy.md): "
        "cmos45nm = 45 nm fp32, cmos45nm-int8 = 45 nm int8 with 32-bit accumulators (Horowitz 2014), "
        "loihi = Loihi pre-silicon per-event minima (Davies et al. 2018). SynOps: exact counts from per-neuron spike rates.",
        "",
    ]
    for name, m in res["models"].items():
        lines += [f"## {name} (ANN accuracy {100 * m['ann_accuracy']:.2f} %)", ""]
        lines += [
            "| T | SNN acc. % | ANN MMAC | SNN MSynOp | SynOps/MAC | neuron updates (M) | spikes (M) | "
            "cmos45nm ANN µJ | SNN µJ | SNN/ANN | int8 ANN µJ | SNN µJ | SNN/ANN | Loihi SNN µJ | SynOps from layer-average rates |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for T, r in m["timesteps"].items():
            t, e = r["totals"], r["totals"]["energy"]
            avg = r["totals_layer_average_rates"]["snn_synops"]
            lines.append(
                f"| {T} | {100 * r['accuracy']:.2f} | {t['ann_macs'] / 1e6:.2f} | {t['snn_synops'] / 1e6:.2f} | {t['synops_per_ann_mac']:.2f} | "
                f"{t['neuron_updates'] / 1e6:.2f} | {t['spikes'] / 1e6:.3f} | "
                f"{fmt_e(e['cmos45nm']['ann_nj'])} | {fmt_e(e['cmos45nm']['snn_nj'])} | {e['cmos45nm']['ratio']:.2f} | "
                f"{fmt_e(e['cmos45nm-int8']['ann_nj'])} | {fmt_e(e['cmos45nm-int8']['snn_nj'])} | {e['cmos45nm-int8']['ratio']:.2f} | "
                f"{fmt_e(e['loihi']['snn_nj'])} | {avg / 1e6:.2f} ({100 * (avg / t['snn_synops'] - 1):+.1f} %) |"
            )
        lines += ["", "Per layer (synaptic operations per sample, exact):", ""]
        header = "| layer | op | input | ANN MMAC | connections (M) |" + "".join(f" T={T}: rate in | MSynOp | SynOps/MAC |" for T in m["timesteps"])
        lines += [header, "|" + "---|" * (5 + 3 * len(m["timesteps"]))]
        first = next(iter(m["timesteps"].values()))
        for i, row in enumerate(first["rows"]):
            if row["kind"] not in ("synapse", "elementwise"):
                continue
            cells = [row["layer"], row["op"], row["input"] or "-", f"{row['ann_macs'] / 1e6:.3f}" if row["ann_macs"] else "-", f"{row['connections'] / 1e6:.3f}"]
            for T, r in m["timesteps"].items():
                rr = r["rows"][i]
                if rr["input"] == "analog":
                    cells += ["analog", f"{rr['snn_dense_macs'] / 1e6:.3f} MMAC (once)", "-"]
                else:
                    ratio = f"{rr['snn_synops'] / rr['ann_macs']:.2f}" if rr["ann_macs"] else "-"
                    cells += [f"{rr['input_rate']:.3f}", f"{rr['snn_synops'] / 1e6:.3f}", ratio]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Energy per layer at T=32 (µJ per sample; neuron rows: updates and spikes):", ""]
        lines += ["| layer | kind | cmos45nm ANN | cmos45nm SNN | int8 ANN | int8 SNN | Loihi SNN |", "|---|---|---|---|---|---|---|"]
        for row in m["timesteps"]["32"]["rows"]:
            e = row["energy"]
            lines.append(
                f"| {row['layer']} | {row['kind']} | {fmt_e(e['cmos45nm']['ann_nj'])} | {fmt_e(e['cmos45nm']['snn_nj'])} | "
                f"{fmt_e(e['cmos45nm-int8']['ann_nj'])} | {fmt_e(e['cmos45nm-int8']['snn_nj'])} | {fmt_e(e['loihi']['snn_nj'])} |"
            )
        r32 = m["timesteps"]["32"]
        parts = r32["totals"]["energy"]["cmos45nm"]["snn_parts_nj"]
        ps = r32["totals_analog_input_per_step"]["energy"]["cmos45nm"]
        lines += [
            "",
            f"T=32, cmos45nm SNN energy by part (µJ): synaptic ops {fmt_e(parts['synops'])}, analog-input MACs {fmt_e(parts['dense'])}, "
            f"neuron updates {fmt_e(parts['neurons'])}, spikes {fmt_e(parts['spikes'])}. With the analog input layer recomputed every step: "
            f"SNN {fmt_e(ps['snn_nj'])} µJ (SNN/ANN {ps['ratio']:.2f}).",
            "",
        ]
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="vgg_bn,resnet")
    ap.add_argument("--test", type=int, default=500, help="first N test images")
    ap.add_argument("--artifacts", type=Path, default=ROOT / "out" / "energy", help="reuse / write converted artifacts here")
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="directory for results.json and results.md")
    args = ap.parse_args()
    torch.manual_seed(0)
    calib = np.load(DATA_DIR / "calib.npz")["x"]
    test = np.load(DATA_DIR / "test.npz")
    x, y = test["x"][: args.test].astype(np.float32), test["y"][: args.test]
    res = {
        "machine": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "test_samples": int(len(x)),
        "profiles": {p: PROFILES[p].as_dict() for p in PROFILE_NAMES},
        "models": {},
    }
    for name in args.models.split(","):
        res["models"][name] = run_model(name, args, calib, x, y)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(res, indent=1))
    write_markdown(res, args.out / "results.md")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
