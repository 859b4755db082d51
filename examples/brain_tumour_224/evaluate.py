"""Convert the Br35H ResNet-18 (224×224) with snnc and compare ANN vs SNN at T = 8, 16, 32.

    python -m examples.brain_tumour_224.data                      # .data/brain_tumour_224/*.npz
    python -m examples.brain_tumour_224.evaluate                  # convert (when missing), then evaluate

The conversion is the CLI command recorded in ``results/results.json`` (light calibration on a
seeded subset of the calibration images: a ResNet-18 at 224² costs ≈ 10 s per calibration image
on 2 cores). The SNN is simulated once to the largest T (every smaller T is read off the same
run) on a seeded random subset of the 444 test images (``examples.common.study.subset``): the
reference simulator on ``--samples`` of them, the slower backends on subsets of those.
Writes ``results/results.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from examples.common.study import Study, accuracy, binary_auc, subset
from snnc.utils.io import load_npz, write_json, write_text

HERE = Path(__file__).resolve().parent
MODEL = HERE / "models" / "tumour_resnet18_224.onnx"
DATA = Path(".data/brain_tumour_224")
ARTIFACT = Path("out/brain_tumour_224/tumour_resnet18_224.snn")


def convert(model: Path, artifact: Path, calib: Path, samples: int, calibration: str, threshold: str, timesteps: int, neuron: str = "if") -> dict:
    """Run ``snnc convert`` (the CLI next to this interpreter); returns the command and its wall time."""
    snnc = Path(sys.executable).with_name("snnc")
    cmd = [str(snnc), "convert", os.path.relpath(model), "-T", str(timesteps), "--calib", str(calib), "--calib-samples", str(samples),
           "--calibration", calibration, "--threshold", threshold, "--neuron", neuron, "-o", str(artifact),
           "--report", str(artifact.with_suffix(".report.json")), "--no-progress"]  # fmt: skip
    artifact.parent.mkdir(parents=True, exist_ok=True)
    print("$", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return {"command": shlex.join(cmd).replace(str(snnc), "snnc"), "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=MODEL, help="ONNX file (its .json next to it: the ANN's full-test numbers)")
    p.add_argument("--artifact", type=Path, default=ARTIFACT, help="converted model (converted first when missing)")
    p.add_argument("--data", type=Path, default=DATA, help="folder of examples.brain_tumour_224.data's .npz files")
    p.add_argument("--calib-samples", type=int, default=128, help="calibration images (calib.npz holds 128)")
    p.add_argument("--neuron", default="if", help="snnc convert --neuron (if, signed, burst:K, signed-burst:K)")
    p.add_argument("--calibration", default="light")
    p.add_argument("--threshold", default="percentile:99.5")
    p.add_argument("--timesteps", default="8,16,32")
    p.add_argument("--samples", type=int, default=200, help="test images for the reference simulator (seeded subset; 0 = all 444)")
    p.add_argument("--backends", default="reference:0,spikingjelly:100,lava:4", help="name:N (N of the --samples images; 0 = all of them)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)

    steps = tuple(int(t) for t in args.timesteps.split(","))
    conversion = None
    if not args.artifact.exists():
        conversion = convert(args.model, args.artifact, args.data / "calib.npz", args.calib_samples, args.calibration, args.threshold, max(steps), args.neuron)
    test = load_npz(args.data / "test.npz", required=("x", "y"), what="test split")
    idx = subset(len(test["y"]), args.samples or len(test["y"]))
    trained = json.loads(args.model.with_suffix(".json").read_text())
    study = Study(
        title="Br35H ResNet-18 (224×224): ANN vs SNN",
        metrics={"accuracy": accuracy, "roc_auc": binary_auc},
        primary="accuracy",
        timesteps=steps,
        notes=[
            f"test images: a seeded subset of {len(idx)} of the {len(test['y'])} (examples.common.study.subset, seed 0); "
            f"ANN on all {len(test['y'])}: accuracy {trained['accuracy']['test']:.4f}, ROC AUC {trained['roc_auc']['test']:.4f}",
            "ROC AUC from the logit margin out[:,1]-out[:,0] (the SNN's time-averaged readout)",
        ],
    )
    backends = {}
    for item in args.backends.split(","):
        name, _, n = item.partition(":")
        backends[name] = (int(n) or None) if n else None
    earlier = json.loads((args.out / "results.json").read_text()).get("conversion") if (args.out / "results.json").exists() else None
    result = study.run(args.artifact, test["x"][idx], test["y"][idx], backends=backends, out_dir=args.out)
    conversion = conversion or earlier  # an existing artifact: keep the record of its conversion
    result |= {"conversion": conversion, "test_indices": idx.tolist(), "ann_full_test": {"samples": len(test["y"]), "accuracy": trained["accuracy"]["test"], "roc_auc": trained["roc_auc"]["test"]}}
    write_json(args.out / "results.json", result)
    md = (args.out / "results.md").read_text()
    if conversion:
        md += f"\nConversion ({conversion['seconds']} s wall):\n\n```\n{conversion['command']}\n```\n"
    write_text(args.out / "results.md", md + "\n" + "\n".join(f"- {n}" for n in study.notes) + "\n")
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
