"""``snnc report``: an HTML page (plus PNG plots and a JSON file) on why a converted network's
accuracy moved, what it costs, and what to change.

>>> rep = build_report(model, x, y, timesteps=[4, 8, 16, 32, 64])
>>> write_report(rep, "out/report")      # index.html, report.json, *.png (atomically)

The page has no scripts: plots are PNG files next to it, tables are plain HTML.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from snnc.analysis.diagnose import benchmark_gains, diagnose, findings
from snnc.defaults import DEFAULT_ABLATION_SAMPLES, DEFAULT_REPORT_TIMESTEPS
from snnc.utils.io import json_default

PLOTS = {
    "accuracy": "accuracy_vs_timesteps.png",
    "layers": "layers.png",
    "errors": "layer_errors.png",
    "ablation": "ablation.png",
    "energy": "operations.png",
}


def build_report(
    model,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    timesteps: Sequence[int] = DEFAULT_REPORT_TIMESTEPS,
    at: int | None = None,
    ablation_samples: int = DEFAULT_ABLATION_SAMPLES,
    batch_size: int | None = None,
    seed: int = 0,
    progress=None,
    artifact: str | None = None,
    data: str | None = None,
) -> dict[str, Any]:
    """Everything the page shows, as one JSON-able dict: diagnostics, findings, operations
    and energy, and the conversion's provenance."""
    diag = diagnose(model, x, y, timesteps=timesteps, at=at, ablation_samples=ablation_samples, batch_size=batch_size, seed=seed, progress=progress)
    rate_maps = diag.pop("rate_maps")
    message_maps = diag.pop("message_maps", None)
    prov = model.provenance
    rep: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "artifact": artifact,
        "data": data,
        "source": prov.get("source"),
        "pipeline": prov.get("pipeline"),
        "calibration": prov.get("calibration"),
        "calibration_samples": prov.get("calibration_samples"),
        "converted_for": model.timesteps,
        "diagnostics": diag,
        "findings": findings(diag, benchmark_gains()),
        "energy": _energy(model, rate_maps, diag["at"], message_maps),
    }
    return rep


