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

SpikingJelly is optional (``make setup`` installs it without its torch pins).
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


def with_relu_modules(module: torch.nn.Module) -> torch.nn.Module | None:
    """The same trained ResNet with every functional relu replaced by an ``nn.ReLU`` module
    (an identical function), so that SpikingJelly's converter, which refuses functional
    relu, can convert it. None for models that already use modules."""
    import torch.nn as nn

    from examples.fashion_mnist.models import BasicBlock, ResNetFn

    if not isinstance(module, ResNetFn):
        return None

    class Block(nn.Module):
        def __init__(self, b: BasicBlock):
            super().__init__()
            self.b, self.relu1, self.relu2 = b, nn.ReLU(), nn.ReLU()

        def forward(self, x):
            b = self.b
            out = self.relu1(b.bn1(b.conv1(x)))
            return self.relu2(b.bn2(b.conv2(out)) + b.shortcut(x))

    class Net(nn.Module):
        def __init__(self, m: ResNetFn):
            super().__init__()
            self.conv1, self.bn1, self.relu, self.fc = m.conv1, m.bn1, nn.ReLU(), m.fc
            self.layers = nn.Sequential(*[Block(b) for b in m.layers])

        def forward(self, x):
            x = self.layers(self.relu(self.bn1(self.conv1(x))))
            return self.fc(torch.flatten(x.mean((2, 3)), 1))

    net = Net(copy.deepcopy(module)).eval()
    with torch.no_grad():  # the same function, checked
        probe = torch.rand(8, 1, 28, 28)
        assert torch.allclose(net(probe), module(probe), atol=1e-5)
    return net


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
        "calibration_seconds": round(sum(p["seconds"] for p in sm.provenance["passes"] if p["name"].startswith("calibrate-")), 2),
        "eval_seconds": round(t_eval, 2),
    }


# ---------------------------------------------------------- SpikingJelly
def spikingjelly_convert(module, recipe_name, calib):
    """SpikingJelly 2.0's ann2snn conversion of ``module`` with one of its recipes (by name),
    on ``calib``; returns the SNN."""
    from spikingjelly.activation_based import ann2snn
    from spikingjelly.activation_based.ann2snn.recipes import LocalThresholdBalancingRecipe, RateCodingRecipe

    loader = [(torch.from_numpy(calib[i : i + 128]),) for i in range(0, len(calib), 128)]
    recipes = {
        "RateCoding max (layer)": lambda: RateCodingRecipe(loader, mode="max"),
        "RateCoding 99.9% (layer)": lambda: RateCodingRecipe(loader, mode="99.9%"),
        "RateCoding 99.9% channel-wise, half threshold": lambda: RateCodingRecipe(loader, mode="99.9%", channel_wise=True, half_threshold=True),
        "LocalThresholdBalancing": lambda: LocalThresholdBalancingRecipe(loader),
    }
    return ann2snn.Converter(recipe=recipes[recipe_name](), device="cpu").convert(copy.deepcopy(module)).eval()


@torch.no_grad()
def spikingjelly_scores(snn, x, y, ann_pred, steps, batch=250, on_step=None) -> tuple[dict, dict]:
    """Correct predictions and ANN agreements (counts) of a SpikingJelly SNN after each T of
    ``steps``, from one run to max(T) per batch (outputs summed over steps); ``on_step(t)``
    is called before each step."""
    from spikingjelly.activation_based import functional

    correct = {t: 0 for t in steps}
    agree = {t: 0 for t in steps}
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i : i + batch])
        functional.reset_net(snn)
        acc = None
        for t in range(1, max(steps) + 1):
            if on_step is not None:
                on_step(t)
            out = snn(xb)
            acc = out if acc is None else acc + out
            if t in correct:
                pred = acc.argmax(1).numpy()
                correct[t] += int((pred == y[i : i + batch]).sum())
                agree[t] += int((pred == ann_pred[i : i + batch]).sum())
    return correct, agree


@torch.no_grad()
def run_spikingjelly(module, recipe_name, calib, x, y, steps, batch=250) -> dict:
    t0 = time.perf_counter()
    snn = spikingjelly_convert(module, recipe_name, calib)
    t_convert = time.perf_counter() - t0
    # Did the converter insert any spiking neuron at all? (functional relu: it may not)
    neurons = sum(1 for m in snn.modules() if "Node" in type(m).__name__)
    ann_pred = np.concatenate([module(torch.from_numpy(x[i : i + batch])).argmax(1).numpy() for i in range(0, len(x), batch)])
    t0 = time.perf_counter()
    correct, agree = spikingjelly_scores(snn, x, y, ann_pred, steps, batch)
    return {
        "accuracy": {t: correct[t] / len(x) for t in steps},
        "agreement": {t: agree[t] / len(x) for t in steps},
        "spiking_modules": neurons,
        "convert_seconds": round(t_convert, 2),
        "eval_seconds": round(time.perf_counter() - t0, 2),
    }


