"""Refactors keep results: the reference simulator's outputs, bit for bit, before and after.

``capture`` converts every shipped example and benchmark model with the public API at
``--calibration none`` and ``light`` (and ``advanced``) for T = 8 and T = 32, runs the
reference simulator on a fixed test subset at that T, and records for each case the SHA-256
of the output array, of the spike rates and of every parameter of the converted SNN, with
the accuracy. ``check`` does the same with the code in this tree and compares:

* ``none`` and ``light``: outputs, spike rates and parameters bit-identical;
* ``advanced`` (Adam on the weights: float rounding may differ): the accuracy within one
  sample (for segmentation: within one image's worth of pixels).

    python benchmarks/equivalence/equivalence.py capture --ref e3d6e4a -o benchmarks/equivalence/baseline.json
    python benchmarks/equivalence/equivalence.py check benchmarks/equivalence/baseline.json

``--ref`` captures with another commit's code (``git archive`` into a temporary directory,
run with that tree first on ``PYTHONPATH``), in this same environment. Needs the example
data (``make data`` and the examples' ``data.py``; ``make examples`` prepares it too).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".data"
TIMESTEPS = (8, 32)
LEVELS = ("none", "light", "advanced")
CALIB_SAMPLES = 256


def _fashion(name: str) -> dict:
    return {"model": f"examples/fashion_mnist/models/{name}.onnx", "calib": "fashion_mnist/calib.npz", "test": "fashion_mnist/test.npz", "n": 500}


# Every shipped ONNX model (with the options its Makefile target uses) and the throughput
# benchmark's CIFAR ResNet-18 (torch frontend, seeded random weights).
CASES: dict[str, dict] = {
    "fmnist_vgg_bn": _fashion("vgg_bn"),
    "fmnist_vgg_bn_dynamo": _fashion("vgg_bn_dynamo"),
    "fmnist_resnet": _fashion("resnet"),
    "fmnist_resnet_dynamo": _fashion("resnet_dynamo"),
    "brain_tumour": {"model": "examples/brain_tumour/models/tumour_cnn.onnx", "calib": "brain_tumour/calib.npz", "test": "brain_tumour/test.npz", "n": 444},
    "brain_seg": {"model": "examples/brain_seg/models/brain_seg_unet.onnx", "calib": "brain_seg/calib.npz", "test": "brain_seg/test.npz", "n": 16},
    "stocks": {"model": "examples/stocks/models/stocks_tcn.onnx", "calib": "stocks/calib.npz", "test": "stocks/test.npz", "n": 1000, "threshold": "max"},
    "cifar_resnet18": {"model": "torch:cifar_resnet18", "n": 32},
}


def _sha(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _params_sha(graph) -> str:
    h = hashlib.sha256()
    for n in graph.nodes:
        h.update(f"{n.name}:{n.op}:{json.dumps(n.attrs, sort_keys=True, default=str)}".encode())
        for k in sorted(n.params):
            h.update(k.encode())
            h.update(np.ascontiguousarray(n.params[k]).tobytes())
    return h.hexdigest()


def _load_case(case: dict):
    """(model, calib x, test x, test y) for one case."""
    if case["model"].startswith("torch:"):
        import torch

        sys.path.insert(0, str(ROOT))
        from benchmarks.throughput.throughput import cifar_resnet18

        module, _, x = cifar_resnet18()
        torch.manual_seed(0)
        return module, x[:CALIB_SAMPLES], x[512 : 512 + case["n"]], None
    calib = np.load(DATA / case["calib"])["x"]
    test = np.load(DATA / case["test"])
    return str(ROOT / case["model"]), calib, test["x"][: case["n"]], test["y"][: case["n"]] if "y" in test.files else None


def _correct(out: np.ndarray, y: np.ndarray | None) -> float | None:
    """Correct predictions in units of samples (a segmentation image counts its pixel fraction)."""
    if y is None:
        return None
    pred = out.argmax(axis=1) if out.shape[1] > 1 else (out[:, 0] > 0).astype(np.int64)
    hits = (pred == y).reshape(len(y), -1).mean(axis=1)
    return float(hits.sum())


def capture(names: list[str], levels: list[str]) -> dict:
    import snnc

    results: dict[str, dict] = {}
    for name in names:
        case = CASES[name]
        model, calib, x, y = _load_case(case)
        for level in levels:
            for T in TIMESTEPS:
                t0 = time.perf_counter()
                sm = snnc.convert(
                    model, calib, timesteps=T, calibration=level, threshold=case.get("threshold", "percentile:98"), calib_samples=CALIB_SAMPLES, seed=0
                )
                res = sm.simulate(x, [T])
                out = res.output(T)
                rates = np.array([res.spike_rates[k] for k in sorted(res.spike_rates)], dtype=np.float64)
                key = f"{name}/{level}/T{T}"
                results[key] = {
                    "outputs_sha256": _sha(out),
                    "spike_rates_sha256": _sha(rates),
                    "params_sha256": _params_sha(sm.snn),
                    "correct": _correct(out, y),
                    "samples": int(len(x)),
                    "output_mean": float(out.mean()),
                    "seconds": round(time.perf_counter() - t0, 2),
                }
                print(f"{key}: correct {results[key]['correct']} / {len(x)}, {results[key]['seconds']} s", flush=True)
    return results


def _capture_at_ref(ref: str, names: list[str], levels: list[str], out: Path) -> None:
    """Run ``capture`` with the code of git ``ref`` (this script from the current tree)."""
    with tempfile.TemporaryDirectory(prefix="snnc-ref-") as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        env = dict(os.environ)
        paths = [tmp, f"{tmp}/backends/spikingjelly", f"{tmp}/backends/lava"]
        env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        cmd = [sys.executable, __file__, "capture", "-o", str(out), "--cases", ",".join(names), "--levels", ",".join(levels), "--code-from", ref]
        subprocess.run(cmd, check=True, env=env, cwd=tmp)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--ref", default=None, help="capture with this git commit's code")
    c.add_argument("--code-from", default=None, help=argparse.SUPPRESS)
    k = sub.add_parser("check")
    k.add_argument("baseline")
    k.add_argument("--report", default=None, help="also write the verdicts as JSON here")
    for q in (c, k):
        q.add_argument("--cases", default=",".join(CASES))
        q.add_argument("--levels", default=",".join(LEVELS))
    args = p.parse_args(argv)
    names = [n for n in args.cases.split(",") if n]
    levels = [lv for lv in args.levels.split(",") if lv]

    if args.cmd == "capture":
        out = Path(args.output).resolve()
        if args.ref:
            _capture_at_ref(args.ref, names, levels, out)
            return 0
        import snnc
        import torch

        doc = {
            "code": args.code_from or subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
            "snnc_file": snnc.__file__,
            "torch": torch.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "calib_samples": CALIB_SAMPLES,
            "results": capture(names, levels),
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")
        return 0

    base = json.loads(Path(args.baseline).read_text())
    now = capture(names, levels)
    failures = []
    verdicts = {}
    for key, cur in now.items():
        ref = base["results"].get(key)
        if ref is None:
            print(f"{key}: not in the baseline")
            continue
        level = key.split("/")[1]
        if level == "advanced":
            ok = cur["correct"] is None or abs(cur["correct"] - ref["correct"]) <= 1.0
            same = all(cur[f] == ref[f] for f in ("outputs_sha256", "spike_rates_sha256", "params_sha256"))
            what = f"correct {cur['correct']} vs {ref['correct']}" + (" (bit-identical)" if same else " (outputs differ)")
        else:
            same = [f for f in ("outputs_sha256", "spike_rates_sha256", "params_sha256") if cur[f] == ref[f]]
            ok = len(same) == 3
            what = "bit-identical" if ok else f"differs ({', '.join(f for f in ('outputs_sha256', 'spike_rates_sha256', 'params_sha256') if f not in same)})"
        print(f"{'ok  ' if ok else 'FAIL'} {key}: {what}")
        verdicts[key] = {"ok": ok, "verdict": what, "seconds": cur["seconds"]}
        if not ok:
            failures.append(key)
    print(f"{len(now) - len(failures)} of {len(now)} cases equal to the baseline ({base['code']})")
    if args.report:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        doc = {"baseline": base["code"], "code": head, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "cases": verdicts}
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(doc, indent=1) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
