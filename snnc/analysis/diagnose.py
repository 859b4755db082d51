"""Why the SNN's accuracy moved: per-layer diagnostics and ranked findings.

:func:`diagnose` runs the converted network (reference simulator) and the ANN it came from
side by side on the same samples, layer by layer, and measures:

* accuracy and ANN agreement for every requested T, and the smallest T that reaches 99 % of
  the ANN's accuracy;
* per spiking layer, at the chosen T: threshold (and how it was chosen), neuron variant,
  spike rate, the fraction of *saturated* neurons (a spike at every step, K for a burst
  neuron: the layer cannot represent more), of *silent* ones (no spike in T steps although
  the ANN activation is worth one), of ANN activations *clipped* by the threshold (K·θ for
  a burst neuron), and
  the SNN − ANN error of the layer's time-averaged output (mean, RMS, RMS relative to the
  ANN activation's RMS); spike rates count unit spikes (a burst of k is k spikes, a −θ
  spike of a signed neuron is one), as the energy estimate does; with the per-pass errors the conversion recorded (``insert-if``,
  then each calibration pass);
* per spiking layer, by ablation on a subset: the accuracy the SNN gains when only that layer
  is made exact (its output replaced by the ANN's activation), and when it is made
  quantisation-free but keeps its threshold (replaced by the ANN's activation clipped at θ).
  The first says how much accuracy the layer loses; the split says why: the part recovered
  without changing θ is the finite-T (quantisation) loss, the rest is the clipping loss;
* residual adds whose inputs carry very different spike amplitudes (thresholds);
* attention networks (:mod:`snnc.passes.messages`): the bipolar message neurons are spiking
  layers like the others, compared with the ANN value they carry (``ann_names``), their
  saturation, clipping and silence measured on |value| (they carry signed values), their
  messages (steps with a non-zero graded spike) counted next to their unit spikes. Each
  ``temporal`` op gets a row of its own (``temporal_ops``): the ANN op it replaced, what a
  target needs to run it (:data:`snnc.ir.ops.TEMPORAL_TARGET`), and the error of its
  time-averaged output against the ANN op's; the spike diagnostics and ablations do not apply
  to it (it emits a current, not spikes) and its row says so.

:func:`findings` turns these into plain-language advice ranked by the accuracy at stake.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnc.defaults import DEFAULT_ABLATION_SAMPLES, DEFAULT_REPORT_TIMESTEPS
from snnc.errors import DataError
from snnc.ir.executor import Interpreter, Timed, check_input, iter_batches
from snnc.ir.graph import Graph, Node, Value
from snnc.ir.ops import TEMPORAL_TARGET, neuron_variant
from snnc.metrics import accuracy, check_labels, predictions
from snnc.model import as_batch
from snnc.simulator.budget import check_run_budget
from snnc.simulator.reference import ReferenceSimulator, check_timesteps, default_batch_size, readout_at

RESIDUAL_MIX_RATIO = 2.0  # an add whose inputs' spike amplitudes differ by more than this is reported
TARGET_FRACTION = 0.99  # "the smallest T reaching 99 % of the ANN's accuracy"
TEMPORAL_ERROR = 0.1  # a temporal op whose output is this far (relative RMS) from the ANN op's is reported


@dataclass
class _LayerStats:
    """Streaming sums for one spiking layer at the chosen T."""

    neurons: int
    samples: int = 0
    spikes: float = 0.0
    saturated: float = 0.0
    silent: float = 0.0
    no_spike: float = 0.0
    clipped: float = 0.0
    err_sum: float = 0.0
    err_sq: float = 0.0
    ann_sq: float = 0.0
    count_map: torch.Tensor | None = None  # spikes per neuron, summed over samples
    message_map: torch.Tensor | None = None  # messages (steps with a non-zero output) per neuron, summed over samples
    messages: float = 0.0

    def add(
        self, counts: torch.Tensor, snn_avg: torch.Tensor, ann: torch.Tensor | None, theta: torch.Tensor, T: int, max_spikes: int = 1,
        net: torch.Tensor | None = None, *, bipolar: bool = False, messages: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        """``counts``: unit spikes per neuron in T steps (a burst of k counts k, a −θ spike
        1); ``net``: the net count (positive minus negative spikes; default ``counts``);
        a neuron is saturated at ``max_spikes`` spikes net every step, and its ANN
        activation is clipped above ``max_spikes · θ``. A ``bipolar`` neuron carries signed
        values: saturated at ±K every step, clipped where |ANN| > K·θ, silent where it never
        spikes although |ANN| ≥ θ/T. ``messages``: steps with a non-zero output per neuron
        (one graded message each; default ``counts``)."""
        net = counts if net is None else net
        messages = counts if messages is None else messages
        self.samples += counts.shape[0]
        self.spikes += float(counts.sum(dtype=torch.float64))
        self.messages += float(messages.sum(dtype=torch.float64))
        per_neuron = counts.sum(0, dtype=torch.float64)
        self.count_map = per_neuron if self.count_map is None else self.count_map + per_neuron
        per_neuron = messages.sum(0, dtype=torch.float64)
        self.message_map = per_neuron if self.message_map is None else self.message_map + per_neuron
        self.saturated += float(((net.abs() if bipolar else net) >= max_spikes * T).sum())
        self.no_spike += float((counts == 0).sum())
        if ann is not None:
            mag = ann.abs() if bipolar else ann
            # silent: no spike although the ANN's activation is worth at least one in T steps
            self.silent += float(((counts == 0) & (mag >= theta / T)).sum())
            err = (snn_avg - ann).double()
            self.err_sum += float(err.sum())
            self.err_sq += float((err * err).sum())
            self.ann_sq += float((ann.double() ** 2).sum())
            self.clipped += float((mag > max_spikes * theta).sum())

    def summary(self, T: int, has_ann: bool) -> dict[str, Any]:
        n = max(1, self.neurons * self.samples)
        out = {
            "spike_rate": self.spikes / (n * T),
            "message_rate": self.messages / (n * T),
            "saturated": self.saturated / n,
            "no_spike": self.no_spike / n,
        }
        if has_ann:
            rms = math.sqrt(self.err_sq / n)
            ann_rms = math.sqrt(self.ann_sq / n)
            out.update(
                {
                    "clipped": self.clipped / n,
                    "silent": self.silent / n,
                    "error_mean": self.err_sum / n,
                    "error_rms": rms,
                    "ann_rms": ann_rms,
                    "relative_rms": rms / ann_rms if ann_rms > 0 else None,
                }
            )
        return out


@dataclass
class _ErrorStats:
    """Streaming SNN − ANN error sums of a temporal op's time-averaged output."""

    elements: int
    samples: int = 0
    err_sum: float = 0.0
    err_sq: float = 0.0
    ann_sq: float = 0.0

    def add(self, snn_avg: torch.Tensor, ann: torch.Tensor) -> None:
        self.samples += snn_avg.shape[0]
        err = (snn_avg - ann).double()
        self.err_sum += float(err.sum())
        self.err_sq += float((err * err).sum())
        self.ann_sq += float((ann.double() ** 2).sum())

    def summary(self) -> dict[str, Any]:
        n = max(1, self.elements * self.samples)
        rms, ann_rms = math.sqrt(self.err_sq / n), math.sqrt(self.ann_sq / n)
        return {"error_mean": self.err_sum / n, "error_rms": rms, "ann_rms": ann_rms, "relative_rms": rms / ann_rms if ann_rms > 0 else None}


