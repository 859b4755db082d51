"""ANN vs SNN on the held-out test years (2019-2022): directional accuracy and agreement.

    python -m examples.stocks.data .data/stocks
    snnc convert examples/stocks/models/stocks_tcn.onnx --timesteps 32 \\
        --calib .data/stocks/calib.npz --threshold max -o out/stocks/stocks_tcn.snn \\
        --report out/stocks/report.json
    python -m examples.stocks.evaluate [--artifact out/stocks/stocks_tcn.snn] [--lava N]

Runs :class:`examples.common.study.Study` on every test window on the reference simulator,
SpikingJelly, Lava float and Lava fixed point (``--lava N``: only the first N windows on the
two Lava backends, e.g. 300 for a quick run) for T = 4..64, and
writes ``results/results.{json,md,png}``. Then writes ``results/analysis.json``,
``results/analysis.md`` and ``results/summary.png`` (accuracy with baselines, and agreement,
against T): 95 % intervals (Wilson, and a day-block bootstrap, since the 20
stocks of a day move together) of the ANN's and the reference SNN's accuracy at each T, the
baselines from ``models/stocks_tcn.json`` and the ANN-SNN agreement by size of the ANN's
logit margin (where the disagreements come from).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from examples.common.study import Study, accuracy, binary_auc  # noqa: E402
from examples.stocks.stats import day_bootstrap, summarise  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def predicted_up(out: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(out.argmax(axis=1) == 1))


def margin_table(ann: np.ndarray, snn: np.ndarray, edges=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2, np.inf)) -> list[dict]:
    """Agreement in bins of the ANN's |logit1 - logit0|."""
    m = np.abs(ann[:, 1] - ann[:, 0])
    agree = ann.argmax(1) == snn.argmax(1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (m >= lo) & (m < hi)
        rows.append({"margin_from": float(lo), "margin_to": float(hi), "samples": int(sel.sum()),
                     "agreement": float(agree[sel].mean()) if sel.any() else None})
    return rows


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def _ci(s: dict, key: str) -> str:
    lo, hi = s[key]
    return f"[{_pct(lo)}, {_pct(hi)}]"


def analysis_markdown(a: dict) -> str:
    lines = [
        "# Stock direction: accuracy with 95 % intervals",
        "",
        f"Test windows: {a['samples']} ({a['days']} label days, 2019-01-02 .. 2022-12-28, 20 stocks); "
        f"share of up days {_pct(a['up_fraction'])} %.",
        "",
        "| predictor | accuracy % | Wilson 95 % (iid) | day-bootstrap 95 % | predicted up % "
        "| minus always-up, points [day-bootstrap 95 %] |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in a["predictors"].items():
        gap = "–"
        if "minus_always_up" in s:
            gap = f"{_pct(s['minus_always_up'])} {_ci(s, 'minus_always_up_day_bootstrap95')}"
        lines.append(
            f"| {name} | {_pct(s['accuracy'])} | {_ci(s, 'wilson95')} | {_ci(s, 'day_bootstrap95')} | {_pct(s['predicted_up'])} | {gap} |"
        )
    lines += [
        "",
        f"ANN-SNN agreement (reference, T={a['margin_T']}) by the ANN's logit margin |z1 - z0|:",
        "",
        "| margin | samples | agreement % |",
        "|---|---:|---:|",
    ]
    for r in a["agreement_by_margin"]:
        hi = "∞" if not np.isfinite(r["margin_to"]) else f"{r['margin_to']:g}"
        ag = "–" if r["agreement"] is None else _pct(r["agreement"])
        lines.append(f"| [{r['margin_from']:g}, {hi}) | {r['samples']} | {ag} |")
    return "\n".join(lines) + "\n"


def plot_summary(result: dict, analysis: dict, path: str) -> None:
    """Two panels: accuracy vs T beside the baselines and the ANN's day-bootstrap interval
    (an honest y-range), and ANN-SNN agreement vs T per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from snnc.utils.io import atomic_write

    markers = {"reference": "o", "spikingjelly": "s", "lava": "^", "lava-fixed": "v"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    runs = {be: r for be, r in result["backends"].items() if "skipped" not in r}
    for be, r in runs.items():
        ts = [row["timesteps"] for row in r["results"]]
        lab = f"SNN, {be} (n={r['samples']})"
        ax1.plot(ts, [100 * row["accuracy"] for row in r["results"]], marker=markers.get(be, "x"), label=lab)
        ax2.plot(ts, [100 * row["ann_agreement"] for row in r["results"]], marker=markers.get(be, "x"), label=lab)
    ann = analysis["predictors"]["ANN"]
    lo, hi = ann["day_bootstrap95"]
    ax1.axhspan(100 * lo, 100 * hi, color="k", alpha=0.08, label="ANN, day-bootstrap 95 %")
    ax1.axhline(100 * ann["accuracy"], color="k", ls="--", lw=1, label="ANN")
    styles = {"baseline: always up": ("tab:purple", ":"), "baseline: logistic regression (same windows)": ("tab:brown", "-."),
              "baseline: majority class of training labels": ("tab:gray", ":")}
    for name, (c, ls) in styles.items():
        if name in analysis["predictors"]:
            ax1.axhline(100 * analysis["predictors"][name]["accuracy"], color=c, ls=ls, lw=1.2, label=name)
    ax1.axhline(50, color="k", lw=0.6)
    ax1.set_ylim(46, 56)
    ax1.set_ylabel("directional accuracy, % (test 2019-2022)")
    ax2.axhline(97, color="r", lw=0.8, ls=":", label="97 %")
    ax2.set_ylabel("ANN-SNN agreement, % of test windows")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(result["timesteps"], [str(t) for t in result["timesteps"]])
        ax.set_xlabel("timesteps T")
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=6.5, loc="upper center", ncol=2)
    ax2.legend(fontsize=7, loc="lower right")
    fig.suptitle(result["title"])
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", default="out/stocks/stocks_tcn.snn")
    p.add_argument("--data", default=".data/stocks/test.npz")
    p.add_argument(
        "--lava", type=int, default=None, help="run the Lava backends on the first N test windows only (default: all; 0: skip them)"
    )
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    import snnc
    from snnc.utils.io import load_npz, write_json, write_text

    z = load_npz(args.data, required=("x", "y", "label_date"), what="test data")
    x, y, days = z["x"], z["y"], z["label_date"]
    backends: dict[str, int | None] = {"reference": None, "spikingjelly": None}
    if args.lava is None or args.lava > 0:
        backends.update({"lava": args.lava, "lava-fixed": args.lava})
    study = Study(
        title="Stocks: next-day direction (test 2019-2022)",
        metrics={"accuracy": accuracy, "auc": binary_auc, "predicted_up": predicted_up},
        primary="accuracy",
        notes=[
            "accuracy = directional accuracy over (stock, day) test windows; label 1 = next-day log-return > 0",
        ],
    )
    t0 = time.time()
    result = study.run(args.artifact, x, y, backends=backends, out_dir=args.out, progress=not args.no_progress)
    print(f"study: {time.time() - t0:.0f}s", flush=True)

    # Intervals and margins (reference simulator, all test windows; deterministic, so this
    # reproduces the study's reference outputs).
    model = snnc.load(args.artifact)
    ann = model.ann_outputs(x)
    T = list(result["timesteps"])
    res = model.simulate(x, T)
    def with_gap(pred: np.ndarray) -> dict:
        # accuracy minus the "always up" baseline's, paired on the same windows, day-block bootstrap
        s = summarise(pred, y, days)
        gap = (pred == y).astype(np.float64) - (y == 1)
        s["minus_always_up"] = float(gap.mean())
        s["minus_always_up_day_bootstrap95"] = list(day_bootstrap(gap, days))
        return s

    predictors = {"ANN": with_gap(ann.argmax(1))}
    for t in T:
        predictors[f"SNN reference T={t}"] = with_gap(res.output(t).argmax(1))
    info_path = os.path.join(HERE, "models", "stocks_tcn.json")
    with open(info_path) as fh:
        info = json.load(fh)
    if abs(info["ann"]["test"]["accuracy"] - predictors["ANN"]["accuracy"]) > 1e-9:
        print("warning: the artifact's ANN accuracy differs from models/stocks_tcn.json (other model?)", flush=True)
    names = {"majority_class_train": "baseline: majority class of training labels", "always_up": "baseline: always up",
             "logistic_regression": "baseline: logistic regression (same windows)"}
    for k, v in info["baselines"].items():
        predictors[names.get(k, k)] = v
    mT = 32 if 32 in T else T[-1]
    analysis = {
        "samples": int(len(y)),
        "days": int(len(np.unique(days))),
        "up_fraction": float(y.mean()),
        "predictors": predictors,
        "margin_T": mT,
        "agreement_by_margin": margin_table(ann, res.output(mT)),
        "ann_margin_quantiles": {str(q): float(np.quantile(np.abs(ann[:, 1] - ann[:, 0]), q)) for q in (0.01, 0.03, 0.05, 0.1, 0.5)},
        "spike_rates_reference": res.spike_rates,
    }
    write_json(os.path.join(args.out, "analysis.json"), analysis)
    write_text(os.path.join(args.out, "analysis.md"), analysis_markdown(analysis))
    plot_summary(result, analysis, os.path.join(args.out, "summary.png"))
    print(analysis_markdown(analysis))
    return 0


if __name__ == "__main__":
    sys.exit(main())
