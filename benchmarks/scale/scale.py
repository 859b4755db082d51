"""ImageNet-scale conversion: time, peak memory, eval throughput and speed-up over ranks.

Every measurement runs the ``snnc`` command in a fresh process (as a user would) and reads
that process's peak resident memory from ``wait4`` (all ranks' peaks for torchrun, whose
own memory is excluded). The networks are the torchvision-layout definitions of
``examples/common/imagenet.py`` at 3x224x224 with 1000 classes, seeded random weights
and randomised BatchNorm statistics, exported with the legacy ONNX exporter; the
calibration inputs are seeded N(0, 1) images (timing and memory do not depend on the
values: the simulation is dense). Results are appended to ``results/scale.json`` one
row at a time, so an interrupted run keeps what it measured.

    python benchmarks/scale/scale.py convert --arch resnet18 --levels none,light --samples 8
    python benchmarks/scale/scale.py convert --arch resnet50 --levels light --samples 8,16 --store memory,auto
    python benchmarks/scale/scale.py ranks --arch resnet18 --samples 8 --ranks 1,2,4
    python benchmarks/scale/scale.py eval --arch resnet18 --samples 4
    python benchmarks/scale/scale.py check --arch resnet18,resnet50,vgg16_bn,mobilenet_v2,regnet_x_400mf
    python benchmarks/scale/scale.py table     # results/scale.md from results/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from examples.common.imagenet import ARCHITECTURES  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "scale.json"
BIN = Path(sys.executable).parent
WORK = Path(os.environ.get("SCALE_WORK", tempfile.gettempdir())) / "snnc-scale"
NOTE = ""


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"


def model_file(arch: str) -> Path:
    """The architecture exported once (seeded weights, randomised BN statistics); an
    ``.onnx`` path is used as it is."""
    if arch.endswith(".onnx"):
        return Path(arch).resolve()
    path = WORK / f"{arch}.onnx"
    if path.exists():
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = ARCHITECTURES[arch](num_classes=1000, in_channels=3).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(net, torch.zeros(1, 3, 224, 224), str(tmp), dynamo=False, opset_version=17, input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    tmp.rename(path)
    return path


CALIB: Path | None = None  # --calib: calibration inputs instead of random 224x224 images


def data_file(n: int) -> Path:
    if CALIB is not None:
        return CALIB
    path = WORK / f"x{n}.npz"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        x = np.random.default_rng(0).standard_normal((n, 3, 224, 224)).astype(np.float32)
        np.savez(path, x=x, y=np.zeros(n, dtype=np.int64))
    return path


def run_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a measured command: torchrun's agent writes a torchelastic_* log
    folder into $TMPDIR (and snnc spills there): keep it inside the work folder."""
    scratch = WORK / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "TMPDIR": str(scratch), **extra}


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run ``cmd``; (seconds, stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=run_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=WORK)
    out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return seconds, out


def snnc_cmd(args: list[str], ranks: int) -> list[str]:
    if ranks == 1:
        return [str(BIN / "snnc"), *args]
    return [str(BIN / "torchrun"), "--standalone", f"--nproc-per-node={ranks}", "--no-python", str(BIN / "snnc"), *args]


def record(row: dict) -> None:
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    rows.append({**row, **({"note": NOTE} if NOTE else {}), "machine": machine(), "date": time.strftime("%Y-%m-%d")})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    tmp.replace(RESULTS)
    print(json.dumps(row), flush=True)


