"""ANN-vs-SNN study shared by the example workloads.

Runs a converted artifact on held-out data for several T on several backends, scores the
ANN and the SNN with the example's metrics, and writes ``results.json``, ``results.md`` and
a plot of the primary metric against T. Every backend is scored against the ANN on the same
samples (a slow backend may run a seeded random subset of the test set, see :func:`subset`).

    study = Study(title=..., metrics={"accuracy": accuracy}, primary="accuracy")
    study.run("model.snn", x, y, backends={"reference": None, "lava": 200}, out_dir="results")
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import snnc
from snnc.backend import get_backend
from snnc.cli import progress_bars
from snnc.errors import SnncError
from snnc.utils.io import write_json, write_text

Metric = Callable[[np.ndarray, np.ndarray], float]  # (outputs [N, C, ...], labels) -> value

DEFAULT_TIMESTEPS = (4, 8, 16, 32, 64)


def subset(total: int, n: int, seed: int = 0) -> np.ndarray:
    """The samples a backend limited to ``n`` of ``total`` runs: the first ``n`` of one seeded
    permutation, in the original order (a prefix of the file would follow whatever order it
    has, e.g. sorted by class). Smaller subsets are contained in larger ones."""
    if n < 1:
        raise ValueError(f"a backend must run at least one sample, got {n}")
    if n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).permutation(total)[:n])


def argmax_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of decisions (samples, or pixels for dense outputs) on which two output
    arrays ``[N, C, ...]`` pick the same class."""
    return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))


def accuracy(out: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(out.argmax(axis=1) == y))


