"""Do the report's findings name the layers that actually lose accuracy?

For two conversions of the Fashion-MNIST VGG-BN that lose accuracy for different reasons,
``snnc report``'s analysis runs on the first half of the test images; then the fix each
finding suggests is applied to **one layer at a time** and the SNN is evaluated on the
**other half** (images the report never saw):

* ``clipping``: thresholds at the 90th percentile, no calibration, T = 32. Fix for a
  layer: raise its thresholds to the 99.9th percentile (per channel) of its ANN activations
  on the calibration images (v(0) = θ/2 as before).
* ``quantisation``: the default thresholds, no calibration, converted for and run at T = 8.
  Fix for a layer: calibrate that layer only (``calibrate-bias{layers=...}``).

The same per-layer ablation the report runs (each layer made exact, or quantisation-free at
its θ, with its inputs exact) is also re-measured on the held-out half: the report's numbers
should not be noise of its subset. The report is right when the layers it names gain the most
from their fix and the others gain little. Usage: ``python benchmarks/report/ablation_check.py [--report-samples 1000]``.
Writes ``results/ablation_check.{json,md}``.
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
from snnc.analysis.diagnose import Probe, diagnose  # noqa: E402
from snnc.analysis.report import build_report, write_report  # noqa: E402
from snnc.ir.executor import iter_batches  # noqa: E402

MODEL = ROOT / "examples" / "fashion_mnist" / "models" / "vgg_bn.onnx"
DATA = ROOT / ".data" / "fashion_mnist"
OUT = Path(__file__).resolve().parent / "results"
BASE = "canonicalize,fold-bn,balance-thresholds{{method=percentile percentile={p} granularity=channel}},insert-if"


def accuracy(model, x, y, T) -> float:
    return snnc.evaluate(model, x, y, timesteps=[T])["results"][0]["accuracy"]


def raise_threshold(model, layer: str, calib: np.ndarray, percentile: float = 99.9):
    """A copy of ``model`` with ``layer``'s thresholds at the given per-channel percentile of
    its ANN activations on ``calib`` (and v(0) = θ/2)."""
    probe = Probe(model)
    acts = []
    for xb in iter_batches(calib, 256):
        got, _ = probe.ann_batch(xb)
        a = got[probe.ann_of[layer]]
        acts.append(a.transpose(0, 1).reshape(a.shape[1], -1))
    a = torch.cat(acts, 1).numpy()
    snn = model.snn.clone()
    node = snn.node(layer)
    old = node.params["threshold"]
    theta = np.array([np.percentile(c[c > 0], percentile) if (c > 0).any() else old.reshape(-1)[i % old.size] for i, c in enumerate(a)], dtype=np.float32)
    theta = np.maximum(theta, old.reshape(-1)).reshape(old.shape) if old.size == theta.size else theta.reshape((-1,) + (1,) * (len(node.output.shape) - 1))
    node.set_param("threshold", theta.astype(np.float32))
    node.set_param("v_init", (theta / 2).astype(np.float32))
    return snnc.SpikingModel(snn, model.ann, dict(model.provenance))


def scenario(name, convert_kwargs, T, fix, xr, yr, xe, ye, calib, n_abl, outdir):
    t0 = time.time()
    model = snnc.convert(str(MODEL), calib, timesteps=T, **convert_kwargs)
    rep = build_report(model, xr, yr, timesteps=[T], at=T, ablation_samples=n_abl, artifact=f"{name} (in memory)", data="first half of the test images")
    write_report(rep, outdir / name)
    base = accuracy(model, xe, ye, T)
    held = {r["layer"]: r for r in diagnose(model, xe, ye, timesteps=[T], at=T, ablation_samples=len(xe))["layers"]}
    named = {f["layer"]: f for f in rep["findings"] if f["kind"] in ("clipping", "quantisation")}
    rows = []
    for r in rep["diagnostics"]["layers"]:
        fixed = fix(model, r["layer"])
        acc = accuracy(fixed, xe, ye, T)
        f = named.get(r["layer"])
        rows.append(
            {
                "layer": r["layer"],
                "named": f is not None,
                "rank": f["rank"] if f else None,
                "kind": f["kind"] if f else None,
                "report_own_loss": r.get("gain_exact"),
                "report_clipping": r.get("gain_clipping"),
                "report_quantisation": r.get("gain_quantisation"),
                "heldout_own_loss": held[r["layer"]].get("gain_exact"),
                "heldout_clipping": held[r["layer"]].get("gain_clipping"),
                "heldout_quantisation": held[r["layer"]].get("gain_quantisation"),
                "clipped": r.get("clipped"),
                "saturated": r.get("saturated"),
                "silent": r.get("silent"),
                "heldout_accuracy_after_fix": acc,
                "heldout_gain": acc - base,
            }
        )
        print(f"  {name}: fix {r['layer']}: {100 * base:.2f} -> {100 * acc:.2f}", flush=True)
    own = np.array([r["report_own_loss"] or 0 for r in rows])
    gain = np.array([r["heldout_gain"] for r in rows])
    held_own = np.array([r["heldout_own_loss"] or 0 for r in rows])

    def spearman(a, b):
        return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1]) if len(rows) > 2 else None

    rank_corr = spearman(own, gain)
    return {
        "T": T,
        "convert": {k: str(v) for k, v in convert_kwargs.items()},
        "report_samples": int(len(xr)),
        "heldout_samples": int(len(xe)),
        "ann_heldout_accuracy": float(np.mean(model.ann_outputs(xe).argmax(1) == ye)),
        "snn_heldout_accuracy": base,
        "findings": [f["text"] for f in rep["findings"]],
        "layers": rows,
        "spearman_own_loss_vs_heldout_gain": rank_corr,
        "spearman_report_vs_heldout_ablation": spearman(own, held_own),
        "seconds": round(time.time() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--report-samples", type=int, default=1000)
    ap.add_argument("--ablation-samples", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(2)
    test, cal = np.load(DATA / "test.npz"), np.load(DATA / "calib.npz")
    x, y, calib = test["x"], test["y"], cal["x"]
    n = args.report_samples
    xr, yr, xe, ye = x[:n], y[:n], x[n:], y[n:]
    outdir = ROOT / "out" / "report_check"
    results = {
        "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads()},
        "torch": torch.__version__,
        "scenarios": {},
    }
    results["scenarios"]["clipping"] = scenario(
        "clipping",
        {"calibration": "none", "passes": BASE.format(p=90)},
        32,
        lambda m, layer: raise_threshold(m, layer, calib),
        xr, yr, xe, ye, calib, args.ablation_samples, outdir,
    )  # fmt: skip
    results["scenarios"]["quantisation"] = scenario(
        "quantisation",
        {"calibration": "none"},
        8,
        lambda m, layer: snnc.convert(str(MODEL), calib, timesteps=8, passes=BASE.format(p=98) + f",calibrate-bias{{layers={layer} output=false}}"),
        xr, yr, xe, ye, calib, args.ablation_samples, outdir,
    )  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ablation_check.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        f"VGG-BN, Fashion-MNIST: report on the first {n} test images, fixes evaluated on the other {len(xe)}; "
        f"{results['machine']['platform']}, {results['machine']['cpu_threads']} threads, torch {results['torch']}",
        "",
    ]
    for name, sc in results["scenarios"].items():
        lines += [
            f"### {name} (T={sc['T']}; SNN {100 * sc['snn_heldout_accuracy']:.2f} %, ANN {100 * sc['ann_heldout_accuracy']:.2f} % on the held-out images)",
            "",
            "| layer | named by the report (rank, cause) | report: own loss (clipping / quantisation) | same ablation, held-out images | held-out gain from the suggested fix of only this layer |",
            "|---|---|---|---|---|",
        ]
        for r in sc["layers"]:
            tag = f"#{r['rank']} {r['kind']}" if r["named"] else "no"
            lines.append(
                f"| {r['layer']} | {tag} | {100 * r['report_own_loss']:+.2f} ({100 * r['report_clipping']:+.2f} / {100 * r['report_quantisation']:+.2f}) "
                f"| {100 * r['heldout_own_loss']:+.2f} ({100 * r['heldout_clipping']:+.2f} / {100 * r['heldout_quantisation']:+.2f}) | {100 * r['heldout_gain']:+.2f} |"
            )
        lines += [
            "",
            f"Spearman rank correlation of the report's own loss with the held-out ablation: {sc['spearman_report_vs_heldout_ablation']:.2f}; "
            f"with the held-out gain of the suggested fix: {sc['spearman_own_loss_vs_heldout_gain']:.2f}",
            "",
        ]
    (OUT / "ablation_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