def convert(arch: str, level: str, n: int, T: int, store: str, ranks: int, threads: int | None, check_samples: int, tag: str = "", passes: str | None = None) -> dict:
    out = WORK / f"{Path(arch).stem}_{level}_{n}_{store}_{ranks}x{threads or torch.get_num_threads()}{'_' + tag if tag else ''}.snn"
    args = ["convert", str(model_file(arch)), "--calib", str(data_file(n)), "--calib-samples", str(n), "-T", str(T), "--calibration", level,
            "--store", store, "--check-samples", str(check_samples), "--no-progress", "-o", str(out), "--report", str(out.with_suffix(".json"))]  # fmt: skip
    if passes:  # a pipeline replacing the level's (the level is then only the row's label)
        args += ["--passes", passes]
    env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
    # ru_maxrss of RUSAGE_CHILDREN is the largest child ever: measure each run in its own process
    probe = [sys.executable, "-c", "import resource,subprocess,sys,os; p=subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(p.returncode)"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run([*probe, *snnc_cmd(args, ranks)], env=run_env(env), capture_output=True, text=True, cwd=WORK)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"convert {arch} {level} failed:\n{proc.stderr[-3000:]}")
    peak_gib = int(proc.stderr.strip().splitlines()[-1]) / 2**20
    report = json.loads(out.with_suffix(".json").read_text())
    prov = report["provenance"]
    pass_seconds = {p["name"]: p["seconds"] for p in prov["passes"]}
    stores = {k: v.get("store") for k, v in prov["records"].items() if isinstance(v, dict) and "store" in v}
    comm = {k: v["ranks"]["bytes_reduced_per_rank"] for k, v in prov["records"].items() if isinstance(v, dict) and "ranks" in v}
    return {
        "kind": "convert", "arch": Path(arch).stem, "level": level, "samples": n, "timesteps": T, "store": store, "ranks": ranks,
        "threads_per_rank": threads or torch.get_num_threads(), "seconds": round(seconds, 1), "peak_rss_gib": round(peak_gib, 2),
        "pass_seconds": pass_seconds, "store_stats": stores, "bytes_reduced_per_rank": comm,
        "check_samples": check_samples, "artifact": str(out), **({"passes": passes} if passes else {}),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["convert", "ranks", "eval", "check", "compare", "table"])
    ap.add_argument("artifacts", nargs="*", help="compare: artifacts to compare with the first")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--levels", default="none,light")
    ap.add_argument("--samples", default="8")
    ap.add_argument("--store", default="auto")
    ap.add_argument("--ranks", default="1")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("-T", type=int, default=32)
    ap.add_argument("--check-samples", type=int, default=4)
    ap.add_argument("--calib", type=Path, default=None, help="calibration NPZ (for --arch MODEL.onnx)")
    ap.add_argument("--reps", type=int, default=1, help="repeat each configuration (interleaved)")
    ap.add_argument("--tag", default="", help="convert/ranks: appended to the artifact names (to keep two code versions' artifacts apart)")
    ap.add_argument("--passes", default=None, help="convert/ranks: pass pipeline replacing the level's (snnc convert --passes)")
    ap.add_argument("--note", default="", help="stored with each result row (e.g. which code version ran)")
    a = ap.parse_args()
    global NOTE
    NOTE = a.note
    global CALIB
    CALIB = a.calib.resolve() if a.calib else None
    if a.what == "table":
        return table()
    if a.what == "compare":
        return compare([Path(p) for p in a.artifacts], a.samples, a.T)
    for arch in a.arch.split(","):
        if a.what == "check":  # which backends can hold it, before anything runs
            proc = subprocess.run([str(BIN / "snnc"), "check", str(model_file(arch))], capture_output=True, text=True, cwd=WORK)
            record({"kind": "check", "arch": arch, "exit_status": proc.returncode, "output": proc.stdout + proc.stderr})
            continue
        counts = [int(n) for n in a.samples.split(",")]
        if a.what == "eval":
            # one artifact per arch (converted on the first sample count with torch's default
            # threads: the conversion is set-up here), evaluated on every count: two counts
            # give the throughput net of start-up (table: marginal samples / s)
            model = WORK / f"{arch}_none_{counts[0]}_auto_1x{torch.get_num_threads()}.snn"
            if not model.exists():
                record(convert(arch, "none", counts[0], a.T, "auto", 1, None, a.check_samples))
        for n in counts:
            if a.what == "eval":
                args = ["eval", str(model), "--data", str(data_file(n)), "-T", str(a.T), "--json", "--no-progress"]
                for ranks in map(int, a.ranks.split(",")):
                    seconds, out = timed(snnc_cmd(args, ranks), {"OMP_NUM_THREADS": str(a.threads)} if a.threads else {})
                    record({"kind": "eval", "arch": arch, "samples": n, "timesteps": a.T, "ranks": ranks, "threads_per_rank": a.threads or torch.get_num_threads(), "seconds": round(seconds, 1),
                            "samples_per_second": round(n / seconds, 4), "result": json.loads(out)})  # fmt: skip
                continue
            for _ in range(a.reps):
                for level in a.levels.split(","):
                    for store in a.store.split(","):
                        for ranks in map(int, a.ranks.split(",")):
                            threads = a.threads if a.what == "convert" else 1
                            record(convert(arch, level, n, a.T, store, ranks, threads, a.check_samples, a.tag, a.passes))


