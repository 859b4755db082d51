"""The transformer benchmark: snnc's conversion of the Fashion-MNIST ViT against the ANN and
against SpikingJelly 2.0's transformer recipes, on the same axes: accuracy per T against the
bits each message between layers needs and the messages per neuron per step.

    python benchmarks/transformer/run.py [--samples 1000] [--calib-samples 512]
    python benchmarks/transformer/sj_recipes.py   # SpikingJelly's side (results/sj_recipes.json)

Writes ``results/transformer.json``, ``results/transformer.md`` and ``results/transformer.png``
(the plot merges ``results/sj_recipes.json`` when it exists).

What is measured for snnc, per configuration and T (reference simulator, direct coding):

* accuracy on the first ``--samples`` Fashion-MNIST test images;
* **bits per message**: the largest |count| c any neuron sends in one step, as the payload
  it needs (1 bit for binary spikes, else ceil(log2(2c + 1)) for a signed count);
* **messages per neuron per step**: non-zero counts / (neurons x T), over every neuron layer;
* unit spikes per sample (sum of |counts|) and the seconds the conversion took.

Configurations: the default pipeline (``snnc convert``'s defaults: 8-bit messages,
expectation-compensated temporal ops, advanced calibration for that T); the payload swept
over 2, 3, 4, 6 and 8 bits (one conversion, simulated at every T); the temporal ops'
``accumulate`` mode (SpikeZIP-TF's accumulated-input operators) against ``expectation``
(ECMT's expectation compensation); and 2-4 bit payloads whose ranges minimise the squared
error at each T (``insert-if{message_threshold=mse}``, one conversion per T).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

import snnc  # noqa: E402
from snnc.ir import run_ann  # noqa: E402
from snnc.simulator.reference import ReferenceSimulator  # noqa: E402

MODEL = ROOT / "examples" / "vit_fashion_mnist" / "models" / "vit.onnx"
DATA = ROOT / ".data" / "fashion_mnist"
TIMESTEPS = (1, 2, 4, 8, 16, 32)


def payload_bits(max_count: float, binary: bool) -> int:
    if binary:
        return 1
    return int(math.ceil(math.log2(2 * max_count + 1))) if max_count > 0 else 1


@torch.no_grad()
def measure(model: snnc.SpikingModel, x: np.ndarray, y: np.ndarray, steps: tuple[int, ...], batch: int = 100) -> list[dict]:
    """Accuracy and message statistics after each of ``steps``."""
    graph = model.snn
    sim = ReferenceSimulator(graph)
    T = max(steps)
    neurons = [n for n in graph.nodes if n.op == "if_neuron"]
    size = sum(int(np.prod(n.output.shape)) for n in neurons)
    nz = {t: 0.0 for t in steps}
    spikes = {t: 0.0 for t in steps}
    peak = {t: 0.0 for t in steps}
    binary = all(int(n.attr("max_spikes")) == 1 and not n.attr("signed") and not n.attr("bipolar") for n in neurons)
    correct = {t: 0 for t in steps}

    def observe(node, out):
        theta = torch.from_numpy(node.params["threshold"])
        c = (out.dense(T) / theta).round()  # counts per step
        a = c.abs()
        cum_nz = (a > 0).flatten(1).sum(1).cumsum(0)
        cum_sp = a.flatten(1).sum(1).cumsum(0)
        cum_pk = a.flatten(1).amax(1).cummax(0).values
        for t in steps:
            nz[t] += float(cum_nz[t - 1])
            spikes[t] += float(cum_sp[t - 1])
            peak[t] = max(peak[t], float(cum_pk[t - 1]))

    for lo in range(0, len(x), batch):
        xb = torch.from_numpy(x[lo : lo + batch])
        out = sim.run(xb, timesteps=T, observe=observe, watch=neurons)[0]
        for t in steps:
            pred = (out.data if out.static else out.data[t - 1]).argmax(1).numpy()
            correct[t] += int((pred == y[lo : lo + batch]).sum())
    n = len(x)
    return [
        {
            "timesteps": t,
            "accuracy": correct[t] / n,
            "bits_per_message": payload_bits(peak[t], binary),
            "max_count": peak[t],
            "messages_per_neuron_step": nz[t] / (n * size * t),
            "unit_spikes_per_sample": spikes[t] / n,
        }
        for t in steps
    ]


def configs() -> list[dict]:
    out = [{"name": "snnc default (8-bit, T-calibrated)", "kind": "default", "message_bits": 8}]
    for bits in (2, 3, 4, 6, 8):
        out.append({"name": f"snnc {bits}-bit expectation", "kind": "sweep", "message_bits": bits, "mode": "expectation"})
    out.append({"name": "snnc 8-bit accumulate (SpikeZIP-TF-style)", "kind": "sweep", "message_bits": 8, "mode": "accumulate"})
    for bits in (2, 3, 4):  # ranges chosen by the squared error at each T: one conversion per T
        out.append({"name": f"snnc {bits}-bit expectation, MSE ranges", "kind": "per_t", "message_bits": bits, "mode": "expectation", "threshold": "mse"})
    return out


def run(samples: int, calib_samples: int, out_dir: Path, only: str | None = None) -> dict:
    torch.set_num_threads(2)
    test = np.load(DATA / "test.npz")
    x, y = test["x"][:samples].astype(np.float32), test["y"][:samples].astype(np.int64)
    calib = np.load(DATA / "calib.npz")["x"][:calib_samples].astype(np.float32)
    results: dict = {
        "model": str(MODEL.relative_to(ROOT)),
        "samples": samples,
        "calib_samples": calib_samples,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "configs": [],
    }
    t0 = time.perf_counter()
    imported = snnc.convert(str(MODEL), calib, timesteps=8, calibration="none", calib_samples=calib_samples)
    ann = run_ann(imported.ann, x)[0]
    results["ann_accuracy"] = float((ann.argmax(1) == y).mean())
    print(f"ANN {results['ann_accuracy']:.4f}", flush=True)
    previous = json.loads((out_dir / "transformer.json").read_text()) if only and (out_dir / "transformer.json").exists() else None
    for cfg in configs():
        rows = []
        if only and only not in cfg["name"]:
            if previous is not None:
                results["configs"] += [c for c in previous["configs"] if c["name"] == cfg["name"]]
            continue
        if cfg["kind"] == "per_t":
            for t in TIMESTEPS:
                passes = (
                    "canonicalize,fold-bn,balance-thresholds,"
                    f"insert-if{{message_bits={cfg['message_bits']} mode={cfg['mode']} message_threshold={cfg['threshold']}}}"
                )
                t1 = time.perf_counter()
                m = snnc.convert(str(MODEL), calib, timesteps=t, passes=passes, calib_samples=calib_samples)
                row = measure(m, x, y, (t,))[0]
                row["convert_seconds"] = round(time.perf_counter() - t1, 1)
                rows.append(row)
                print(cfg["name"], row, flush=True)
        elif cfg["kind"] == "default":
            for t in TIMESTEPS:
                t1 = time.perf_counter()
                m = snnc.convert(str(MODEL), calib, timesteps=t, calib_samples=calib_samples)
                secs = time.perf_counter() - t1
                row = measure(m, x, y, (t,))[0]
                row["convert_seconds"] = round(secs, 1)
                rows.append(row)
                print(cfg["name"], row, flush=True)
        else:
            passes = (
                "canonicalize,fold-bn,balance-thresholds,"
                f"insert-if{{message_bits={cfg['message_bits']} mode={cfg['mode']}}}"
            )
            t1 = time.perf_counter()
            m = snnc.convert(str(MODEL), calib, timesteps=max(TIMESTEPS), passes=passes, calib_samples=calib_samples)
            secs = time.perf_counter() - t1
            rows = measure(m, x, y, TIMESTEPS)
            for r in rows:
                r["convert_seconds"] = round(secs, 1)
                print(cfg["name"], r, flush=True)
        results["configs"].append({**cfg, "rows": rows})
    results["seconds"] = round(time.perf_counter() - t0, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "transformer.json", results)
    return results


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--calib-samples", type=int, default=512)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--plot-only", action="store_true", help="only redraw the table and plot from the JSON files")
    ap.add_argument("--only", help="run only the configurations whose name contains this; keep the others from the JSON")
    a = ap.parse_args()
    if not a.plot_only:
        run(a.samples, a.calib_samples, a.out, a.only)
    from benchmarks.transformer.plot import render

    render(a.out)


if __name__ == "__main__":
    main()