def binary_auc(out: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC of the logit margin (class 1 minus class 0); NaN when one class is absent."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, out[:, 1] - out[:, 0]))


def dice_per_class(out: np.ndarray, y: np.ndarray, classes: int) -> list[float]:
    """Dice of each class over the whole set (pixels pooled), from argmax predictions."""
    pred = out.argmax(axis=1)
    scores = []
    for c in range(classes):
        p, t = pred == c, y == c
        denom = p.sum() + t.sum()
        scores.append(float(2.0 * np.logical_and(p, t).sum() / denom) if denom else float("nan"))
    return scores


@dataclass
class Study:
    title: str
    metrics: dict[str, Metric]
    primary: str
    timesteps: tuple[int, ...] = DEFAULT_TIMESTEPS
    agreement: Callable[[np.ndarray, np.ndarray], float] = argmax_agreement
    notes: list[str] = field(default_factory=list)
    subset_order: str = "random"  # which samples a limited backend runs: "random" (seeded) or "prefix"

    def score(self, out: np.ndarray, y: np.ndarray) -> dict[str, float]:
        return {name: fn(out, y) for name, fn in self.metrics.items()}

    def run(
        self,
        artifact: str | Path,
        x: np.ndarray,
        y: np.ndarray,
        *,
        backends: dict[str, int | None],
        out_dir: str | Path,
        device: str | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """``backends`` maps a backend name to the number of test samples it runs (None: all)."""
        model = snnc.load(artifact)
        ann_out = model.ann_outputs(x)
        result: dict[str, Any] = {
            "title": self.title,
            "artifact": str(artifact),
            "provenance": {k: model.provenance.get(k) for k in ("source", "pipeline", "calibration", "timesteps", "calibration_samples")},
            "samples": int(len(x)),
            "timesteps": list(self.timesteps),
            "primary": self.primary,
            "ann": self.score(ann_out, y),
            "backends": {},
            "machine": f"{platform.node() or 'host'}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
            "notes": list(self.notes),
        }
        steps = list(self.timesteps)
        reference_cache: dict[int, Any] = {}
        with progress_bars(progress) as bars:
            for name, n in backends.items():
                dev = device if name in ("reference", "spikingjelly") else None
                why = _unavailable(name, dev)
                if why:
                    print(f"[{self.title}] skipping backend {name}: {why}")
                    result["backends"][name] = {"skipped": str(why)}
                    continue
                n = len(x) if n is None else min(int(n), len(x))
                idx = subset(len(x), n) if self.subset_order == "random" else np.arange(n)
                xs, ys, ann_s = x[idx], y[idx], ann_out[idx]
                t0 = time.perf_counter()
                res = model.simulate(xs, steps, backend=name, device=dev, progress=bars)
                seconds = time.perf_counter() - t0
                if name == "reference":
                    reference_cache[n] = res
                ref = reference_cache.get(len(x))  # the reference on every sample: compare on this subset
                if ref is None and name != "reference":
                    print(f"[{self.title}] no 'vs reference' column for {name}: run the reference first, on every sample")
                rows = []
                for t in steps:
                    out = res.output(t)
                    row = {"timesteps": t, **self.score(out, ys), "ann_agreement": self.agreement(out, ann_s)}
                    if ref is not None and name != "reference":
                        row["reference_agreement"] = self.agreement(out, ref.output(t)[idx])
                    rows.append(row)
                result["backends"][name] = {
                    "samples": n,
                    "device": dev or ("cuda" if name == "spikingjelly" and torch.cuda.is_available() else "cpu"),
                    "seconds": round(seconds, 2),
                    "samples_per_second": round(n / seconds, 2),
                    "ann": self.score(ann_s, ys),
                    "results": rows,
                    "spike_rates": res.spike_rates,
                }
                last = rows[-1]
                print(
                    f"[{self.title}] {name:<12} n={n:<5} {self.primary}@T={last['timesteps']}: {last[self.primary]:.4f} "
                    f"(ANN {result['backends'][name]['ann'][self.primary]:.4f}), agreement {last['ann_agreement']:.4f}, {seconds:.1f} s"
                )
        out_dir = Path(out_dir)
        write_json(out_dir / "results.json", result)
        write_text(out_dir / "results.md", self.markdown(result))
        self.plot(result, out_dir / "results.png")
        return result

    def markdown(self, result: dict[str, Any]) -> str:
        names = list(self.metrics)
        head = "| backend | samples | T | " + " | ".join(names) + " | ANN agreement | vs reference |\n"
        head += "|---|---:|---:|" + "---:|" * len(names) + "---:|---:|\n"
        lines = []
        for be, r in result["backends"].items():
            if "skipped" in r:
                lines.append(f"| {be} | – | – | " + " | ".join("–" for _ in names) + f" | skipped: {r['skipped']} | – |")
                continue
            lines.append(f"| {be} | {r['samples']} | ANN | " + " | ".join(_fmt(r["ann"][m]) for m in names) + " | – | – |")
            for row in r["results"]:
                vs = _fmt(row["reference_agreement"]) if "reference_agreement" in row else "–"
                lines.append(
                    f"| {be} | {r['samples']} | {row['timesteps']} | " + " | ".join(_fmt(row[m]) for m in names) + f" | {_fmt(row['ann_agreement'])} | {vs} |"
                )
        speed = "\n".join(
            f"- {be}: {r['samples']} samples × all T in {r['seconds']} s ({r['samples_per_second']} samples/s)"
            for be, r in result["backends"].items()
            if "skipped" not in r
        )
        return (
            f"# {result['title']}\n\nArtifact `{result['artifact']}` (pipeline `{result['provenance']['pipeline']}`). "
            f"ANN on all {result['samples']} test samples: "
            + ", ".join(f"{m} {_fmt(v)}" for m, v in result["ann"].items())
            + ".\n\n"
            + head
            + "\n".join(lines)
            + "\n\nWall time (one process runs every T in one pass):\n"
            + speed
            + f"\n\nMachine: {result['machine']}.\n"
        )

    def plot(self, result: dict[str, Any], path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from snnc.utils.io import atomic_write

        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        markers = {"reference": "o", "spikingjelly": "s", "lava": "^", "lava-fixed": "v"}
        for be, r in result["backends"].items():
            if "skipped" in r:
                continue
            ts = [row["timesteps"] for row in r["results"]]
            ax.plot(ts, [row[self.primary] for row in r["results"]], marker=markers.get(be, "x"), label=f"SNN, {be} (n={r['samples']})")
        ax.axhline(result["ann"][self.primary], color="k", ls="--", lw=1, label=f"ANN (n={result['samples']})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(result["timesteps"], [str(t) for t in result["timesteps"]])
        ax.set_xlabel("timesteps T")
        ax.set_ylabel(self.primary)
        ax.set_title(result["title"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
        plt.close(fig)


def _unavailable(name: str, device: str | None) -> str | None:
    """Why backend ``name`` cannot run here, or None when it can."""
    try:
        get_backend(name, **({"device": device} if device else {}))
    except SnncError as e:
        return str(e)
    return None


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
