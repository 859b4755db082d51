"""ANN vs SNN on the Br35H test split: accuracy, ROC AUC and ANN agreement for T = 4…64 on
every backend; writes ``results/results.{json,md,png}``.

    snnc convert examples/brain_tumour/models/tumour_cnn.onnx -T 32 \\
        --calib .data/brain_tumour/calib.npz -o out/brain_tumour/tumour_cnn.snn
    python -m examples.brain_tumour.evaluate out/brain_tumour/tumour_cnn.snn
"""

from __future__ import annotations

import argparse
from pathlib import Path

from examples.common.study import Study, accuracy, binary_auc
from snnc.utils.io import load_npz

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact")
    p.add_argument("--data", default=".data/brain_tumour/test.npz", help="test split written by examples.brain_tumour.data")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--backends", default="reference,spikingjelly,lava,lava-fixed")
    p.add_argument("--lava-samples", type=int, default=None, help="run lava (float) on N seeded random test images (default: all)")
    p.add_argument("--fixed-samples", type=int, default=200, help="run lava-fixed on N seeded random test images (default: 200; 0 = all)")
    p.add_argument("--timesteps", default="4,8,16,32,64")
    p.add_argument("--device", default=None, help="device for the reference and SpikingJelly backends (cpu, cuda)")
    args = p.parse_args(argv)

    test = load_npz(args.data, required=("x", "y"), what="test split")
    study = Study(
        title="Br35H tumour classifier: ANN vs SNN",
        metrics={"accuracy": accuracy, "roc_auc": binary_auc},
        primary="accuracy",
        timesteps=tuple(int(t) for t in args.timesteps.split(",")),
        notes=["binary task: tumour yes / no (Br35H); ROC AUC from the logit margin out[:,1]-out[:,0] (the SNN's time-averaged readout)"],
    )
    limits = {"lava": args.lava_samples or None, "lava-fixed": args.fixed_samples or None}
    backends = {b: limits.get(b) for b in args.backends.split(",")}
    study.run(args.artifact, test["x"], test["y"], backends=backends, out_dir=args.out, device=args.device)
    print((Path(args.out) / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