class Probe:
    """Runs a converted model's SNN and ANN side by side, one batch at a time.

    The SNN runs on the reference simulator's executor (the same equations every backend is
    checked against), whose hooks let a layer's output be watched or replaced (the
    ablations) and a run resume from the values saved just before a layer.
    """

    def __init__(self, model, device: str = "cpu"):
        self.snn: Graph = model.snn
        self.ann: Graph = model.ann
        self.sim = ReferenceSimulator(self.snn, device)
        self.interp = Interpreter(self.ann, device)
        self.layers: list[Node] = [n for n in self.snn.nodes if n.spec.has("neuron")]
        self.temporal: list[Node] = [n for n in self.snn.nodes if n.spec.has("temporal")]
        self.ann_of: dict[str, str] = ann_counterparts(model)
        self.ann_of_temporal: dict[str, str] = temporal_counterparts(model)
        self._watch = [self.ann.node(a) for a in dict.fromkeys([*self.ann_of.values(), *self.ann_of_temporal.values()])]
        self._index = {n.name: i for i, n in enumerate(self.snn.nodes) if n.name in self.ann_of}

    def ann_batch(self, xb: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The ANN's activation of every layer with a spiking counterpart, and its output."""
        got: dict[str, torch.Tensor] = {}
        outs = self.interp.run(xb, observe=lambda n, o: got.__setitem__(n.name, o), watch=self._watch)
        return got, outs[0]

    @torch.no_grad()
    def snn_batch(
        self,
        xb: torch.Tensor,
        steps: Sequence[int],
        *,
        ann: dict[str, torch.Tensor] | None = None,
        replace: dict[str, str] | None = None,
        observe=None,
        snapshots: dict[str, dict[int, Timed]] | None = None,
    ) -> dict[int, torch.Tensor]:
        """The first graph output's time average after each T in ``steps``.

        ``replace={layer: "exact" | "clip"}`` substitutes the ANN's activation of those spiking
        layers (clipped at the threshold for ``"clip"``) for their spikes, as a constant current.
        ``observe(node, Timed)`` is called with every neuron layer's and temporal op's output. A run without
        ``replace`` fills ``snapshots`` (layer -> the values live just before it); a run with
        ``replace`` given the snapshots starts at the replaced layer instead of the input.
        """
        T = max(steps)
        env = start = before = None
        values = None
        if replace:
            values = {name: Timed(self._substitute(self.snn.nodes[self._index[name]], ann[self.ann_of[name]], mode), static=True) for name, mode in replace.items()}
            if snapshots is not None:
                first = min(replace, key=self._index.__getitem__)
                env, start = dict(snapshots[first]), self.snn.nodes[self._index[first]]
        elif snapshots is not None:

            def before(node: Node, live: dict[int, Timed]) -> None:
                if node.name in self._index:
                    snapshots[node.name] = dict(live)

        seen = None if observe is None else (lambda node, out: observe(node, out) if node.spec.has("neuron") or node.spec.has("temporal") else None)
        inputs = () if env is not None else (self.sim.encode(xb, T),)
        outs = self.sim.run(*inputs, timesteps=T, env=env, start=start, before=before, observe=seen, replace=values)
        return readout_at(outs[0], steps)

    def _substitute(self, node: Node, act: torch.Tensor, mode: str) -> torch.Tensor:
        """The ANN activation in place of spikes θ·s(t) (``diagnose`` refuses unit spikes),
        clipped at the most the neuron emits per step (K·θ for a burst of up to K; ±K·θ for a
        bipolar neuron, which carries signed values)."""
        if mode != "clip":
            return act
        top = self.sim.param(node, "threshold") * int(node.attr("max_spikes"))
        if node.attr("bipolar"):
            return torch.maximum(torch.minimum(act, top), -top)
        return torch.minimum(act, top)


def ann_counterparts(model) -> dict[str, str]:
    """``if_neuron`` name -> the ANN ReLU it replaced (recorded by ``insert-if``; for older
    artifacts, the name without the ``_if`` suffix), for the layers found in the ANN with the
    same shape."""
    recorded = model.provenance.get("ann_names") or {}
    ann_nodes = {n.name: n for n in model.ann.nodes}
    out = {}
    for n in model.snn.having("neuron"):
        name = recorded.get(n.name) or (n.name[: -len("_if")] if n.name.endswith("_if") else None)
        a = ann_nodes.get(name) if name else None
        if a is not None and a.output.shape == n.output.shape:
            out[n.name] = name
    return out


def temporal_counterparts(model) -> dict[str, str]:
    """``temporal_<op>`` node name -> the ANN ``<op>`` node it replaced (``insert-if`` names it
    ``<ann name>_t``), for those found in the ANN with the same op and shape."""
    ann_nodes = {n.name: n for n in model.ann.nodes}
    out = {}
    for n in model.snn.nodes:
        if not n.spec.has("temporal") or not n.name.endswith("_t"):
            continue
        a = ann_nodes.get(n.name[: -len("_t")])
        if a is not None and f"temporal_{a.op}" == n.op and a.output.shape == n.output.shape:
            out[n.name] = a.name
    return out


def _score(out: np.ndarray, y: np.ndarray | None, ann_pred: np.ndarray) -> float:
    """Accuracy against the labels, or agreement with the ANN without labels."""
    return accuracy(out, ann_pred if y is None else y)


def diagnose(
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
) -> dict[str, Any]:
    """Measure everything the report shows (JSON-able dict; see the module docstring).

    ``at`` is the T of the per-layer analysis (default: the T the model was converted
    for); ``ablation_samples`` (a seeded random subset; 0 skips the ablations) bounds the
    cost of the per-layer ablations, which run the SNN twice per spiking layer.
    Without labels ``y``, accuracy is replaced by agreement with the ANN.
    """
    x = as_batch(x, "the data")
    check_input(model.snn, x)
    unit = [n.name for n in model.snn.having("neuron") if n.attr("spike_scale") != "threshold"]
    if unit:
        raise DataError(
            f"the report compares each spiking layer with the ANN in the ANN's units, but {unit[0]!r} emits binary spikes "
            "(normalize-weights moved θ into the weights); report on the artifact converted without normalize-weights"
        )
    if y is not None:
        y = check_labels(y, len(x), model.snn.outputs[0].shape)
    at = model.timesteps if at is None else at
    steps = check_timesteps([*check_timesteps(timesteps), at])
    check_run_budget(model.snn, steps, len(x), what="the report's simulation")
    T = steps[-1]
    probe = Probe(model)
    if batch_size is None:
        batch_size = default_batch_size(T, model.snn)
    stats = {n.name: _LayerStats(int(np.prod(n.output.shape))) for n in probe.layers}
    tstats = {n.name: _ErrorStats(int(np.prod(n.output.shape))) for n in probe.temporal if n.name in probe.ann_of_temporal}
    thetas = {n.name: probe.sim.param(n, "threshold") for n in probe.layers}
    snn_out: dict[int, list[np.ndarray]] = {t: [] for t in steps}
    ann_out: list[np.ndarray] = []

    task = progress(f"diagnosing T={T}", len(x)) if progress else None
    for xb in iter_batches(x, batch_size):
        acts, ann_y = probe.ann_batch(xb)
        ann_out.append(ann_y.cpu().numpy())

        def observe(node: Node, out: Timed) -> None:
            seq = out.dense(at)[:at] if out.static else out.data[:at]
            avg = seq.sum(0) / at
            if not node.spec.has("neuron"):  # a temporal op: the error of its time-averaged output
                if node.name in tstats:
                    tstats[node.name].add(avg, acts[probe.ann_of_temporal[node.name]])
                return
            k = int(node.attr("max_spikes"))
            messages = (seq != 0).sum(0, dtype=torch.float64)  # one message per step with a non-zero output
            if k == 1 and not node.attr("signed") and not node.attr("bipolar"):
                counts, net = (seq != 0).sum(0), None
            else:  # burst / signed / bipolar: unit spikes (a burst of k is k), net = positive minus negative
                signed_counts = torch.round(seq / thetas[node.name]).sum(0, dtype=torch.float64)
                counts, net = torch.round(seq.abs() / thetas[node.name]).sum(0, dtype=torch.float64), signed_counts
            a = acts.get(probe.ann_of.get(node.name, ""))
            stats[node.name].add(counts, avg, a, thetas[node.name], at, k, net, bipolar=bool(node.attr("bipolar")), messages=messages)

        res = probe.snn_batch(xb, steps, observe=observe)
        for t in steps:
            snn_out[t].append(res[t].cpu().numpy())
        if task:
            task.advance(len(xb))

    ann_all = np.concatenate(ann_out)
    ann_pred = predictions(ann_all)
    ann_score = _score(ann_all, y, ann_pred)
    per_t = []
    for t in steps:
        out = np.concatenate(snn_out[t])
        per_t.append({"timesteps": t, "accuracy": _score(out, y, ann_pred), "agreement": float(np.mean(predictions(out) == ann_pred))})
    target = TARGET_FRACTION * ann_score
    reaching = [r["timesteps"] for r in per_t if r["accuracy"] >= target]

    layers = _layer_rows(model, probe, stats, at)
    ablation = _ablations(probe, x, y, at, ablation_samples, batch_size, seed, progress) if ablation_samples and probe.ann_of else None
    if ablation:
        for row in layers:
            row.update(ablation["layers"].get(row["layer"], {}))
    return {
        "model": model.snn.name,
        "samples": int(len(x)),
        "labels": y is not None,
        "metric": "accuracy" if y is not None else "agreement with the ANN",
        "converted_for": model.timesteps,
        "calibrated_for": model.calibrated_for,
        "at": at,
        "ann_accuracy": ann_score,
        "timesteps": per_t,
        "target": {"fraction": TARGET_FRACTION, "accuracy": target, "smallest_T": min(reaching) if reaching else None},
        "layers": layers,
        "ablation": None if ablation is None else {k: v for k, v in ablation.items() if k != "layers"},
        "temporal_ops": _temporal_rows(model, probe, tstats),
        "residual_adds": residual_adds(model.snn),
        # per-neuron spike and message rates at ``at`` (arrays; the report turns them into exact operation counts)
        "rate_maps": {k: (v.count_map / (v.samples * at)).numpy() for k, v in stats.items() if v.count_map is not None},
        "message_maps": {k: (v.message_map / (v.samples * at)).numpy() for k, v in stats.items() if v.message_map is not None},
        "calibration": model.provenance.get("calibration"),
        "pipeline": model.provenance.get("pipeline"),
    }


def _layer_rows(model, probe: Probe, stats: dict[str, _LayerStats], at: int) -> list[dict[str, Any]]:
    prov = model.provenance
    balance = (prov.get("records") or {}).get("balance-thresholds") or {}
    passes = pass_errors(prov)
    rows = []
    for n in probe.layers:
        th = n.params["threshold"]
        ann_name = probe.ann_of.get(n.name)
        rec = (balance.get("layers") or {}).get(ann_name or "", {})
        row = {
            "layer": n.name,
            "ann_layer": ann_name,
            "shape": list(n.output.shape),
            "neurons": stats[n.name].neurons,
            "threshold": float(th.mean()),
            "threshold_min": float(th.min()),
            "threshold_max": float(th.max()),
            "threshold_method": balance.get("method"),
            "activation_max": rec.get("activation_max"),
            "dead_channels": rec.get("dead_channels"),
            "reset": n.attr("reset"),
            "neuron": neuron_variant(n.attrs),
            "max_spikes": int(n.attr("max_spikes")),
            "bipolar": bool(n.attr("bipolar")),
            **stats[n.name].summary(at, ann_name is not None),
            "passes": passes.get(n.name, []),
            "notes": [],
        }
        if ann_name is None:
            row["notes"].append("no ANN counterpart of the same shape: error, clipping, silence and ablation do not apply")
        rows.append(row)
    return rows


def _temporal_rows(model, probe: Probe, tstats: dict[str, _ErrorStats]) -> list[dict[str, Any]]:
    """One row per temporal op: what it replaced, what a target needs to run it
    (:data:`snnc.ir.ops.TEMPORAL_TARGET`), and the error of its time-averaged output against
    the ANN op; spike diagnostics and ablations do not apply (it emits a current, not spikes)."""
    rows = []
    for n in probe.temporal:
        ann_name = probe.ann_of_temporal.get(n.name)
        feeds = [u.name for u in n.output.users]
        row = {
            "layer": n.name,
            "op": n.op,
            "mode": n.attr("mode"),
            "ann_layer": ann_name,
            "shape": list(n.output.shape),
            "inputs": [v.name for v in n.inputs],
            "feeds": feeds,
            "target": TEMPORAL_TARGET.get(n.op, "no target requirement is recorded for this op"),
            "not_applicable": "spike rate, saturation, silence, clipping and ablation: a temporal op emits a current (the change of its "
            "running total), which the neuron after it turns into spikes; see that neuron's row",
        }
        if ann_name is not None and n.name in tstats:
            row.update(tstats[n.name].summary())
        else:
            row["notes"] = ["no ANN counterpart of the same op and shape: its error is not measured"]
        rows.append(row)
    return rows


def pass_errors(provenance: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per layer, the SNN − ANN output RMS after ``insert-if`` and after each calibration pass,
    as the calibration passes recorded them at conversion (calibration samples, converted T)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for key, rec in (provenance.get("records") or {}).items():
        if not key.startswith("calibrate-"):
            continue
        for layer in rec.get("layers", []):
            rows = out.setdefault(layer["layer"], [])
            if not rows:
                rows.append({"stage": "insert-if", "mean": layer["before"]["mean"], "rms": layer["before"]["rms"]})
            rows.append({"stage": key, "mean": layer["after"]["mean"], "rms": layer["after"]["rms"]})
    return out


def spiking_inputs(node: Node) -> list[Node]:
    """The nearest spiking layers upstream of ``node`` (through stateless ops)."""
    found: dict[str, Node] = {}
    stack = list(node.inputs)
    while stack:
        p = stack.pop().producer
        if p is None or p.name in found:
            continue
        if p.spec.has("neuron"):
            found[p.name] = p
        else:
            stack.extend(p.inputs)
    return list(found.values())


def _ablations(probe: Probe, x, y, at, samples, batch_size, seed, progress) -> dict[str, Any]:
    """Each spiking layer's own accuracy loss, by ablation on a seeded subset.

    For layer L with upstream spiking layers P(L): A(S) is the accuracy with the layers S
    replaced by the ANN's activations. L's own loss is A(P ∪ {L}) − A(P): what L costs when
    its inputs are exact (the rest of the network still spiking). Replacing L by its ANN
    activation clipped at θ instead separates the finite-T (quantisation) part from the
    clipping part. In a chain the losses add up to A(all) − A(none).
    """
    if samples < len(x):
        idx = np.sort(np.random.default_rng(seed).choice(len(x), size=samples, replace=False))
        xs, ys = x[idx], (None if y is None else y[idx])
    else:
        xs, ys = x, y
    names = [n.name for n in probe.layers if n.name in probe.ann_of]
    plan: dict[str, dict[str, str]] = {"": {}}
    per_layer = {}
    for n in probe.layers:
        if n.name not in probe.ann_of:
            continue
        ups = {u.name: "exact" for u in spiking_inputs(n) if u.name in probe.ann_of}
        keys = {}
        for label, extra in (("inputs", {}), ("exact", {n.name: "exact"}), ("clip", {n.name: "clip"})):
            rep = {**ups, **extra}
            key = ",".join(f"{k}={v}" for k, v in sorted(rep.items()))
            plan[key] = rep
            keys[label] = key
        per_layer[n.name] = keys
    outs: dict[str, list[np.ndarray]] = {k: [] for k in plan}
    ann_out = []
    task = progress(f"ablating {len(names)} layers (T={at})", len(xs) * len(plan)) if progress else None
    for xb in iter_batches(xs, batch_size):
        acts, ann_y = probe.ann_batch(xb)
        ann_out.append(ann_y.cpu().numpy())
        snapshots: dict[str, dict[int, Timed]] = {}
        for key, rep in plan.items():  # "" (no replacement) first: it records where the others resume
            out = probe.snn_batch(xb, [at], ann=acts, replace=rep, snapshots=snapshots)[at]
            outs[key].append(out.cpu().numpy())
            if task:
                task.advance(len(xb))
        del snapshots
    ann_all = np.concatenate(ann_out)
    ann_pred = predictions(ann_all)
    score = {k: _score(np.concatenate(v), ys, ann_pred) for k, v in outs.items()}
    # mean |SNN - ANN| of the output: a continuous measure, less noisy than accuracy on a subset
    err = {k: float(np.mean(np.abs(np.concatenate(v) - ann_all))) for k, v in outs.items()}
    layers = {}
    for n, k in per_layer.items():
        layers[n] = {
            "inputs_exact": list(plan[k["inputs"]]),
            "gain_exact": score[k["exact"]] - score[k["inputs"]],  # what this layer costs, its inputs exact
            "gain_quantisation": score[k["clip"]] - score[k["inputs"]],  # ... of which finite T
            "gain_clipping": score[k["exact"]] - score[k["clip"]],  # ... and clipping at θ
            "error_reduction": err[k["inputs"]] - err[k["exact"]],  # output |SNN − ANN| removed
        }
    return {
        "samples": int(len(xs)),
        "timesteps": at,
        "base_accuracy": score[""],
        "base_output_error": err[""],
        "ann_accuracy": _score(ann_all, ys, ann_pred),
        "layers": layers,
    }


# --------------------------------------------------------------------- residual adds
def _spike_sources(v: Value) -> list[Node]:
    """The spiking layers whose spikes reach ``v`` through data movement only."""
    p = v.producer
    if p is None:
        return []
    if p.spec.has("neuron"):
        return [p]
    if p.spec.has("preserves_amplitude"):  # data movement: the spikes' amplitude passes through
        return [s for u in p.inputs for s in _spike_sources(u)]
    return []


def _next_neurons(v: Value, depth: int = 8) -> list[Node]:
    """The spiking layers the value ``v`` feeds (through stateless ops)."""
    found: list[Node] = []
    for user in v.users:
        if user.spec.has("neuron"):
            found.append(user)
        elif not user.spec.has("readout") and depth > 0:
            found.extend(_next_neurons(user.output, depth - 1))
    return found


def _spike_height(neuron: Node) -> float:
    """The value one spike carries: θ, or 1 for binary (unit) spikes, whose scale is in the
    readers' weights and the add's coefficients."""
    return float(neuron.params["threshold"].mean()) if neuron.attr("spike_scale") == "threshold" else 1.0


def residual_adds(graph: Graph) -> list[dict[str, Any]]:
    """Every ``add`` with the spike amplitudes (thresholds) of the spiking layers feeding each
    input and the threshold of the layer it drives; ``ratio`` is the largest amplitude over
    the smallest among those (1 = balanced)."""
    rows = []
    for add in graph.find("add"):
        inputs = []
        for i, v in enumerate(add.inputs):
            srcs = _spike_sources(v)
            coeff = (add.attr("coeffs") or [None] * len(add.inputs))[i]
            c = 1.0 if coeff is None else float(np.mean(np.abs(coeff)))
            inputs.append(
                {
                    "value": v.name,
                    "from": [s.name for s in srcs],
                    "amplitude": float(np.mean([_spike_height(s) for s in srcs])) * c if srcs else None,
                }
            )
        nxt = _next_neurons(add.output)
        amps = [i["amplitude"] for i in inputs if i["amplitude"] is not None]
        nxt_th = float(np.mean([n.params["threshold"].mean() for n in nxt])) if nxt else None
        scales = amps + ([nxt_th] if nxt_th is not None else [])
        rows.append(
            {
                "add": add.name,
                "inputs": inputs,
                "drives": [n.name for n in nxt],
                "drives_threshold": nxt_th,
                "ratio": (max(scales) / min(scales)) if len(scales) >= 2 and min(scales) > 0 else 1.0,
            }
        )
    return rows


# --------------------------------------------------------------------- findings
def _pct(f: float) -> str:
    return f"{100 * f:.0f} %"


def findings(diag: dict[str, Any], benchmark: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Plain-language findings ranked by the accuracy at stake (``impact``, in points of the
    metric; measured by the ablations where they ran, otherwise estimated)."""
    out: list[dict[str, Any]] = []
    at = diag["at"]
    ann = diag["ann_accuracy"]
    abl = diag.get("ablation")

    # 1. Layers that lose accuracy, by ablation, with the cause.
    for r in diag["layers"]:
        gain = r.get("gain_exact")
        if gain is None:
            continue
        share = r["error_reduction"] / abl["base_output_error"] if abl["base_output_error"] > 0 else 0.0
        if gain < 0.005:
            continue
        q, c = r["gain_quantisation"], r["gain_clipping"]
        head = (
            f"layer {r['layer']} costs {100 * gain:.1f} points at T={at}: with its inputs exact, making it exact too "
            f"removes {100 * share:.0f} % of the output error (ablation on {abl['samples']} samples)."
        )
        if c > q and c > 0:
            raise_it = (
                "Raise its threshold: θ = P(|a|) / K of the value it carries, so a higher message percentile "
                "(insert-if{message_percentile=...}), or more --message-bits (a larger K at the same resolution)."
                if r.get("bipolar")
                else "Raise its threshold: a higher percentile (--threshold percentile:99.9) or --threshold mse."
            )
            advice = (
                f"Most of it is clipping ({100 * c:.1f} points): θ clips {_pct(r.get('clipped', 0))} of its ANN activations and "
                f"{_pct(r['saturated'])} of its neurons saturate. {raise_it}"
            )
            kind = "clipping"
        else:
            advice = (
                f"Most of it is quantisation at T={at} ({100 * q:.1f} points; {_pct(r.get('silent', 0))} of its neurons stay silent although active in the ANN, "
                f"spike rate {r['spike_rate']:.3f}): raise T"
                + (
                    f", or calibrate (--calibration {'advanced' if diag.get('calibration') == 'light' else 'light or advanced'}), "
                    "which corrects the mean error it passes on to the layers after it."
                    if diag.get("calibration") in (None, "none", "light")
                    else " (the model is already fully calibrated)."
                )
            )
            kind = "quantisation"
        out.append({"kind": kind, "layer": r["layer"], "impact": gain, "error_share": share, "text": f"{head} {advice}"})

    # Without ablations: saturation as an estimate.
    if abl is None:
        for r in diag["layers"]:
            if r["saturated"] >= 0.05:
                out.append(
                    {
                        "kind": "clipping",
                        "layer": r["layer"],
                        "impact": None,
                        "text": f"layer {r['layer']} saturates {_pct(r['saturated'])} of its neurons (a spike at every step): raise its percentile or use --threshold mse.",
                    }
                )

    # Temporal ops whose time-averaged output is far from the ANN op's (their cost shows in the neuron after them).
    for r in diag.get("temporal_ops", []):
        rel = r.get("relative_rms")
        if rel is not None and rel >= TEMPORAL_ERROR:
            out.append(
                {
                    "kind": "temporal",
                    "layer": r["layer"],
                    "impact": None,
                    "text": (
                        f"temporal op {r['layer']} ({r['op']}, mode {r['mode']}) is {100 * rel:.0f} % (RMS) off the ANN's {r['ann_layer']} at T={at}: "
                        "its inputs' running means are still far from their limits; more timesteps, or finer messages (--message-bits), reduce it."
                    ),
                }
            )

    # 2. Residual adds mixing spike amplitudes.
    for a in diag.get("residual_adds", []):
        if a["ratio"] < RESIDUAL_MIX_RATIO:
            continue
        amps = ", ".join(f"{i['amplitude']:.2g} (from {', '.join(i['from'])})" for i in a["inputs"] if i["amplitude"] is not None)
        drive = f"; it drives {', '.join(a['drives'])} (θ = {a['drives_threshold']:.2g})" if a["drives"] else ""
        out.append(
            {
                "kind": "residual",
                "layer": a["add"],
                "impact": None,  # what it costs shows in the finding of the layer it drives
                "text": (
                    f"residual add {a['add']} mixes spike amplitudes {amps}{drive}: a ratio of {a['ratio']:.1f}. Each large spike moves the next layer "
                    "by several thresholds at once; per-channel thresholds (--granularity channel) or calibration of the layers it drives reduce the error."
                ),
            }
        )

    # 3. Timesteps.
    per_t = {r["timesteps"]: r for r in diag["timesteps"]}
    smallest = diag["target"]["smallest_T"]
    for t in sorted(per_t):
        loss = ann - per_t[t]["accuracy"]
        if t > at or loss < 0.01:
            continue
        text = f"T={t} loses {100 * loss:.1f} points against the ANN ({100 * per_t[t]['accuracy']:.1f} vs {100 * ann:.1f} %)."
        if smallest is not None:
            text += f" The smallest T reaching 99 % of the ANN's accuracy is {smallest}."
        else:
            text += f" None of the evaluated T (up to {max(per_t)}) reaches 99 % of the ANN's accuracy."
        conv_t = diag.get("converted_for")
        cal_ts = diag.get("calibrated_for") or ([conv_t] if conv_t else [])
        if diag.get("calibration") not in (None, "none") and cal_ts and t not in cal_ts:
            listed = ",".join(map(str, cal_ts))
            hint = (
                f"The model was calibrated for T={listed} and calibration depends on T: to run at T={t}, convert with --timesteps "
                f"{','.join(map(str, sorted({*cal_ts, t})))} first (one artifact calibrated for every listed T)."
            )
        else:
            hint = _calibration_hint(diag.get("calibration"), t, benchmark)
        top = max(per_t)
        top_loss = ann - per_t[top]["accuracy"]
        if top_loss >= 0.01 and top > t:
            hint = (
                f"More timesteps do not close the gap (T={top} still loses {100 * top_loss:.1f} points): the loss is in the thresholds or "
                "the calibration, see the layers below. " + hint
            )
        out.append({"kind": "timesteps", "layer": None, "impact": loss, "text": text + (" " + hint if hint else "")})
        break  # the largest loss is at the smallest T; one finding for the smallest T that loses

    # 4. Silent layers and dead channels (low impact unless the ablation says otherwise).
    for r in diag["layers"]:
        if r.get("silent", 0.0) >= 0.1 and not any(f.get("layer") == r["layer"] for f in out):
            out.append(
                {
                    "kind": "silent",
                    "layer": r["layer"],
                    "impact": r.get("gain_exact"),
                    "text": f"{_pct(r['silent'])} of layer {r['layer']}'s neurons never fire in {at} steps although the ANN activates them by at least θ/T: their information is lost; more timesteps or a lower threshold would let them speak.",
                }
            )
        if r.get("dead_channels"):
            out.append(
                {
                    "kind": "dead",
                    "layer": r["layer"],
                    "impact": 0.0,
                    "text": f"layer {r['layer']} has {r['dead_channels']} channel(s) that never activate on the calibration data; they got the layer's threshold.",
                }
            )
    if not out:
        gap = f"the SNN is within {100 * (ann - per_t[at]['accuracy']):.1f} points of the ANN at T={at}"
        text = f"No layer costs more than 0.5 points at T={at}; {gap}." if abl else f"No per-layer ablation ran (--ablation-samples 0); {gap}."
        out.append({"kind": "ok", "layer": None, "impact": 0.0, "text": text})
    out.sort(key=lambda f: (-(f["impact"] if f["impact"] is not None else 0.0), -f.get("error_share", 0.0)))
    for i, f in enumerate(out, 1):
        f["rank"] = i
    return out


def _calibration_hint(level: str | None, t: int, benchmark: dict[str, Any] | None) -> str:
    if level == "advanced":
        return "The model is already fully calibrated: more timesteps are the remaining lever."
    nxt = "light" if level in (None, "none") else "advanced"
    gain = (benchmark or {}).get(f"{level or 'none'}->{nxt}", {}).get(str(t))
    if gain is not None:
        return f"--calibration {nxt} recovers {100 * gain:.1f} points at T={t} on average in the Fashion-MNIST benchmark (benchmarks/accuracy)."
    return f"Try --calibration {nxt}."


def benchmark_gains(path: str | Path | None = None) -> dict[str, dict[str, float]] | None:
    """Mean accuracy gain of each calibration level over the previous one per T, from the
    committed Fashion-MNIST benchmark (``benchmarks/accuracy/results/fashion_mnist.json``),
    when it is there (a source checkout)."""
    path = Path(path) if path else Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy" / "results" / "fashion_mnist.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    levels = ["none", "light", "advanced"]
    gains: dict[str, dict[str, float]] = {}
    for a, b in zip(levels, levels[1:]):
        per_t: dict[str, list[float]] = {}
        for m in data.get("models", {}).values():
            runs = m.get("snnc", {})
            ra, rb = runs.get(f"{a}, converted for each T"), runs.get(f"{b}, converted for each T")
            if not ra or not rb:
                continue
            for t, acc in rb["accuracy"].items():
                if t in ra["accuracy"]:
                    per_t.setdefault(t, []).append(acc - ra["accuracy"][t])
        gains[f"{a}->{b}"] = {t: float(np.mean(v)) for t, v in per_t.items()}
    return gains