def compare(paths: list[Path], samples: str, T: int) -> None:
    """Every parameter of each artifact against the first one's, and the SNN outputs after T
    steps on the first ``samples`` calibration inputs."""
    import snnc

    n = int(samples.split(",")[0])
    x = np.load(data_file(n))["x"][:n]
    first = snnc.load(paths[0])
    y0 = first.run(x, T)
    for p in paths[1:]:
        other = snnc.load(p)
        params = [(m.name, k) for m in first.snn.nodes for k in m.params]
        same = sum(np.array_equal(m.params[k], o.params[k]) for m, o in zip(first.snn.nodes, other.snn.nodes) for k in m.params)
        y = other.run(x, T)
        record({"kind": "compare", "reference": paths[0].name, "artifact": p.name, "parameters": len(params), "identical_parameters": int(same),
                "samples": n, "timesteps": T, "outputs_identical": bool(np.array_equal(y0, y)), "max_abs_output_difference": float(np.max(np.abs(y0 - y)))})  # fmt: skip


def table() -> None:
    """results/scale.md: one table per kind of row of results/scale.json."""
    rows = json.loads(RESULTS.read_text())
    out = ["# Scale benchmark results", "", f"From `results/scale.json` ({machine()}); see README.md for what each table shows.", ""]
    out += ["## snnc convert at 224×224", "", "| arch | level | samples | T | store | ranks × threads | seconds | peak RSS (GiB) | spilled (MiB) | note |", "|---|---|---:|---:|---|---|---:|---:|---:|---|"]
    for r in rows:
        if r["kind"] == "convert":
            spilled = sum((v or {}).get("spilled_bytes", 0) for v in r["store_stats"].values() if isinstance(v, dict)) / 2**20
            out.append(f"| {r['arch']} | {r['level']} | {r['samples']} | {r['timesteps']} | {r['store']} | {r['ranks']} × {r['threads_per_rank']} | {r['seconds']} | {r['peak_rss_gib']} | {spilled:.0f} | {r.get('note', '')} |")
    out += ["", "## Artifacts of several ranks against one", "", "| reference | artifact | identical parameters | outputs identical (samples, T) | max \\|Δ output\\| |", "|---|---|---:|---|---:|"]
    for r in rows:
        if r["kind"] == "compare":
            out.append(f"| {r['reference']} | {r['artifact']} | {r['identical_parameters']} / {r['parameters']} | {r['outputs_identical']} ({r['samples']}, {r['timesteps']}) | {r['max_abs_output_difference']:.3g} |")
    out += ["", "## Bytes each rank contributes to collectives, per pass", "", "| model | level | samples | ranks | bytes per pass |", "|---|---|---:|---:|---|"]
    for r in rows:
        if r["kind"] == "bytes":
            out.append(f"| {r['model']} | {r['level']} | {r['samples']} | {r['ranks']} | {', '.join(f'{k}: {v:,}' for k, v in r['bytes_reduced_per_rank'].items())} |")
    out += ["", "## snnc eval", "", "| arch | samples | T | ranks × threads | seconds (incl. start-up) | samples / s | note |", "|---|---:|---:|---|---:|---:|---|"]
    for r in rows:
        if r["kind"] == "eval":
            threads = r.get("threads_per_rank", "–")
            out.append(f"| {r['arch']} | {r['samples']} | {r['timesteps']} | {r['ranks']} × {threads} | {r['seconds']} | {r['samples_per_second']} | {r.get('note', '')} |")
    out += ["", "Net of start-up (process start, imports, loading the artifact): the extra samples over the extra seconds between two", "sample counts of one run (same arch, T, ranks × threads, note).", "",
            "| arch | T | ranks × threads | samples | seconds | marginal samples / s | note |", "|---|---:|---|---|---|---:|---|"]  # fmt: skip
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["kind"] == "eval" and "threads_per_rank" in r:
            groups.setdefault((r["arch"], r["timesteps"], r["ranks"], r["threads_per_rank"], r.get("note", "")), []).append(r)
    for (arch, T, ranks, threads, note), rs in groups.items():
        lo, hi = min(rs, key=lambda r: r["samples"]), max(rs, key=lambda r: r["samples"])
        if hi["samples"] > lo["samples"] and hi["seconds"] > lo["seconds"]:
            rate = (hi["samples"] - lo["samples"]) / (hi["seconds"] - lo["seconds"])
            out.append(f"| {arch} | {T} | {ranks} × {threads} | {lo['samples']} → {hi['samples']} | {lo['seconds']} → {hi['seconds']} | {rate:.3f} | {note} |")
    out += ["", "## snnc check (every installed backend)", "", "| arch | exit status | first lines | note |", "|---|---:|---|---|"]
    for r in rows:
        if r["kind"] == "check":
            first = " / ".join(line.strip() for line in r["output"].splitlines() if line.strip())[:300].replace("|", "\\|")
            out.append(f"| {r['arch']} | {r['exit_status']} | {first} | {r.get('note', '')} |")
    (HERE / "results" / "scale.md").write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
