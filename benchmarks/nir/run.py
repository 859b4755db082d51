"""NIR export, proved by re-import: the Fashion-MNIST VGG-BN and ResNet written as NIR,
read back and run by other code, compared with snnc's reference simulator.

For each model (a ``.snn`` artifact, converted for T = 32 with the default pipeline when
missing)::

    soft  export -> nir.read -> nirtorch.nir_to_torch (snnc.export.nir's modules for I,
          Threshold, Scale, Affine, Flatten; nirtorch's own for Conv2d and AvgPool2d)
          -> T steps of direct input -> integrator readout / t
          vs the reference simulator on the converted network:
          argmax agreement and max |output difference| at every T, spike rate of every
          layer, and the spike trains of every layer on the first --spike-samples samples
    hard  export -> SpikingJelly 2.0 import_from_nir -> T steps -> mean output
          vs the reference simulator on the same network with reset-to-zero neurons
          starting at 0 (snnc.export.hard_reset_reference)
    accuracy on the test set at every T: ANN, soft (reference and NIR), hard (reference and
          SpikingJelly), plus two reference-only decompositions of the hard variant's cost:
          subtract reset with v_init = 0, and reset to zero keeping v_init
    ``<model>_zero`` the same ANN converted for reset-to-zero neurons starting at 0
          (``insert-if{reset=zero v_init=zero}``, then calibrate-bias): NIR's own IF neuron,
          so both variants are exact; it shows what a network meant for NIR IF reaches

Writes ``results.json`` and ``results.md`` beside this file (``--name``, ``--out``); machine, device and versions
are recorded. Usage::

    python benchmarks/nir/run.py [--models vgg_bn,resnet,vgg_bn_zero,resnet_zero] [--test 2000] [--timesteps 8,16,32,64]
        [--artifacts out/nir] [--device cpu|cuda]
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
from snnc.export import export_nir, hard_reset_reference, reference_spike_trains, run_nir  # noqa: E402
from snnc.simulator.reference import simulate  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS_DIR = ROOT / "examples" / "fashion_mnist" / "models"
CONVERT_T = 32


# "<model>_zero": the same ANN converted for neurons that reset to zero and start at 0 (what NIR's
# IF is), calibrated for them: its NIR file is exact in both variants.
ZERO_PIPELINE = "canonicalize,fold-bn,balance-thresholds{method=percentile granularity=channel percentile=98},insert-if{reset=zero v_init=zero},calibrate-bias"


def artifact(name: str, art_dir: Path, calib: Path) -> snnc.SpikingModel:
    path = art_dir / f"{name}.snn"
    if path.exists():
        return snnc.load(path)
    from snnc.utils.io import load_npz

    base, zero = name.removesuffix("_zero"), name.endswith("_zero")
    print(f"converting {base} (T={CONVERT_T}, {'reset-to-zero pipeline' if zero else 'default pipeline'}) ...", flush=True)
    sm = snnc.convert(str(MODELS_DIR / f"{base}.onnx"), load_npz(calib)["x"], timesteps=CONVERT_T, passes=ZERO_PIPELINE if zero else None)
    sm.save(path)
    return sm


def acc(out: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(out.argmax(1) == y))


def timed(fn):
    t0 = time.perf_counter()
    res = fn()
    return res, round(time.perf_counter() - t0, 2)


def spike_train_match(sm, soft_path: Path, x: np.ndarray, T: int, device: str) -> dict:
    """Per layer: the fraction of (step, sample, neuron) spike values that are identical."""
    ref = reference_spike_trains(sm.snn, x, T, device=device)
    got = run_nir(soft_path, x, [T], record_spikes=True, device=device).spike_trains
    rows = {}
    for name, r in ref.items():
        g = got[name].astype(bool)
        diff = int((g != r).sum())
        rows[name] = {"values": int(r.size), "differ": diff, "identical": 1.0 - diff / r.size, "spikes_reference": int(r.sum()), "spikes_nir": int(g.sum())}
    return rows


def bench_model(name: str, args, x: np.ndarray, y: np.ndarray) -> dict:
    dev = args.device
    steps = args.timesteps
    sm = artifact(name, args.artifacts, args.calib)
    out_dir = args.artifacts
    res: dict = {"model": name, "converted_for_T": sm.timesteps, "pipeline": sm.provenance.get("pipeline"), "samples": int(len(x))}
    soft_path, hard_path = out_dir / f"{name}_soft.nir", out_dir / f"{name}_hard.nir"
    res["export"] = {"soft": export_nir(sm, soft_path, reset="soft").to_dict(), "hard": export_nir(sm, hard_path, reset="hard").to_dict()}
    print(f"{name}: exported soft ({res['export']['soft']['nodes']} nodes) and hard ({res['export']['hard']['nodes']} nodes)", flush=True)

    ann = sm.ann_outputs(x)
    ref, t_ref = timed(lambda: simulate(sm.snn, x, steps, device=dev))
    nir_soft, t_soft = timed(lambda: run_nir(soft_path, x, steps, device=dev))
    print(f"{name}: reference {t_ref} s, NIR soft (nirtorch) {t_soft} s", flush=True)
    res["seconds"] = {"reference_soft": t_ref, "nirtorch_soft": t_soft}
    res["soft_vs_reference"] = [
        {
            "T": t,
            "argmax_agreement": float(np.mean(nir_soft.output(t).argmax(1) == ref.output(t).argmax(1))),
            "max_abs_output_difference": float(np.abs(nir_soft.output(t) - ref.output(t)).max()),
        }
        for t in steps
    ]
    res["spike_rates_at_T"] = steps[-1]
    res["spike_rates"] = {k: {"reference": v, "nir_soft": nir_soft.spike_rates.get(k)} for k, v in ref.spike_rates.items()}
    if args.spike_samples:
        res["spike_trains"] = {"samples": args.spike_samples, "T": args.agreement_T, "layers": spike_train_match(sm, soft_path, x[: args.spike_samples], args.agreement_T, dev)}
    res["ann_accuracy"] = acc(ann, y)
    if args.soft_only:
        res["accuracy"] = {key: {str(t): acc(r.output(t), y) for t in steps} for key, r in (("soft_reference", ref), ("soft_nir_nirtorch", nir_soft))}
        return res
    ref_hard, t_refh = timed(lambda: simulate(hard_reset_reference(sm.snn), x, steps, device=dev))
    sj_hard, t_sj = timed(lambda: run_nir(hard_path, x, steps, executor="spikingjelly", device=dev))
    print(f"{name}: reference hard {t_refh} s, NIR hard (SpikingJelly) {t_sj} s", flush=True)
    res["seconds"].update(reference_hard=t_refh, spikingjelly_hard=t_sj)

    res["hard_vs_reference_zero_reset"] = [
        {
            "T": t,
            "argmax_agreement": float(np.mean(sj_hard.output(t).argmax(1) == ref_hard.output(t).argmax(1))),
            "max_abs_output_difference": float(np.abs(sj_hard.output(t) - ref_hard.output(t)).max()),
        }
        for t in steps
    ]
    rows = {
        "soft_reference": ref,
        "soft_nir_nirtorch": nir_soft,
        "hard_reference": ref_hard,
        "hard_nir_spikingjelly": sj_hard,
    }
    if args.decompose and not name.endswith("_zero"):
        g_soft0 = sm.snn.clone()
        for n in g_soft0.find("if_neuron"):
            n.set_param("v_init", np.zeros_like(n.params["v_init"]))
        g_hardv = sm.snn.clone()
        for n in g_hardv.find("if_neuron"):
            n.attrs["reset"] = "zero"
        rows["soft_reset_v_init_0_reference"] = simulate(g_soft0, x, steps, device=dev)
        rows["zero_reset_keeping_v_init_reference"] = simulate(g_hardv, x, steps, device=dev)
    res["accuracy"] = {key: {str(t): acc(r.output(t), y) for t in steps} for key, r in rows.items()}
    return res


def machine(device: str) -> dict:
    import h5py
    import nir
    import nirtorch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "nir": nir.version,
        "nirtorch": nirtorch.__version__,
        "h5py": h5py.__version__,
        "device": device,
    }
    try:
        from importlib.metadata import version

        info["spikingjelly"] = version("spikingjelly")
    except Exception:  # not installed: the hard variant's SpikingJelly run fails later with a clear error
        pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["tf32"] = "off (cudnn.allow_tf32 = matmul.allow_tf32 = False)"
    return info


def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        "# NIR export: re-import checks (Fashion-MNIST)",
        "",
        f"Generated by `benchmarks/nir/run.py` on {m['platform']} ({m['cpus']} CPUs; device {m['device']}"
        + (f", {m['gpu']}, TF32 off" if "gpu" in m else "")
        + f"), torch {m['torch']}, nir {m['nir']}, nirtorch {m['nirtorch']}, SpikingJelly {m.get('spikingjelly', '-')}; "
        f"{doc['samples']} test samples, direct input. Models converted for T = {CONVERT_T}: `vgg_bn`, `resnet` with the "
        "default pipeline (subtract reset, v(0) ≈ θ/2 per channel, advanced calibration); `*_zero` with neurons that reset to zero and "
        f"start at 0 (`{ZERO_PIPELINE}`).",
        "",
        "The soft variant is exact up to float32 rounding (the NIR graph sums in another order); the hard variant's "
        "thresholds are normalised to 1 (weights divided by θ), so its spikes match the reset-to-zero reference up to "
        "rounding too.",
        "",
        "## Soft variant (exact): nirtorch re-import vs the reference simulator",
        "",
        "| model | T | argmax agreement | max abs output difference |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in doc["models"]:
        for row in r["soft_vs_reference"]:
            lines.append(f"| {r['model']} | {row['T']} | {100 * row['argmax_agreement']:.2f}% | {row['max_abs_output_difference']:.2e} |")
    lines += ["", f"Spike rates (spikes per neuron per step, T = {doc['models'][0]['spike_rates_at_T']}), reference vs NIR soft:", ""]
    lines += ["| model | layer | reference | NIR (nirtorch) | relative difference |", "| --- | --- | ---: | ---: | ---: |"]
    for r in doc["models"]:
        for k, v in r["spike_rates"].items():
            rel = abs(v["nir_soft"] - v["reference"]) / max(v["reference"], 1e-12)
            lines.append(f"| {r['model']} | {k} | {v['reference']:.6f} | {v['nir_soft']:.6f} | {rel:.1e} |")
    if "spike_trains" in doc["models"][0]:
        st = doc["models"][0]["spike_trains"]
        lines += ["", f"Spike trains, every layer, first {st['samples']} samples, T = {st['T']}: identical (step, sample, neuron) values:", ""]
        lines += ["| model | layer | values | differing | identical |", "| --- | --- | ---: | ---: | ---: |"]
        for r in doc["models"]:
            for k, v in r["spike_trains"]["layers"].items():
                lines.append(f"| {r['model']} | {k} | {v['values']:,} | {v['differ']:,} | {100 * v['identical']:.5f}% |")
    hard = [r for r in doc["models"] if "hard_vs_reference_zero_reset" in r]
    if hard:
        lines += ["", "## Hard variant: SpikingJelly import_from_nir vs the reference with reset-to-zero neurons", ""]
        lines += ["| model | T | argmax agreement | max abs output difference |", "| --- | ---: | ---: | ---: |"]
    for r in hard:
        for row in r["hard_vs_reference_zero_reset"]:
            lines.append(f"| {r['model']} | {row['T']} | {100 * row['argmax_agreement']:.2f}% | {row['max_abs_output_difference']:.2e} |")
    steps = [str(t) for t in doc["timesteps"]]
    lines += ["", "## Test accuracy: what the hard variant costs" if hard else "## Test accuracy", ""]
    lines += ["| model | network | " + " | ".join(f"T={t}" for t in steps) + " |", "| --- | --- | " + " | ".join("---:" for _ in steps) + " |"]
    labels = {
        "soft_reference": "soft (converted SNN), reference",
        "soft_nir_nirtorch": "soft NIR, nirtorch",
        "hard_reference": "hard (reset 0, v(0)=0), reference",
        "hard_nir_spikingjelly": "hard NIR, SpikingJelly",
        "soft_reset_v_init_0_reference": "subtract reset, v(0)=0 (reference only)",
        "zero_reset_keeping_v_init_reference": "reset 0, v(0) kept (reference only)",
    }
    zero_labels = {
        "soft_reference": "converted for reset to 0, reference",
        "soft_nir_nirtorch": "soft NIR (IF, per-channel θ), nirtorch",
        "hard_reference": "hard (same network), reference",
        "hard_nir_spikingjelly": "hard NIR (IF, θ = 1), SpikingJelly",
    }
    for r in doc["models"]:
        names = zero_labels if r["model"].endswith("_zero") else labels
        lines.append(f"| {r['model']} | ANN | " + " | ".join(f"{100 * r['ann_accuracy']:.2f}%" for _ in steps) + " |")
        for key, accs in r["accuracy"].items():
            lines.append(f"| {r['model']} | {names.get(key, key)} | " + " | ".join(f"{100 * accs[t]:.2f}%" for t in steps) + " |")
    lines += ["", "Run times (seconds, all samples, up to the largest T; per-step Python loops, not a speed benchmark):", ""]
    lines += ["| model | reference soft | nirtorch soft | reference hard | SpikingJelly hard |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in doc["models"]:
        s = r["seconds"]
        lines.append(f"| {r['model']} | {s['reference_soft']} | {s['nirtorch_soft']} | {s.get('reference_hard', '-')} | {s.get('spikingjelly_hard', '-')} |")
    lines += ["", "Exported files:", "", "| model | variant | nodes | edges | KiB | SpikingJelly import |", "| --- | --- | ---: | ---: | ---: | --- |"]
    for r in doc["models"]:
        for v, e in r["export"].items():
            lines.append(f"| {r['model']} | {v} | {e['nodes']} | {e['edges']} | {e['bytes'] / 1024:.0f} | {'yes' if e['spikingjelly'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vgg_bn,resnet,vgg_bn_zero,resnet_zero")
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--timesteps", default="8,16,32,64")
    ap.add_argument("--agreement-T", type=int, default=32)
    ap.add_argument("--spike-samples", type=int, default=64, help="samples whose spike trains are compared value by value (0: skip)")
    ap.add_argument("--artifacts", type=Path, default=ROOT / "out" / "nir")
    ap.add_argument("--data", type=Path, default=ROOT / ".data" / "fashion_mnist" / "test.npz")
    ap.add_argument("--calib", type=Path, default=ROOT / ".data" / "fashion_mnist" / "calib.npz")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-decompose", dest="decompose", action="store_false", help="skip the two reference-only decompositions of the hard variant's cost")
    ap.add_argument("--soft-only", action="store_true", help="only the soft variant against the reference (no hard variant, no SpikingJelly)")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--name", default="results", help="write OUT/NAME.json and OUT/NAME.md")
    args = ap.parse_args()
    args.timesteps = sorted(set(int(t) for t in args.timesteps.split(",")) | {args.agreement_T})
    args.artifacts.mkdir(parents=True, exist_ok=True)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    from snnc.utils.io import load_npz, write_json, write_text

    data = load_npz(args.data, required=("x", "y"))
    x, y = data["x"][: args.test], data["y"][: args.test]
    doc = {"machine": machine(args.device), "samples": int(len(x)), "timesteps": args.timesteps, "agreement_T": args.agreement_T, "models": []}
    for name in args.models.split(","):
        doc["models"].append(bench_model(name, args, x, y))
        write_json(args.out / f"{args.name}.json", doc)
    write_text(args.out / f"{args.name}.md", markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