# ------------------------------------------------------------------ main
LEVELS = ("none", "light", "advanced")
SJ_RECIPES = ("RateCoding max (layer)", "RateCoding 99.9% (layer)", "RateCoding 99.9% channel-wise, half threshold", "LocalThresholdBalancing")


def snnc_per_T(src, calib, x, y, steps, **options) -> dict:
    """Convert for each T and evaluate at that T: what `snnc convert --timesteps T` users get."""
    per: dict = {"accuracy": {}, "agreement": {}, "convert_seconds": {}, "calibration_seconds": {}}
    for t in steps:
        r = run_snnc(src, calib, x, y, [t], convert_T=t, **options)
        per["accuracy"][t], per["agreement"][t] = r["accuracy"][t], r["agreement"][t]
        per["convert_seconds"][t], per["calibration_seconds"][t] = r["convert_seconds"], r["calibration_seconds"]
        per["pipeline"] = r["pipeline"]
    return per


def common_setup(args) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray, dict]:
    """T values, the seeded calibration images, the first ``args.test`` test images and
    labels, and the results header (machine, versions, data sizes)."""
    torch.set_num_threads(2)
    steps = [int(t) for t in args.timesteps.split(",")]
    x_train, _ = load_fashion_mnist("train")
    x_test, y_test = load_fashion_mnist("test")
    calib = x_train[np.sort(np.random.default_rng(0).choice(len(x_train), args.calib, replace=False))]
    x, y = x_test[: args.test], y_test[: args.test]
    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_threads": torch.get_num_threads()},
        "versions": {"snnc": snnc.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "test_images": len(x),
        "calibration_images": len(calib),
        "timesteps": steps,
        "models": {},
    }
    return steps, calib, x, y, results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vgg_bn,resnet")
    p.add_argument("--timesteps", default="4,8,16,32,64")
    p.add_argument("--test", type=int, default=2000, help="first N test images")
    p.add_argument("--calib", type=int, default=1024, help="seeded random training images for calibration")
    p.add_argument("--levels", default=",".join(LEVELS), help="snnc calibration levels, each converted for every T")
    p.add_argument("--no-spikingjelly", action="store_true")
    p.add_argument("--variants", default="", help="extra snnc rows: mse-channel, max, percentile:99.9, ... (converted for T=32)")
    p.add_argument("--sources", default="", help="exporters to compare with the default pipeline: legacy,dynamo,torch")
    p.add_argument("--out", default=str(OUT_DIR))
    args = p.parse_args(argv)
    steps, calib, x, y, results = common_setup(args)
    variants = {
        "max": {"threshold": "max"},
        "percentile:99.9": {"threshold": "percentile:99.9"},
        "percentile:99.99": {"threshold": "percentile:99.99"},
        "mse-layer": {"threshold": "mse"},
        "mse-channel": {"threshold": "mse", "granularity": "channel"},
    }
    try:
        import spikingjelly  # noqa: F401

        results["versions"]["spikingjelly"] = "2.0.0"
    except ImportError:
        args.no_spikingjelly = True
    for name in args.models.split(","):
        module = load_torch(name)
        with torch.no_grad():
            ann_logits = module(torch.from_numpy(x)).numpy()
        entry = {"ann_accuracy": accuracy(ann_logits, y), "snnc": {}, "spikingjelly": {}}
        print(f"[{name}] ANN accuracy {entry['ann_accuracy']:.4f}", flush=True)
        onnx_path = str(MODELS_DIR / f"{name}.onnx")
        for level in [lv for lv in args.levels.split(",") if lv]:
            entry["snnc"][f"{level}, converted for each T"] = r = snnc_per_T(onnx_path, calib, x, y, steps, calibration=level)
            print(f"[{name}] snnc {level}: {r['accuracy']} calibration s {r['calibration_seconds']}", flush=True)
        sources = {"onnx (legacy exporter)": onnx_path, "onnx (dynamo exporter)": str(MODELS_DIR / f"{name}_dynamo.onnx"), "torch module": module}
        wanted = {"legacy": "onnx (legacy exporter)", "dynamo": "onnx (dynamo exporter)", "torch": "torch module"}
        for w in [s for s in args.sources.split(",") if s]:
            label = wanted[w]
            entry["snnc"][f"none, converted for T=32 / {label}"] = r = run_snnc(sources[label], calib, x, y, steps, calibration="none")
            print(f"[{name}] snnc none / {label}: {r['accuracy']}", flush=True)
        for v in [v for v in args.variants.split(",") if v]:
            opts = {"granularity": "layer", **variants[v]}
            entry["snnc"][f"{opts['threshold']}/{opts['granularity']}, none, converted for T=32"] = r = run_snnc(onnx_path, calib, x, y, steps, calibration="none", **opts)
            print(f"[{name}] snnc {v}: {r['accuracy']}", flush=True)
        if not args.no_spikingjelly:
            targets = [("", module)]
            relu_modules = with_relu_modules(module)
            if relu_modules is not None:
                targets.append((" on the same weights with nn.ReLU modules", relu_modules))
            for suffix, net in targets:
                for recipe in SJ_RECIPES:
                    key = recipe + suffix
                    try:
                        entry["spikingjelly"][key] = r = run_spikingjelly(net, recipe, calib, x, y, steps)
                        print(f"[{name}] SpikingJelly {key}: {r['accuracy']} ({r['spiking_modules']} spiking modules)", flush=True)
                    except Exception as e:  # record the refusal as a result
                        entry["spikingjelly"][key] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=3)}
                        print(f"[{name}] SpikingJelly {key}: ERROR {e}", flush=True)
        results["models"][name] = entry
        write_results(results, Path(args.out))  # after every model: nothing lost if a later one fails
    print(markdown(results))
    return 0


