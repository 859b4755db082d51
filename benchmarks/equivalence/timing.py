"""Convert and eval times, this tree against a previous commit, side by side in one run.

Each measurement is a whole ``snnc`` command in a fresh process (import time included, as a
user sees it), run alternately with the previous commit's code (``git archive`` into a
temporary directory, first on ``PYTHONPATH``) and with this tree's, ``--reps`` times; the
table gives the medians and new / old.

    python benchmarks/equivalence/timing.py --ref e3d6e4a --reps 5

Needs the Fashion-MNIST data (``make data``). Writes ``results/timing.{json,md}`` here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "results"
DATA = ROOT / ".data" / "fashion_mnist"
MODELS = {"vgg_bn": "examples/fashion_mnist/models/vgg_bn.onnx", "resnet": "examples/fashion_mnist/models/resnet.onnx"}
# (label, command arguments after the model/artifact); {art} is the artifact of that code.
CONVERTS = {
    "convert none T=32": ["--calibration", "none"],
    "convert light T=32": ["--calibration", "light"],
    "convert advanced T=32 (256 samples)": ["--calibration", "advanced", "--calib-samples", "256"],
}


def _snnc(code_dir: str | None, args: list[str]) -> float:
    env = dict(os.environ)
    if code_dir is not None:
        paths = [code_dir, f"{code_dir}/backends/spikingjelly", f"{code_dir}/backends/lava"]
        env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [sys.executable, "-c", "import sys; from snnc.cli import main; sys.argv[0] = 'snnc'; main()", *args]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", required=True, help="the previous commit")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--models", default=",".join(MODELS))
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    times: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="snnc-ref-") as old, tempfile.TemporaryDirectory(prefix="snnc-out-") as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.ref], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        codes = {"old": old, "new": None}
        for rep in range(args.reps):
            for model in models:
                for label, extra in CONVERTS.items():
                    for code, where in codes.items():
                        art = f"{tmp}/{code}_{model}.snn"
                        cmd = ["convert", str(ROOT / MODELS[model]), "-T", "32", "--calib", str(DATA / "calib.npz"), "-o", art, "--no-progress", *extra]
                        times.setdefault(f"{model}: {label}", {}).setdefault(code, []).append(_snnc(where, cmd))
                    print(f"rep {rep}: {model}: {label}", {c: round(v[-1], 2) for c, v in times[f'{model}: {label}'].items()}, flush=True)
                # eval the last (advanced) artifact of each code with that code
                for code, where in codes.items():
                    art = f"{tmp}/{code}_{model}.snn"
                    cmd = ["eval", art, "--data", str(DATA / "test.npz"), "-T", "8,16,32", "--json", "--no-progress"]
                    times.setdefault(f"{model}: eval 2000 images T=8,16,32", {}).setdefault(code, []).append(_snnc(where, cmd))
                print(f"rep {rep}: {model}: eval", {c: round(v[-1], 2) for c, v in times[f'{model}: eval 2000 images T=8,16,32'].items()}, flush=True)
    rows = []
    for key, per in times.items():
        o, n = statistics.median(per["old"]), statistics.median(per["new"])
        rows.append(
            {
                "case": key, "old_seconds": o, "new_seconds": n, "ratio": n / o,
                "old_min": min(per["old"]), "new_min": min(per["new"]), "ratio_min": min(per["new"]) / min(per["old"]),
                "old_runs": per["old"], "new_runs": per["new"],
            }
        )  # fmt: skip
    doc = {
        "ref": args.ref,
        "new": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() + " + working tree",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "reps": args.reps,
        "rows": rows,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "timing.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [
        f"# Convert and eval times: {doc['new']} vs {args.ref}",
        "",
        f"{doc['machine']}; whole `snnc` commands in fresh processes, alternating old and new; median and minimum of {args.reps}.",
        "",
        "| case | old median (s) | new median (s) | new / old | old min (s) | new min (s) | new / old (min) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['case']} | {r['old_seconds']:.2f} | {r['new_seconds']:.2f} | {r['ratio']:.3f} | {r['old_min']:.2f} | {r['new_min']:.2f} | {r['ratio_min']:.3f} |"
        for r in rows
    ]
    (OUT / "timing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
