"""ANN -> SNN accuracy vs T on Fashion-MNIST: snnc's pipelines vs SpikingJelly 2.0's ann2snn.

Same trained ANN, same calibration images, same test images, one run. For every model in
``examples/fashion_mnist/models`` (weights as safetensors, ONNX from the legacy and the
dynamo exporter) it measures:

* the ANN's test accuracy;
* snnc from each ONNX export (and the torch module itself), default pipeline and variants
  of threshold balancing, SNN accuracy at every T (reference simulator);
* SpikingJelly 2.0.0's ``ann2snn`` recipes on the torch module: RateCodingRecipe with
  mode "max" and "99.9%" (per layer), "99.9%" channel-wise with half threshold, and
  LocalThresholdBalancingRecipe; each stepped T times (``functional.reset_net`` between
  batches) with the outputs summed, as its own examples do.

Writes ``results/fashion_mnist.json`` and ``results/fashion_mnist.md``; the machine and
versions are recorded. Usage::

    python benchmarks/accuracy/fashion_mnist.py [--models vgg_bn,resnet] [--test 2000]

SpikingJelly is optional (``make bench-deps`` installs it without its torch pins).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import snnc  # noqa: E402
from examples.fashion_mnist.data import load_fashion_mnist  # noqa: E402
from examples.fashion_mnist.models import build_model  # noqa: E402

MODELS_DIR = ROOT / "examples" / "fashion_mnist" / "models"
OUT_DIR = Path(__file__).resolve().parent / "results"


def load_torch(name: str) -> torch.nn.Module:
    from safetensors.torch import load_file

    info = json.loads((MODELS_DIR / f"{name}.json").read_text())
    model = build_model(info["model"], **info.get("config", {}))
    model.load_state_dict(load_file(str(MODELS_DIR / f"{name}.safetensors")))
    return model.eval()


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(logits.argmax(1) == y))


# ----------------------------------------------------------------- snnc
def run_snnc(model, calib, x, y, steps, **options) -> dict:
    t0 = time.perf_counter()
    sm = snnc.convert(model, calib=calib, timesteps=options.pop("convert_T", 32), calib_samples=len(calib), **options)
    t_convert = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = snnc.evaluate(sm, x, y, timesteps=steps)
    t_eval = time.perf_counter() - t0
    return {
        "accuracy": {r["timesteps"]: r["accuracy"] for r in res["results"]},
        "agreement": {r["timesteps"]: r["agreement"] for r in res["results"]},
        "pipeline": sm.provenance["pipeline"],
        "import_max_abs_error": sm.provenance["import_check"]["max_abs_error"],
        "ops": [n.op for n in sm.snn.nodes],
        "convert_seconds": round(t_convert, 2),
        "eval_seconds": round(t_eval, 2),
    }


# ---------------------------------------------------------- SpikingJelly
@torch.no_grad()
def run_spikingjelly(module, recipe_name, calib, x, y, steps, batch=250) -> dict:
    from spikingjelly.activation_based import ann2snn, functional
    from spikingjelly.activation_based.ann2snn.recipes import LocalThresholdBalancingRecipe, RateCodingRecipe

    loader = [(torch.from_numpy(calib[i : i + 128]),) for i in range(0, len(calib), 128)]
    recipes = {
        "RateCoding max (layer)": lambda: RateCodingRecipe(loader, mode="max"),
        "RateCoding 99.9% (layer)": lambda: RateCodingRecipe(loader, mode="99.9%"),
        "RateCoding 99.9% channel-wise, half threshold": lambda: RateCodingRecipe(loader, mode="99.9%", channel_wise=True, half_threshold=True),
        "LocalThresholdBalancing": lambda: LocalThresholdBalancingRecipe(loader),
    }
    t0 = time.perf_counter()
    snn = ann2snn.Converter(recipe=recipes[recipe_name](), device="cpu").convert(copy.deepcopy(module)).eval()
    t_convert = time.perf_counter() - t0
    # Did the converter insert any spiking neuron at all? (functional relu: it may not)
    neurons = sum(1 for m in snn.modules() if "Node" in type(m).__name__)
    T = max(steps)
    correct = {t: 0 for t in steps}
    agree = {t: 0 for t in steps}
    ann_pred = np.concatenate([module(torch.from_numpy(x[i : i + batch])).argmax(1).numpy() for i in range(0, len(x), batch)])
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i : i + batch])
        functional.reset_net(snn)
        acc = None
        for t in range(1, T + 1):
            out = snn(xb)
            acc = out if acc is None else acc + out
            if t in correct:
                pred = acc.argmax(1).numpy()
                correct[t] += int((pred == y[i : i + batch]).sum())
                agree[t] += int((pred == ann_pred[i : i + batch]).sum())
    return {
        "accuracy": {t: correct[t] / len(x) for t in steps},
        "agreement": {t: agree[t] / len(x) for t in steps},
        "spiking_modules": neurons,
        "convert_seconds": round(t_convert, 2),
        "eval_seconds": round(time.perf_counter() - t0, 2),
    }


# ------------------------------------------------------------------ main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vgg_bn,resnet")
    p.add_argument("--timesteps", default="4,8,16,32,64")
    p.add_argument("--test", type=int, default=2000, help="first N test images")
    p.add_argument("--calib", type=int, default=1024, help="seeded random training images for calibration")
    p.add_argument("--no-spikingjelly", action="store_true")
    p.add_argument("--variants", default="mse-channel,per-T,max", help="snnc variants besides the default pipeline per exporter")
    p.add_argument("--sources", default="legacy,dynamo,torch", help="model sources for the default pipeline")
    p.add_argument("--out", default=str(OUT_DIR))
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    steps = [int(t) for t in args.timesteps.split(",")]
    x_train, _ = load_fashion_mnist("train")
    x_test, y_test = load_fashion_mnist("test")
    calib = x_train[np.sort(np.random.default_rng(0).choice(len(x_train), args.calib, replace=False))]
    x, y = x_test[: args.test], y_test[: args.test]
    variants = {
        "max": {"threshold": "max"},
        "percentile:99.9": {"threshold": "percentile:99.9"},
        "percentile:99.99": {"threshold": "percentile:99.99"},
        "mse-layer": {"threshold": "mse"},
        "mse-channel": {"threshold": "mse", "granularity": "channel"},
    }
    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_threads": torch.get_num_threads()},
        "versions": {"snnc": snnc.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "test_images": len(x),
        "calibration_images": len(calib),
        "timesteps": steps,
        "models": {},
    }
    try:
        import spikingjelly

        results["versions"]["spikingjelly"] = getattr(spikingjelly, "__version__", "2.0.0")
    except ImportError:
        args.no_spikingjelly = True
    for name in args.models.split(","):
        module = load_torch(name)
        with torch.no_grad():
            ann_logits = module(torch.from_numpy(x)).numpy()
        entry = {"ann_accuracy": accuracy(ann_logits, y), "snnc": {}, "spikingjelly": {}}
        print(f"[{name}] ANN accuracy {entry['ann_accuracy']:.4f}", flush=True)
        sources = {"onnx (legacy exporter)": str(MODELS_DIR / f"{name}.onnx"), "onnx (dynamo exporter)": str(MODELS_DIR / f"{name}_dynamo.onnx"), "torch module": module}
        wanted = {"legacy": "onnx (legacy exporter)", "dynamo": "onnx (dynamo exporter)", "torch": "torch module"}
        for label, src in sources.items():
            if label not in [wanted[w] for w in args.sources.split(",")] or (isinstance(src, str) and not Path(src).exists()):
                continue
            entry["snnc"][f"default (percentile:98/channel) / {label}"] = r = run_snnc(src, calib, x, y, steps)
            print(f"[{name}] snnc default / {label}: {r['accuracy']}", flush=True)
        for v in args.variants.split(","):
            if v == "per-T":  # MSE thresholds depend on T: convert for each T it is run at
                per = {"accuracy": {}, "agreement": {}}
                for t in steps:
                    r = run_snnc(sources["onnx (legacy exporter)"], calib, x, y, [t], convert_T=t, threshold="mse", granularity="channel")
                    per["accuracy"][t], per["agreement"][t] = r["accuracy"][t], r["agreement"][t]
                entry["snnc"]["mse/channel, converted for each T"] = per
                print(f"[{name}] snnc per-T: {per['accuracy']}", flush=True)
            elif v:
                entry["snnc"][f"{variants[v]['threshold']}/{variants[v].get('granularity', 'layer')}, converted for T=32"] = r = run_snnc(
                    sources["onnx (legacy exporter)"], calib, x, y, steps, **{"granularity": "layer", **variants[v]}
                )
                print(f"[{name}] snnc {v}: {r['accuracy']}", flush=True)
        if not args.no_spikingjelly:
            for recipe in ("RateCoding max (layer)", "RateCoding 99.9% (layer)", "RateCoding 99.9% channel-wise, half threshold", "LocalThresholdBalancing"):
                try:
                    entry["spikingjelly"][recipe] = r = run_spikingjelly(module, recipe, calib, x, y, steps)
                    print(f"[{name}] SpikingJelly {recipe}: {r['accuracy']} ({r['spiking_modules']} spiking modules)", flush=True)
                except Exception as e:  # record the refusal as a result
                    entry["spikingjelly"][recipe] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=3)}
                    print(f"[{name}] SpikingJelly {recipe}: ERROR {e}", flush=True)
        results["models"][name] = entry
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fashion_mnist.json").write_text(json.dumps(results, indent=1))
    (out / "fashion_mnist.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def merge(paths: list[str], out: Path) -> None:
    """Combine per-model result files (runs split to fit a session) into one."""
    docs = [json.loads(Path(p).read_text()) for p in paths]
    merged = dict(docs[0])
    merged["models"] = {k: v for d in docs for k, v in d["models"].items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "fashion_mnist.json").write_text(json.dumps(merged, indent=1))
    (out / "fashion_mnist.md").write_text(markdown(merged))


def _pct(acc: dict, t: int) -> str:
    v = acc.get(t, acc.get(str(t)))  # int keys become strings in JSON
    return "–" if v is None else f"{100 * v:.2f}"


def markdown(results: dict) -> str:
    steps = results["timesteps"]
    lines = [
        f"Fashion-MNIST, first {results['test_images']} test images, {results['calibration_images']} calibration images; "
        f"machine: {results['machine']['platform']}, torch {results['versions']['torch']}"
        + (f", SpikingJelly {results['versions']['spikingjelly']}" if "spikingjelly" in results["versions"] else ""),
        "",
    ]
    for name, e in results["models"].items():
        lines += [f"### {name} (ANN {100 * e['ann_accuracy']:.2f} %)", "", "| converter | " + " | ".join(f"T={t}" for t in steps) + " |", "|---|" + "---|" * len(steps)]
        for group, rows in (("snnc", e["snnc"]), ("SpikingJelly", e["spikingjelly"])):
            for label, r in rows.items():
                if "error" in r:
                    reason = r["error"].split(" at 0x")[0].replace("|", "/").replace("<", "&lt;") + ">"
                    lines.append(f"| {group} {label}: refused ({reason}) | " + " | ".join("–" for _ in steps) + " |")
                    continue
                note = " (no spiking neuron inserted)" if r.get("spiking_modules") == 0 else ""
                lines.append(f"| {group} {label}{note} | " + " | ".join(_pct(r["accuracy"], t) for t in steps) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "merge":  # merge OUT_DIR A.json B.json ...
        merge(sys.argv[3:], Path(sys.argv[2]))
        raise SystemExit(0)
    raise SystemExit(main())
