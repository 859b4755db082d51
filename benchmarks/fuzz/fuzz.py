"""`make fuzz`: thousands of seeded one-change mutants of an ONNX model and of a `.snn`
artifact, each run through snnc's front door in a worker process.

Every mutant must end in success or an ``SnncError`` (what the CLI turns into one line and
exit status 2). A traceback (any other exception), a hang (no answer within ``--timeout``
seconds) or a dead worker (a segfault, an out-of-memory kill) is a failure: the script lists
them and exits 1. Results: ``benchmarks/fuzz/results/summary.json`` and ``summary.md``.

    .venv/bin/python benchmarks/fuzz/fuzz.py --onnx 5000 --artifact 5000 --seed 0

The mutant generators and the per-mutant checks are the ones ``make test`` runs on a few
hundred mutants (``tests/fuzzing/``, used by tests/test_onnx_trust.py and
tests/test_artifact_trust.py): this is the same test, longer.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

# family -> (module, file suffix, base builder): the module has mutants(seed, n, base) ->
# iterator of (description, bytes) and classify(path) -> "converted" / "loaded" / ...,
# "refused:<SnncError class>" or "crash:<exception class>".
FAMILIES = {
    "onnx": ("fuzzing.onnx_mutants", ".onnx", lambda mod, tmp: mod.base_model()),
    "artifact": ("fuzzing.artifact_mutants", ".snn", lambda mod, tmp: mod.base_artifact(tmp / "base.snn").read_bytes()),
}


def _worker(module_name: str, conn) -> None:
    """Classify the paths sent on ``conn`` one at a time; answer with the outcome."""
    import warnings

    import torch

    torch.set_num_threads(1)  # one mutant per worker and core
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT / "tests"))
    mod = importlib.import_module(module_name)
    conn.send("ready")
    while True:
        path = conn.recv()
        if path is None:
            return
        try:
            outcome = mod.classify(path)
        except BaseException as e:  # noqa: BLE001 - classify is meant to catch everything itself
            outcome = f"crash:{type(e).__name__}"
        conn.send((outcome, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


class Worker:
    def __init__(self, module_name: str):
        self.module_name = module_name
        self.start()

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(self.module_name, child), daemon=True)
        self.proc.start()
        if not self.conn.poll(300):
            raise RuntimeError("a fuzz worker did not start within 300 s")
        self.conn.recv()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


def kind_of(description: str) -> str:
    """The mutation kind: the description's first word (``swap_inputs``, ``json:value``...)."""
    words = description.split()
    if words and words[0].startswith("#"):
        words = words[1:]
    kind = words[0].rstrip(":") if words else "?"
    return "npz:array" if kind.startswith("npz:") and "/" in kind else kind  # npz:<graph>/<node>/<param>