def write_results(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "fashion_mnist.json").write_text(json.dumps(results, indent=1))
    (out / "fashion_mnist.md").write_text(markdown(results))
    plot(results, out / "fashion_mnist.png")


def plot(results: dict, path: Path) -> None:
    """Accuracy vs T, one panel per model: snnc levels (solid), SpikingJelly recipes (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(6.4 * len(models), 6.6), squeeze=False)
    for ax, (name, e) in zip(axes[0], models.items()):
        ax.axhline(100 * e["ann_accuracy"], color="black", lw=1, ls=":", label=f"ANN {100 * e['ann_accuracy']:.2f}")
        for group, rows, style in (("snnc", e["snnc"], "-"), ("SpikingJelly", e["spikingjelly"], "--")):
            for label, r in rows.items():
                if "error" in r or not r.get("accuracy"):
                    continue
                ts = sorted(int(t) for t in r["accuracy"])
                ax.plot(ts, [100 * _get(r["accuracy"], t) for t in ts], style, marker="o", ms=3, label=f"{group} {label}")
        refused = [label for label, r in e["spikingjelly"].items() if "error" in r]
        title = f"{name}" + (f"\n(SpikingJelly refused: {len(refused)} of {len(e['spikingjelly'])} recipes)" if refused else "")
        ax.set(xscale="log", xlabel="timesteps T", ylabel="test accuracy (%)", title=title, ylim=(max(0, 100 * e["ann_accuracy"] - 40), 100 * e["ann_accuracy"] + 2))
        ax.set_xticks(results["timesteps"], [str(t) for t in results["timesteps"]])
        ax.set_xticks([], minor=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.14), frameon=False)
    fig.suptitle(f"Fashion-MNIST, {results['test_images']} test images, {results['calibration_images']} calibration images")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def _get(d: dict, t: int):
    return d.get(t, d.get(str(t)))


def merge(paths: list[str], out: Path) -> None:
    """Combine per-model result files (runs split to fit a session) into one."""
    docs = [json.loads(Path(p).read_text()) for p in paths]
    merged = dict(docs[0])
    merged["models"] = {k: v for d in docs for k, v in d["models"].items()}
    write_results(merged, out)


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
        timed = {label: r for label, r in e["snnc"].items() if isinstance(r.get("calibration_seconds"), dict)}
        if timed:
            lines += ["", "Conversion time in seconds, of which calibration passes (2 CPU threads):", "", "| snnc | " + " | ".join(f"T={t}" for t in steps) + " |", "|---|" + "---|" * len(steps)]
            for label, r in timed.items():
                cells = [f"{_get(r['convert_seconds'], t):.1f} ({_get(r['calibration_seconds'], t):.1f})" if _get(r["convert_seconds"], t) is not None else "–" for t in steps]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "merge":  # merge OUT_DIR A.json B.json ...
        merge(sys.argv[3:], Path(sys.argv[2]))
        raise SystemExit(0)
    raise SystemExit(main())
