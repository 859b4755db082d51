"""Tables and the plot of the transformer benchmark (from results/*.json)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _rows(per_t: dict) -> list[dict]:
    return [
        {
            "timesteps": int(t),
            "accuracy": r["accuracy"],
            "bits_per_message": r["bits_per_message"],
            "messages_per_neuron_step": r.get("messages_per_neuron_per_step", r.get("messages_per_neuron_step")),
        }
        for t, r in sorted(per_t.items(), key=lambda kv: int(kv[0]))
    ]


def _sj_series(sj: dict | None) -> tuple[list[dict], dict[str, str]]:
    """SpikingJelly's recipes (results/sj_recipes.json) as (series, refusals): each series has
    a name and rows with timesteps, accuracy, bits_per_message and messages_per_neuron_step;
    a recipe run with its messages quantised to b bits is a series of its own."""
    if not sj:
        return [], {}
    series, refused = [], {}
    for name, r in sj.get("recipes", {}).items():
        if "refused" in r:
            refused[name] = r["refused"]
            continue
        series.append({"name": f"SpikingJelly {name}", "rows": _rows(r["per_T"]), "family": "sj"})
        for bits, q in sorted((r.get("quantized") or {}).items(), key=lambda kv: int(kv[0])):
            series.append({"name": f"SpikingJelly {name}, {bits}-bit messages", "rows": _rows(q["per_T"]), "family": "sj"})
    return series, refused


def render(out_dir: Path) -> None:
    snn = _load(out_dir / "transformer.json")
    sj = _load(out_dir / "sj_recipes.json")
    if snn is None:
        raise SystemExit(f"{out_dir / 'transformer.json'} is missing: run benchmarks/transformer/run.py first")
    sj_series, refused = _sj_series(sj)
    series = [{"name": c["name"], "rows": c["rows"], "family": "snnc"} for c in snn["configs"]] + sj_series
    lines = [
        "# Transformer benchmark: snnc against SpikingJelly 2.0's transformer recipes",
        "",
        f"Model `{snn['model']}` (ANN accuracy {100 * snn['ann_accuracy']:.2f} % on the first {snn['samples']} test images), "
        f"{snn['calib_samples']} calibration images; {snn['machine']}. "
        "Bits per message: the payload the largest value any layer sends in one step needs (1 = binary spike; "
        "a signed count c needs ceil(log2(2c+1)) bits; a floating-point message 32). "
        "Messages: non-zero messages per neuron per step.",
        "",
        "| method | T | accuracy | gap to ANN (points) | bits per message | messages / neuron / step |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in series:
        for r in s["rows"]:
            gap = 100 * (r["accuracy"] - snn["ann_accuracy"])
            lines.append(
                f"| {s['name']} | {r['timesteps']} | {100 * r['accuracy']:.2f} % | {gap:+.2f} | {r['bits_per_message']} | "
                f"{r['messages_per_neuron_step']:.3f} |"
            )
    lines += ["", *_budget_table(series, snn)]
    if refused:
        lines += ["", "Recipes that did not run on this ViT:", ""]
        lines += [f"- **{k}**: {v}" for k, v in refused.items()]
    text = "\n".join(lines) + "\n"
    tmp = out_dir / "transformer.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, out_dir / "transformer.md")
    _plot(series, snn["ann_accuracy"], out_dir / "transformer.png")


BUDGETS = (2, 3, 4, 6, 8, 16, 32)


def _budget_table(series: list[dict], snn: dict) -> list[str]:
    """The most accurate method of each side whose every message fits a payload of b bits,
    per T: the comparison at each message budget a chip can carry."""
    ts = sorted({r["timesteps"] for s in series for r in s["rows"]})
    out = [
        "",
        "## Best accuracy within each message budget",
        "",
        "For each payload budget b and T: the most accurate configuration of each side whose largest message fits "
        "b bits (– : none fits). Graded-spike chips carry small integer payloads (Loihi 2: up to 24 bits, integers); a "
        "32-bit floating-point message is not a spike any of them carries.",
        "",
        "| T | " + " | ".join(f"b ≤ {b}: snnc / SpikingJelly" for b in BUDGETS) + " |",
        "|---:|" + "---|" * len(BUDGETS),
    ]
    for t in ts:
        cells = []
        for b in BUDGETS:
            best = {}
            for fam in ("snnc", "sj"):
                accs = [
                    r["accuracy"]
                    for s in series
                    if s.get("family", "snnc") == fam
                    for r in s["rows"]
                    if r["timesteps"] == t and r["bits_per_message"] <= b
                ]
                best[fam] = f"{100 * max(accs):.2f}" if accs else "–"
            cells.append(f"{best['snnc']} / {best['sj']}")
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    return out


def _best_within(series: list[dict], fam: str, t: int, b: int) -> float | None:
    accs = [r["accuracy"] for s in series if s.get("family", "snnc") == fam for r in s["rows"] if r["timesteps"] == t and r["bits_per_message"] <= b]
    return max(accs) if accs else None


def _plot(series: list[dict], ann: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    shown = [s for s in series if "bit messages" not in s["name"] or s["name"].endswith(", 4-bit messages")]
    for s in shown:
        rows = sorted(s["rows"], key=lambda r: r["timesteps"])
        style = "-" if s.get("family", "snnc") == "snnc" else "--"
        axes[0].plot([r["timesteps"] for r in rows], [100 * r["accuracy"] for r in rows], style, marker="o", ms=3, label=s["name"])
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("time steps T")
    axes[0].set_title("accuracy per T (dashed: SpikingJelly 2.0 recipes)", fontsize=9)
    axes[0].legend(fontsize=6)
    budgets = list(BUDGETS)
    for fam, label, style in (("snnc", "snnc", "-"), ("sj", "SpikingJelly (best recipe)", "--")):
        for t, marker in ((2, "s"), (8, "o"), (32, "^")):
            ys = [_best_within(series, fam, t, b) for b in budgets]
            pts = [(b, 100 * y) for b, y in zip(budgets, ys) if y is not None]
            if pts:
                axes[1].plot(*zip(*pts), style, marker=marker, label=f"{label}, T={t}")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xticks(budgets, [str(b) for b in budgets])
    axes[1].set_xlabel("message budget b (bits of payload; every message fits b)")
    axes[1].set_title("most accurate configuration within each budget", fontsize=9)
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.axhline(100 * ann, color="k", ls=":", lw=0.8)
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