def run_family(name: str, n: int, seed: int, timeout: float, workers: int) -> dict:
    module_name, suffix, make_base = FAMILIES[name]
    mod = importlib.import_module(module_name)
    with tempfile.TemporaryDirectory(prefix=f"snnc-fuzz-{name}-") as tmp:
        base = make_base(mod, Path(tmp))
        pool = [Worker(module_name) for _ in range(workers)]
        outcomes: collections.Counter = collections.Counter()
        by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        failures, slowest, peak_kb = [], (0.0, ""), 0
        t0 = time.perf_counter()
        pending = []
        for i, (desc, data) in enumerate(mod.mutants(seed, n, base)):
            path = Path(tmp) / f"m{i}{suffix}"
            path.write_bytes(data)
            pending.append((i, desc, str(path)))
        # each worker classifies one mutant at a time; the parent times them
        queue = collections.deque(pending)
        busy: dict[int, tuple] = {}
        while queue or busy:
            for w_idx, w in enumerate(pool):
                if w_idx not in busy and queue:
                    i, desc, path = queue.popleft()
                    w.conn.send(path)
                    busy[w_idx] = (i, desc, path, time.perf_counter())
            for w_idx in list(busy):
                w = pool[w_idx]
                i, desc, path, started = busy[w_idx]
                elapsed = time.perf_counter() - started
                outcome = None
                if w.conn.poll(0.01):
                    try:
                        outcome, rss = w.conn.recv()
                        peak_kb = max(peak_kb, rss)
                    except EOFError:
                        outcome = f"died:{w.proc.exitcode}"
                        w.proc.join()
                        w.start()
                elif not w.proc.is_alive():
                    outcome = f"died:{w.proc.exitcode}"
                    w.start()
                elif elapsed > timeout:
                    w.proc.kill()
                    w.proc.join()
                    w.start()
                    outcome = "hang"
                if outcome is None:
                    continue
                del busy[w_idx]
                Path(path).unlink(missing_ok=True)
                outcomes[outcome] += 1
                by_kind[kind_of(desc)][outcome.split(":")[0]] += 1
                if elapsed > slowest[0]:
                    slowest = (elapsed, desc)
                if outcome.startswith(("crash", "died")) or outcome == "hang":
                    failures.append({"index": i, "mutation": desc, "outcome": outcome})
        for w in pool:
            w.stop()
        leftovers = sorted(p.name for p in Path(tmp).iterdir() if p.name.startswith(".") or p.suffix == ".tmp")
    return {
        "mutants": n,
        "seconds": round(time.perf_counter() - t0, 1),
        "outcomes": dict(sorted(outcomes.items())),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "failures": failures,
        "slowest": {"seconds": round(slowest[0], 2), "mutation": slowest[1]},
        "worker_peak_rss_mib": round(peak_kb / 1024, 1),
        "leftover_temporary_files": leftovers,
    }


def markdown(doc: dict) -> str:
    lines = [
        "# Fuzz summary (`make fuzz`)",
        "",
        f"Machine: {doc['machine']}; seed {doc['seed']}; per-mutant timeout {doc['timeout_s']} s; snnc {doc['code']}.",
        "",
        "| family | mutants | seconds | outcome | count |",
        "|---|---|---|---|---|",
    ]
    for fam, r in doc["families"].items():
        for outcome, count in r["outcomes"].items():
            lines.append(f"| {fam} | {r['mutants']} | {r['seconds']} | {outcome} | {count} |")
    lines += ["", "Failures (tracebacks, hangs, dead workers): " + str(sum(len(r["failures"]) for r in doc["families"].values())), ""]
    for fam, r in doc["families"].items():
        lines.append(f"* {fam}: slowest mutant {r['slowest']['seconds']} s ({r['slowest']['mutation']}); worker peak RSS {r['worker_peak_rss_mib']} MiB")
        for f in r["failures"][:20]:
            lines.append(f"  * {f['outcome']}: {f['mutation']}")
    lines += ["", "By mutation kind (outcome class → count):", ""]
    for fam, r in doc["families"].items():
        for kind, counts in r["by_kind"].items():
            lines.append(f"* {fam} / {kind}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", type=int, default=5000, help="ONNX mutants")
    ap.add_argument("--artifact", type=int, default=5000, help=".snn mutants")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds a mutant may take before it counts as a hang")
    ap.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "fuzz" / "results" / "summary"), help="writes OUTPUT.json and OUTPUT.md")
    args = ap.parse_args()
    import subprocess

    code = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    doc = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "code": code,
        "seed": args.seed,
        "timeout_s": args.timeout,
        "families": {},
    }
    for fam, n in (("onnx", args.onnx), ("artifact", args.artifact)):
        if n > 0:
            print(f"{fam}: {n} mutants ...", flush=True)
            doc["families"][fam] = r = run_family(fam, n, args.seed, args.timeout, args.workers)
            print(f"{fam}: {r['outcomes']} in {r['seconds']} s; failures: {len(r['failures'])}", flush=True)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(doc))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 1 if any(r["failures"] for r in doc["families"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