def _energy(model, rate_maps: dict[str, np.ndarray], at: int, message_maps: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Operations and energy at the analysed T, from the per-neuron spike and message rates
    measured on the report's data (exact counts; docs/energy.md)."""
    from snnc.analysis.energy import estimate_energy

    return estimate_energy(model, rate_maps, at, message_rates=message_maps)


# ------------------------------------------------------------------------ plots
def _plots(rep: dict[str, Any], out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diag = rep["diagnostics"]
    made: dict[str, str] = {}
    short = [_short(r["layer"]) for r in diag["layers"]]

    # accuracy and agreement vs T
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ts = [r["timesteps"] for r in diag["timesteps"]]
    ax.plot(ts, [100 * r["accuracy"] for r in diag["timesteps"]], "o-", label=f"SNN {diag['metric']}")
    if diag["labels"]:
        ax.plot(ts, [100 * r["agreement"] for r in diag["timesteps"]], "s--", label="SNN agreement with the ANN")
    ax.axhline(100 * diag["ann_accuracy"], color="k", lw=1, label=f"ANN ({100 * diag['ann_accuracy']:.2f} %)")
    ax.axhline(100 * diag["target"]["accuracy"], color="grey", lw=1, ls=":", label="99 % of the ANN")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ts, [str(t) for t in ts])
    ax.set_xlabel("timesteps T")
    ax.set_ylabel("%")
    ax.set_title(f"{diag['samples']} samples")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    made["accuracy"] = _save(fig, out / PLOTS["accuracy"])

    def per_layer(key: str, labels: list[str], ylabel: str, draw, title: str | None = None, grid_axis: str = "both") -> None:
        """One figure with a bar/line group per layer: width from the layer count, rotated
        layer names, legend, grid; saved as PLOTS[key]."""
        fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(labels) + 2), 3.8))
        draw(ax, np.arange(len(labels)))
        ax.set_xticks(np.arange(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(axis=grid_axis, alpha=0.3)
        made[key] = _save(fig, out / PLOTS[key])

    layers = diag["layers"]
    if layers:
        keys = [("spike_rate", "spike rate"), ("saturated", "saturated"), ("silent", "silent (ANN active)"), ("clipped", "clipped by θ (ANN)")]

        def behaviour(ax, xs):
            w = 0.8 / len(keys)
            for i, (k, label) in enumerate(keys):
                ax.bar(xs + (i - (len(keys) - 1) / 2) * w, [100 * (r.get(k) or 0) for r in layers], w, label=label)

        per_layer("layers", short, "% of neurons (rate: % of steps)", behaviour, f"spiking layers at T={diag['at']}", "y")

        def errors(ax, xs):  # the error on this data, and what each pass did to it at conversion
            ax.plot(xs, [r.get("error_rms") or 0 for r in layers], "o-", color="k", label=f"RMS(SNN − ANN) at T={diag['at']}, this data")
            stages = list(dict.fromkeys(p["stage"] for r in layers for p in r["passes"]))
            for st in stages:
                ys = [next((p["rms"] for p in r["passes"] if p["stage"] == st), np.nan) for r in layers]
                ax.plot(xs, ys, ".--", label=f"after {st} (conversion, T={rep['converted_for']})")

        per_layer("errors", short, "RMS error of the layer's output", errors)

    abl = diag.get("ablation")
    if abl:

        def ablation(ax, xs):
            q = [100 * (r.get("gain_quantisation") or 0) for r in layers]
            c = [100 * (r.get("gain_clipping") or 0) for r in layers]
            ax.bar(xs, q, 0.6, label="quantisation (finite T)")
            ax.bar(xs, c, 0.6, bottom=q, label="clipping (θ)")
            ax.plot(xs, [100 * (r.get("gain_exact") or 0) for r in layers], "kD", label="total")
            ax.axhline(0, color="k", lw=0.8)

        title = f"each layer's own loss at T={abl['timesteps']} (ablation, {abl['samples']} samples)"
        per_layer("ablation", short, "accuracy points recovered", ablation, title, "y")

    rows = _energy_rows(rep.get("energy"))
    if rows:

        def operations(ax, xs):
            ax.bar(xs - 0.2, [(r["ann_macs"] + r.get("ann_host_ops", 0)) / 1e6 for r in rows], 0.4, label="ANN MACs (host rows: ANN ops)")
            snn = [(r["snn_synops"] + r.get("snn_dense_macs", 0)) / 1e6 for r in rows]
            graded = [(r.get("graded_synops", 0) + r.get("host_ops", 0)) / 1e6 for r in rows]
            ax.bar(xs + 0.2, snn, 0.4, label=f"SNN synaptic ops + dense MACs (T={diag['at']})")
            if any(graded):
                ax.bar(xs + 0.2, graded, 0.4, bottom=snn, label=f"SNN graded synaptic ops / host ops, MACs (T={diag['at']})")

        per_layer("energy", [_short(r["layer"]) for r in rows], "millions per sample", operations, grid_axis="y")
    return made


def _energy_rows(en: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not en:
        return []
    return [r for r in en.get("layers", []) if r.get("kind") in ("synapse", "elementwise", "host")]


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def _short(name: str, n: int = 28) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1) :]


# ------------------------------------------------------------------------ html
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left} .muted{color:#666;font-size:.85em}
ol.findings li{margin:.4em 0} .impact{font-weight:600} img{max-width:100%;border:1px solid #eee}
.kv td{text-align:left}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _num(x: float | None, fmt: str = ".4g") -> str:
    return "–" if x is None else format(x, fmt)


def _table(headers: list[str], rows: list[list[Any]], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{_e(c)}</td>' for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(rep: dict[str, Any], plots: dict[str, str]) -> str:
    diag = rep["diagnostics"]
    src = rep.get("source") or {}
    metric = diag["metric"]
    title = Path(src["path"]).name if src.get("path") else src.get("class") or diag["model"]
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>snnc report: {_e(title)}</title><style>{_CSS}</style></head><body>"]
    parts.append(f"<h1>snnc report: {_e(title)}</h1>")
    kv = [
        ("model", src.get("path", src.get("class", "?"))),
        ("artifact", rep.get("artifact") or "–"),
        ("data", f"{rep.get('data') or '–'} ({diag['samples']} samples{'' if diag['labels'] else ', no labels: agreement with the ANN'})"),
        ("pipeline", rep.get("pipeline")),
        ("calibration", f"{rep.get('calibration')} ({rep.get('calibration_samples')} samples), converted for T={rep['converted_for']}"),
        (f"ANN {metric}", f"{_pct(diag['ann_accuracy'], 2)} %"),
        ("smallest T reaching 99 % of the ANN", diag["target"]["smallest_T"] or f"none up to T={max(r['timesteps'] for r in diag['timesteps'])}"),
        ("created", rep["created"]),
    ]
    parts.append("<table class='kv'>" + "".join(f"<tr><th class='l'>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in kv) + "</table>")

    parts.append("<h2 id='findings'>Findings, ranked by the accuracy at stake</h2><ol class='findings'>")
    for f in rep["findings"]:
        imp = f"<span class='impact'>[{100 * f['impact']:.1f} pts]</span> " if f.get("impact") else ""
        parts.append(f"<li>{imp}{_e(f['text'])}</li>")
    parts.append("</ol>")

    parts.append("<h2 id='accuracy'>Accuracy vs timesteps</h2>")
    if "accuracy" in plots:
        parts.append(f"<img src='{plots['accuracy']}' alt='accuracy and ANN agreement vs timesteps'>")
    parts.append(
        _table(
            ["T", f"{metric} %", "agreement with ANN %", "vs ANN (points)"],
            [[r["timesteps"], _pct(r["accuracy"], 2), _pct(r["agreement"], 2), f"{100 * (r['accuracy'] - diag['ann_accuracy']):+.2f}"] for r in diag["timesteps"]],
        )
    )

    parts.append(f"<h2 id='layers'>Spiking layers at T={diag['at']}</h2>")
    for key, alt in (("layers", "spike rate, saturated, silent and clipped fractions per layer"), ("errors", "per-layer error and what each pass changed")):
        if key in plots:
            parts.append(f"<img src='{plots[key]}' alt='{alt}'>")
    rows = []
    # The neuron variant gets a column when any layer is not the plain IF neuron (burst / signed).
    variants = any(r.get("neuron", "if") != "if" for r in diag["layers"])
    for r in diag["layers"]:
        th = f"{r['threshold_min']:.3g}..{r['threshold_max']:.3g}" if r["threshold_min"] != r["threshold_max"] else f"{r['threshold']:.4g}"
        rows.append(
            [
                r["layer"],
                "x".join(map(str, r["shape"])),
                *([r.get("neuron", "if")] if variants else []),
                th,
                r.get("threshold_method") or "–",
                _num(r["spike_rate"], ".3f"),
                _pct(r["saturated"]),
                _pct(r.get("silent")),
                _pct(r.get("clipped")),
                _num(r.get("error_mean"), "+.4f"),
                _num(r.get("error_rms"), ".4f"),
                _pct(r.get("relative_rms")),
            ]
        )
    parts.append(
        _table(
            ["layer", "shape", *(["neuron"] if variants else []), "threshold θ", "chosen by", "spike rate", "saturated %", "silent %", "clipped %", "error mean", "error RMS", "RMS / ANN RMS %"],
            rows,
        )
    )
    parts.append(
        "<p class='muted'>Saturated: a spike at every step. Silent: no spike in T steps although the ANN activation is at least θ/T. "
        "Clipped: ANN activation above θ (the SNN cannot represent it). Errors: the layer's time-averaged SNN output minus the ANN activation, "
        "on this data, with every earlier layer spiking.</p>"
        + (
            "<p class='muted'>Neuron: <b>burst:K</b> emits up to K spikes of θ in one step (saturated: K every step; clipped: above K·θ), "
            "<b>signed</b> also emits −θ spikes that take back earlier ones, <b>bipolar:K</b> (attention networks) carries a signed value "
            "as one graded spike of −K..K per step (saturated: ±K every step; clipped: |ANN| above K·θ; silent: |ANN| at least θ/T). "
            "Spike rates count unit spikes: a burst of k is k spikes, a −θ spike is one (docs/energy.md).</p>"
            if variants
            else ""
        )
    )
    noted = [[r["layer"], "; ".join(r["notes"])] for r in diag["layers"] if r.get("notes")]
    if noted:
        parts.append("<h3>Diagnostics that do not apply</h3>" + _table(["layer", "why"], noted, left=2))
    temporal = diag.get("temporal_ops") or []
    if temporal:
        parts.append(f"<h2 id='temporal'>Temporal ops (attention networks) at T={diag['at']}</h2>")
        parts.append(
            "<p class='muted'>Each nonlinear op of the ANN (layer norm, softmax, GELU / SiLU, products of two computed tensors) runs as its "
            "temporal counterpart: it evaluates the op on the running means of its input spike trains and emits the change of its running "
            "total as a current, which the bipolar neuron after it turns into graded spikes. Spike rate, saturation, silence, clipping and "
            "ablation do not apply to it (see the neuron it feeds); its error is its time-averaged output against the ANN op's.</p>"
        )
        parts.append(
            _table(
                ["op node", "op", "mode", "replaces (ANN)", "feeds", "what a target needs", "spike diagnostics", "error mean", "error RMS", "RMS / ANN RMS %"],
                [
                    [
                        r["layer"], r["op"], r["mode"], r.get("ann_layer") or "–", ", ".join(r["feeds"]), r["target"], "n/a: emits a current",
                        _num(r.get("error_mean"), "+.4f"), _num(r.get("error_rms"), ".4f"), _pct(r.get("relative_rms")),
                    ]  # fmt: skip
                    for r in temporal
                ],
                left=7,
            )
        )
    stage_rows = []
    for r in diag["layers"]:
        if r["passes"]:
            stage_rows.append([r["layer"]] + [f"{p['stage']}: {p['rms']:.4f}" for p in r["passes"]])
    if stage_rows:
        width = max(len(s) for s in stage_rows)
        parts.append("<h3>What each pass changed (RMS of SNN − ANN at conversion, calibration samples)</h3>")
        parts.append(_table(["layer"] + [f"stage {i}" for i in range(1, width)], [s + [""] * (width - len(s)) for s in stage_rows], left=width))

    abl = diag.get("ablation")
    if abl:
        parts.append(f"<h2 id='ablation'>Which layers lose accuracy (ablation at T={abl['timesteps']})</h2>")
        if "ablation" in plots:
            parts.append(f"<img src='{plots['ablation']}' alt='accuracy recovered per layer'>")
        parts.append(
            f"<p class='muted'>On {abl['samples']} samples (SNN {_pct(abl['base_accuracy'], 2)} %, ANN {_pct(abl['ann_accuracy'], 2)} %): each layer's own loss is the "
            "accuracy gained by replacing its spikes with the ANN's activation while its spiking inputs are also replaced (the rest of the network keeps spiking); "
            "replacing it with the activation clipped at θ instead gives the quantisation part, the rest is clipping."
            + (
                " This model is calibrated: its biases also correct the error its spiking inputs pass on, so with exact inputs a "
                "calibrated layer can over-correct, and a small negative loss means that.</p>"
                if rep.get("calibration") not in (None, "none")
                else "</p>"
            )
        )
        parts.append(
            _table(
                ["layer", "own loss (points)", "quantisation", "clipping", "output error removed %"],
                [
                    [r["layer"], f"{100 * r['gain_exact']:+.2f}", f"{100 * r['gain_quantisation']:+.2f}", f"{100 * r['gain_clipping']:+.2f}", _pct(r["error_reduction"] / abl["base_output_error"] if abl["base_output_error"] else None)]
                    for r in diag["layers"]
                    if "gain_exact" in r
                ],
            )
        )
    if diag.get("residual_adds"):
        parts.append("<h2 id='residual'>Residual adds</h2>")
        parts.append(
            _table(
                ["add", "input amplitudes (θ of the spiking layers feeding it)", "drives (θ)", "ratio"],
                [
                    [
                        a["add"],
                        "; ".join(f"{i['value']}: {i['amplitude']:.3g}" if i["amplitude"] is not None else f"{i['value']}: current" for i in a["inputs"]),
                        f"{', '.join(a['drives'])} ({_num(a['drives_threshold'], '.3g')})" if a["drives"] else "–",
                        f"{a['ratio']:.2f}",
                    ]
                    for a in diag["residual_adds"]
                ],
            )
        )
    parts.append(_energy_html(rep.get("energy"), plots, diag["at"]))
    parts.append("<p class='muted'>Generated by snnc. Data: report.json next to this page.</p></body></html>")
    return "\n".join(parts)


def _energy_html(en: dict[str, Any] | None, plots: dict[str, str], at: int) -> str:
    if not en:
        return ""
    profiles = [k for k, p in en.get("profiles", {}).items() if isinstance(p, dict)]
    out = [f"<h2 id='energy'>Operations and energy at T={at} (per sample, from the spike rates measured on this data)</h2>"]
    if "energy" in plots:
        out.append(f"<img src='{plots['energy']}' alt='ANN MACs vs SNN synaptic operations per layer'>")
    rows = []
    layers = en.get("layers", [])
    graded = any(r.get("graded_synops") for r in layers)
    host = any(r.get("kind") == "host" for r in layers)
    for r in layers:
        e = r.get("energy", {})
        extra = []
        if graded:
            extra += [_fmt(r.get("graded_synops")), _fmt(r.get("messages")) if r.get("graded") else "–", _num(r.get("message_rate"), ".3f")]
        if host:
            extra += [_fmt(r.get("host_ops")) if r.get("kind") == "host" else "–", _fmt(r.get("ann_host_ops")) if r.get("kind") == "host" else "–"]
        rows.append(
            [r["layer"], r["kind"], _fmt(r.get("ann_macs")), _fmt(r.get("snn_synops")), _fmt(r.get("snn_dense_macs")), _fmt(r.get("neuron_updates")), _num(r.get("input_rate"), ".3f")]
            + extra
            + [_fmt((e.get(p) or {}).get("snn_nj")) for p in profiles]
        )
    heads = ["layer", "kind", "ANN MACs", "SNN synaptic ops", "SNN dense MACs", "neuron updates", "input spike rate"]
    if graded:
        heads += ["graded synaptic ops (MACs)", "messages", "message rate"]
    if host:
        heads += ["SNN host ops", "ANN host ops"]
    out.append(_table(heads + [f"SNN nJ ({p})" for p in profiles], rows, left=2))
    tot = en.get("totals", {})
    trows = []
    for p in profiles:
        e = (tot.get("energy") or {}).get(p) or {}
        trows.append([p, _fmt(e.get("ann_nj")), _fmt(e.get("snn_nj")), _num(e.get("ratio"), ".2f")] + ([_pct(e.get("host_fraction"))] if host else []))
    out.append(
        f"<p>Totals: ANN {_fmt(tot.get('ann_macs'))} MACs; SNN {_fmt(tot.get('snn_synops'))} synaptic operations "
        f"({_num(tot.get('synops_per_ann_mac'), '.2f')} per ANN MAC), {_fmt(tot.get('snn_dense_macs'))} dense MACs, {_fmt(tot.get('neuron_updates'))} neuron updates.</p>"
    )
    if graded:
        out.append(
            f"<p>Graded messages: {_fmt(tot.get('messages'))} messages ({_fmt(tot.get('spikes'))} unit spikes); {_fmt(tot.get('graded_synops'))} graded "
            f"synaptic operations ({_num(tot.get('graded_synops_per_ann_mac'), '.2f')} per ANN MAC), each a multiply-accumulate of the payload "
            "by the weight, priced as a MAC.</p>"
        )
    if host:
        out.append(
            f"<p>Host ops (temporal ops, host-side or programmable-neuron work, priced as MACs): SNN {_fmt(tot.get('host_ops'))}, "
            f"ANN {_fmt(tot.get('ann_host_ops'))} (its matmuls, layer norms, softmaxes and GELU / SiLU); not in the synaptic totals.</p>"
        )
    out.append(_table(["profile", "ANN nJ", "SNN nJ", "SNN / ANN"] + (["host ops % of SNN"] if host else []), trows))
    prow = []
    for name in profiles:
        p = en["profiles"][name]
        prow.append([name, p.get("description", ""), "; ".join(p.get("sources") or [])])
    out.append("<h3>Target profiles</h3>" + _table(["profile", "what", "sources"], prow, left=3))
    out.append("<p class='muted'>Compute-only estimates: per-operation energies x counts; docs/energy.md says what is counted, the constants and their sources.</p>")
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, list):
        return "x".join(map(str, v))
    return "–" if v is None else str(v)


# ------------------------------------------------------------------------ writing
REPORT_FILES = ("index.html", "report.json", *PLOTS.values())


def write_report(rep: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write ``index.html``, ``report.json`` and the PNG plots into ``out_dir``.

    Everything is produced in a temporary directory next to ``out_dir`` first and moved
    into place, file by file with ``os.replace``, only once all of it exists: a failure
    (or SIGINT / SIGTERM under the ``snnc`` command) leaves no partial file and no
    half-written report. ``out_dir`` is checked first: a new or existing directory, none
    of whose report files is a device or a directory; missing parents are created (the
    ``snnc report`` command wants them to exist)."""
    from snnc.utils import interrupts
    from snnc.utils.io import write_error
    from snnc.utils.paths import check_output_path, temp_prefix

    out = check_output_path(out_dir, what="report directory", kind="dir", contents=REPORT_FILES, parents=True)
    tmp: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with interrupts.deferred():  # the name is known before anything could interrupt
            tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out), dir=out.parent))
        plots = _plots(rep, tmp)
        rep = {**rep, "plots": plots}
        (tmp / "report.json").write_text(json.dumps(rep, indent=1, default=json_default) + "\n")
        (tmp / "index.html").write_text(render_html(rep, plots))
        with interrupts.deferred():  # the report directory is never left half updated
            out.mkdir(exist_ok=True)
            for stale in set(PLOTS.values()) - set(plots.values()):  # a plot this run does not have
                (out / stale).unlink(missing_ok=True)
            for f in tmp.iterdir():
                os.replace(f, out / f.name)
    except OSError as e:
        raise write_error(out, e) from e
    finally:
        if tmp is not None:
            with interrupts.deferred():
                shutil.rmtree(tmp, ignore_errors=True)
    return out / "index.html"


def check_rendering(
    page_path: str | os.PathLike, *, browser: str | None = None, screenshot: str | os.PathLike | None = None, full_page: bool = True
) -> dict[str, Any]:
    """Open a report page in headless Chromium (Debian's ``chromium`` through playwright) and
    say what a reader gets: ``title``, ``images`` (src, decoded width and height), ``findings``
    (number of list items) and ``errors`` (console errors and warnings, page errors, failed
    requests). Optionally saves a full-page ``screenshot`` (PNG). Needs the ``playwright``
    package and a chromium binary (``make setup`` installs both)."""
    from playwright.sync_api import sync_playwright

    exe = browser or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise FileNotFoundError("no chromium binary found; install Debian's chromium (make setup does)")
    errors: list[str] = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = b.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(Path(page_path).resolve().as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete ? i.naturalWidth : 0, i.complete ? i.naturalHeight : 0])")
            result = {
                "title": page.title(),
                "images": [{"src": s, "width": w, "height": h} for s, w, h in images],
                "findings": page.locator("ol.findings li").count(),
                "errors": errors,
            }
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=full_page)
        finally:
            b.close()
    return result
