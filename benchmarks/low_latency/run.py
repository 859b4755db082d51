"""Low latency: accuracy and cost of each neuron variant at T = 1, 2, 4, 8 on the Fashion-MNIST models.

For each model (VGG-BN, ResNet) and each T, every row converts the same trained ANN for that
T (1024 seeded calibration images, the shipped calibration set of ``benchmarks/accuracy``)
and evaluates it on the first ``--test`` test images with the reference simulator, counting
every neuron's spikes in the same run:

* ``snnc if`` rows: today's default (plain IF neuron, ``--calibration advanced``) and light;
* ``snnc signed``, ``burst:K``, ``signed-burst:K``: the low-latency neurons (``--neuron``),
  light calibration (``--neurons`` adds advanced rows for them; the default run keeps to
  what 2 CPU cores do in half an hour);
* ``+ finetune`` rows (``--finetune-data train.npz``): the advanced artifact of a neuron,
  fine-tuned by ``snnc.finetune`` at that T (surrogate gradients, TET loss);
* SpikingJelly 2.0's best recipe on the same ANN (RateCoding 99.9 % channel-wise, half
  threshold; the ResNet with ``nn.ReLU`` modules, as in ``benchmarks/accuracy``), run with
  spike counting hooks on its IF nodes.

Cost per row: synaptic operations per sample (a burst of k spikes counts k synaptic events per
fan-out, a negative spike counts 1: binary-equivalent spikes) and estimated energy per sample
(``snnc.analysis.energy``: cmos45nm and loihi profiles), from per-neuron spike rates for snnc
rows and from per-layer rates for SpikingJelly's. Writes ``results/low_latency.{json,md,png}``
(the plot: accuracy against energy, one panel per model, one marker per T).

Usage::

    python benchmarks/low_latency/run.py [--models vgg_bn,resnet] [--timesteps 1,2,4,8] [--test 2000]
        [--neurons if] [--light if,signed,burst:2,burst:4,signed-burst:4] [--finetune-data .data/fashion_mnist/train.npz]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import snnc  # noqa: E402
from benchmarks.accuracy.fashion_mnist import common_setup, load_torch, spikingjelly_convert, spikingjelly_scores, with_relu_modules  # noqa: E402
from snnc.analysis.energy import count_spikes, estimate_energy  # noqa: E402

MODELS_DIR = ROOT / "examples" / "fashion_mnist" / "models"
OUT_DIR = Path(__file__).resolve().parent / "results"
PROFILES = ("cmos45nm", "loihi")
SJ_RECIPE = "RateCoding 99.9% channel-wise, half threshold"


def cost(sm, maps: dict, T: int, samples: int) -> dict:
    est = estimate_energy(sm, maps, T, PROFILES, samples=samples)
    t = est["totals"]
    return {
        "synops": t["snn_synops"],
        "dense_macs": t["snn_dense_macs"],
        "spikes": t["spikes"],
        "ann_macs": t["ann_macs"],
        "energy_nj": {p: t["energy"][p]["snn_nj"] for p in PROFILES},
        "ann_energy_nj": t["energy"]["cmos45nm"]["ann_nj"],
    }


def evaluate(sm, x: np.ndarray, y: np.ndarray, T: int, ann_pred: np.ndarray) -> dict:
    t0 = time.perf_counter()
    maps, outs = count_spikes(sm, x, [T])
    pred = outs[T][0].argmax(1)
    return {
        "accuracy": float(np.mean(pred == y)),
        "agreement": float(np.mean(pred == ann_pred)),
        "eval_seconds": round(time.perf_counter() - t0, 2),
        **cost(sm, maps[T], T, len(x)),
    }


def snnc_row(src: str, calib, x, y, T: int, ann_pred, *, neuron: str, calibration: str, finetune=None) -> dict:
    t0 = time.perf_counter()
    sm = snnc.convert(src, calib=calib, timesteps=T, calib_samples=len(calib), calibration=calibration, neuron=neuron)
    row = {"neuron": neuron, "calibration": calibration, "convert_seconds": round(time.perf_counter() - t0, 2)}
    if finetune is not None:
        xt, yt, epochs = finetune
        t0 = time.perf_counter()
        sm = snnc.finetune(sm, xt, yt, epochs=epochs, loss="tet")
        row["finetune_seconds"] = round(time.perf_counter() - t0, 2)
        row["finetune"] = {k: v for k, v in sm.provenance["finetuned"][-1].items() if k != "history"}
    return row | evaluate(sm, x, y, T, ann_pred)


@torch.no_grad()
def spikingjelly_rows(module, calib, x, y, steps, ann_pred, sm_ref, batch: int = 250) -> dict:
    """SpikingJelly's best recipe at every T of ``steps`` from one run to max(T); spikes
    counted per IF node, mapped onto snnc's neuron layers in graph order (same ANN, same
    ReLUs) for the cost estimate."""
    snn = spikingjelly_convert(module, SJ_RECIPE, calib)
    nodes = [m for m in snn.modules() if "IFNode" in type(m).__name__]
    counts = {t: [0.0] * len(nodes) for t in steps}
    sizes = [0] * len(nodes)
    step = {"t": 0}

    def hook(i):
        def fn(_m, _inp, out):
            sizes[i] = int(out[0].numel())
            for t in steps:
                if step["t"] <= t:
                    counts[t][i] += float((out != 0).sum())

        return fn

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(nodes)]
    correct, agree = spikingjelly_scores(snn, x, y, ann_pred, steps, batch, on_step=lambda t: step.update(t=t))
    for h in handles:
        h.remove()
    ours = sm_ref.snn.having("neuron")
    same = len(ours) == len(nodes) and all(int(np.prod(n.output.shape)) == s for n, s in zip(ours, sizes))
    rows = {}
    for t in steps:
        row = {"accuracy": correct[t] / len(x), "agreement": agree[t] / len(x)}
        if same:
            rates = {n.name: counts[t][i] / (sizes[i] * len(x) * t) for i, n in enumerate(ours)}
            row |= cost(sm_ref, rates, t, len(x)) | {"rates": "per-layer average (SpikingJelly IF nodes mapped onto snnc's layers)"}
        rows[t] = row
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vgg_bn,resnet")
    p.add_argument("--timesteps", default="1,2,4,8")
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--calib", type=int, default=1024)
    p.add_argument("--neurons", default="if", help="neurons run with advanced calibration (today's default pipeline: if)")
    p.add_argument("--light", default="if,signed,burst:2,burst:4,signed-burst:4", help="neurons run with light calibration")
    p.add_argument("--finetune-data", default=None, help="train.npz (x, y): add fine-tuned rows")
    p.add_argument("--finetune-neurons", default="if")
    p.add_argument("--finetune-timesteps", default="2,4")
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--finetune-samples", type=int, default=6000)
    p.add_argument("--no-spikingjelly", action="store_true")
    p.add_argument("--out", default=str(OUT_DIR))
    args = p.parse_args(argv)
    steps, calib, x, y, results = common_setup(args)
    results["neurons"] = args.neurons.split(",")
    ft = None
    if args.finetune_data:
        d = np.load(args.finetune_data)
        n = min(args.finetune_samples, len(d["y"]))
        ft = (d["x"][:n].astype(np.float32), d["y"][:n].astype(np.int64), args.finetune_epochs)
        results["finetune"] = {"samples": n, "epochs": args.finetune_epochs, "loss": "tet", "data": args.finetune_data}
    out = Path(args.out)
    for name in args.models.split(","):
        src = str(MODELS_DIR / f"{name}.onnx")
        module = load_torch(name)
        with torch.no_grad():
            ann_pred = module(torch.from_numpy(x)).argmax(1).numpy()
        entry = results["models"][name] = {"ann_accuracy": float(np.mean(ann_pred == y)), "rows": []}
        for T in steps:
            for calibration, neurons in (("advanced", names(args.neurons)), ("light", names(args.light))):
                for neuron in neurons:
                    r = snnc_row(src, calib, x, y, T, ann_pred, neuron=neuron, calibration=calibration)
                    entry["rows"].append({"converter": "snnc", "T": T, **r})
                    print(f"{name} T={T} {neuron} {calibration}: {100 * r['accuracy']:.2f} %, {r['synops'] / 1e6:.2f} MSynOps", flush=True)
            if ft is not None and str(T) in args.finetune_timesteps.split(","):
                for neuron in names(args.finetune_neurons):
                    r = snnc_row(src, calib, x, y, T, ann_pred, neuron=neuron, calibration="advanced", finetune=ft)
                    entry["rows"].append({"converter": "snnc", "T": T, **r, "calibration": "advanced + finetune"})
                    print(f"{name} T={T} {neuron} advanced+finetune: {100 * r['accuracy']:.2f} %, {r['finetune_seconds']} s", flush=True)
            write_results(results, out)
        if not args.no_spikingjelly:
            net = with_relu_modules(module) or module
            ref = snnc.convert(src, calib=calib, timesteps=max(steps), calib_samples=len(calib), calibration="none")
            for T, r in spikingjelly_rows(net, calib, x, y, steps, ann_pred, ref).items():
                entry["rows"].append({"converter": "spikingjelly", "T": T, "neuron": "if", "calibration": SJ_RECIPE, **r})
        write_results(results, out)
    return 0


def names(text: str) -> list[str]:
    return [n for n in text.split(",") if n]


def label(r: dict) -> str:
    return f"{r['converter']} {r['neuron']} ({r['calibration']})"


def write_results(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "low_latency.json").write_text(json.dumps(results, indent=1))
    (out / "low_latency.md").write_text(markdown(results))
    plot(results, out / "low_latency.png")


def markdown(results: dict) -> str:
    lines = [
        f"Fashion-MNIST, first {results['test_images']} test images, {results['calibration_images']} calibration images, reference simulator; "
        f"machine: {results['machine']['platform']}, {results['machine']['cpu_threads']} threads, torch {results['versions']['torch']}. "
        "Every snnc row is converted for the T it runs at. SynOps: synaptic operations per sample (binary-equivalent spikes x fan-out); "
        "energy: estimated per sample (snnc.analysis.energy, compute only).",
        "",
    ]
    for name, e in results["models"].items():
        lines += [f"### {name} (ANN {100 * e['ann_accuracy']:.2f} %)", ""]
        lines += ["| T | converter | neuron | calibration | accuracy % | Δ vs ANN | SynOps (M) | spikes (k) | cmos45nm µJ | loihi µJ | seconds |", "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in sorted(e["rows"], key=lambda r: (r["T"], r["converter"] != "snnc", -r["accuracy"])):
            syn = f"{r['synops'] / 1e6:.2f}" if "synops" in r else "–"
            spikes = f"{r['spikes'] / 1e3:.1f}" if "spikes" in r else "–"
            en = [f"{r['energy_nj'][p] / 1e3:.3f}" if "energy_nj" in r else "–" for p in PROFILES]
            secs = r.get("convert_seconds", "–")
            if "finetune_seconds" in r:
                secs = f"{secs} + {r['finetune_seconds']} finetune"
            lines.append(
                f"| {r['T']} | {r['converter']} | {r['neuron']} | {r['calibration']} | {100 * r['accuracy']:.2f} | {100 * (r['accuracy'] - e['ann_accuracy']):+.2f} | {syn} | {spikes} | {en[0]} | {en[1]} | {secs} |"
            )
        ann_mac = next((r["ann_macs"] for r in e["rows"] if "ann_macs" in r), None)
        ann_e = next((r["ann_energy_nj"] for r in e["rows"] if r.get("ann_energy_nj")), None)
        if ann_mac:
            lines += ["", f"ANN: {ann_mac / 1e6:.2f} M MACs per sample, {ann_e / 1e3:.3f} µJ on cmos45nm." if ann_e else f"ANN: {ann_mac / 1e6:.2f} M MACs per sample."]
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Accuracy against estimated energy (cmos45nm), one panel per model; colour = row kind, marker = T."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    if not models:
        return
    fig, axes = plt.subplots(1, len(models), figsize=(7.2 * len(models), 6.2), squeeze=False)
    markers = {1: "v", 2: "s", 4: "o", 8: "D", 16: "^", 32: "P"}
    for ax, (name, e) in zip(axes[0], models.items()):
        ax.axhline(100 * e["ann_accuracy"], color="black", lw=1, ls=":", label=f"ANN {100 * e['ann_accuracy']:.2f} %")
        kinds = sorted({label(r) for r in e["rows"] if "energy_nj" in r})
        colours = {k: plt.cm.tab10(i % 10) for i, k in enumerate(kinds)}
        for k in kinds:
            rows = sorted((r for r in e["rows"] if label(r) == k and "energy_nj" in r), key=lambda r: r["T"])
            ax.plot([r["energy_nj"]["cmos45nm"] / 1e3 for r in rows], [100 * r["accuracy"] for r in rows], "-", color=colours[k], lw=0.8, alpha=0.6)
            for r in rows:
                ax.plot(r["energy_nj"]["cmos45nm"] / 1e3, 100 * r["accuracy"], markers.get(r["T"], "o"), color=colours[k], ms=5)
            ax.plot([], [], "-", color=colours[k], label=k)
        for t, m in markers.items():
            if any(r["T"] == t for r in e["rows"]):
                ax.plot([], [], m, color="grey", ls="", label=f"T={t}")
        ax.set(xscale="log", xlabel="estimated energy per sample, cmos45nm (µJ)", ylabel="test accuracy (%)", title=name, ylim=(max(0, 100 * e["ann_accuracy"] - 40), 100 * e["ann_accuracy"] + 2))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.12), frameon=False, ncol=2)
    fig.suptitle(f"Fashion-MNIST: accuracy against energy per T ({results['test_images']} test images)")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())
