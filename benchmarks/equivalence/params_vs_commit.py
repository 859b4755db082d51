"""Does a change keep the default pipeline's results? Convert the Fashion-MNIST VGG-BN with the
code of another commit and with this tree, and compare every parameter of the two SNNs bit for bit.

    python benchmarks/equivalence/params_vs_commit.py --ref e252deb --timesteps 8 --calibration advanced \
        -o benchmarks/equivalence/results/params_vs_e252deb.json

The other commit's ``snnc`` package is unpacked with ``git archive`` into a temporary directory
and run first on ``PYTHONPATH`` (the same environment and data: ``make data``). Quicker than
``equivalence.py`` (one model, one T, one level, and ``advanced`` included bit for bit).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import hashlib, json, sys
import numpy as np
import snnc
calib = np.load(sys.argv[1])["x"]
m = snnc.convert(sys.argv[2], calib=calib, timesteps=int(sys.argv[3]), calib_samples=len(calib), calibration=sys.argv[4], check=False)
print(json.dumps({"snnc": snnc.__file__, "params": {f"{n.name}.{k}": hashlib.sha256(np.ascontiguousarray(v, dtype=np.float32).tobytes()).hexdigest()
      for n in m.snn.nodes for k, v in sorted(n.params.items())}}))
"""


def hashes(code_dir: Path | None, args) -> dict:
    env = dict(os.environ)
    if code_dir is not None:
        env["PYTHONPATH"] = str(code_dir) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-c", CHILD, str(ROOT / ".data/fashion_mnist/calib.npz"), str(ROOT / args.model),
           str(args.timesteps), args.calibration]  # fmt: skip
    out = subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", required=True, help="git commit whose snnc package is compared with this tree's")
    p.add_argument("--timesteps", type=int, default=8)
    p.add_argument("--calibration", default="advanced")
    p.add_argument("--model", default="examples/fashion_mnist/models/vgg_bn.onnx", help="a Fashion-MNIST ONNX model (repository path)")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", args.ref, "snnc"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        old = hashes(Path(tmp), args)
    new = hashes(None, args)
    same = sorted(k for k in old["params"] if new["params"].get(k) == old["params"][k])
    differ = sorted(set(old["params"]) ^ set(new["params"]) | {k for k in old["params"] if k in new["params"] and new["params"][k] != old["params"][k]})
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    result = {"ref": args.ref, "tree": f"{head} + working tree", "model": args.model, "timesteps": args.timesteps,
              "calibration": args.calibration, "parameters": len(old["params"]), "identical": len(same), "differ": differ,
              "digest": hashlib.sha256(json.dumps(new["params"], sort_keys=True).encode()).hexdigest()}  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if not differ else 1


if __name__ == "__main__":
    raise SystemExit(main())
