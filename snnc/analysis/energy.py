"""Operations and energy per layer: the ANN against the converted SNN, on named hardware profiles.

Public API (stable; the CLI and the HTML report call it)::

    from snnc.analysis.energy import estimate_energy, spike_rate_maps, print_energy_table

    res = model.simulate(x, T)                                    # any SimResult
    est = estimate_energy(model, res.spike_rates, T)              # layer-average rates
    est = estimate_energy(model, spike_rate_maps(model, x, T), T) # per-neuron rates: exact counts
    print_energy_table(console, est)                              # a rich table (CLI)

``model`` is a :class:`~snnc.api.SpikingModel` or its SNN-stage graph (``model.snn``);
``spike_rates`` maps ``if_neuron`` names to spikes per neuron per step, either one number per
layer (``SimResult.spike_rates``) or one array per layer with the neuron shape
(:func:`spike_rate_maps`). The result is a JSON-able dict: ``layers`` (one row per layer), ``totals``,
``profiles`` (constants and full citations) and ``settings``; energies are nJ per sample.

What is counted, per sample (see docs/energy.md for the derivation and the caveats):

* **ANN**: the multiply-accumulates (MACs) of every conv / transposed conv / linear layer,
  counted the conventional way (output elements x fan-in, padding included), and one
  activation (bias add + ReLU) per ReLU neuron. Pooling, residual adds and affine ops are
  not counted (they are < 1 % of the MACs in the networks we measured).
* **SNN synaptic operations** (accumulates): every stateless op between a spiking layer and
  the synaptic layer reading it (pooling, reshape, concat, upsample, residual add, affine)
  is treated as part of that layer's synaptic matrix, as a neuromorphic chip holds it
  (docs/lava.md: "the composed synaptic matrix acting on binary spikes"). A spike of neuron
  j then costs one accumulate per path from j to an output of the layer: its *fan-out*
  f_j, computed exactly (a vector-Jacobian product of ones through the ops with every
  weight and coefficient replaced by 1; positions that only meet padding have no path).
  ``snn_synops = T * sum_j r_j * f_j`` with r_j the neuron's spike rate. With per-neuron
  rates this is the exact count of the spikes simulated; with one rate per layer it is
  ``T * r * sum_j f_j`` = T x rate x ``connections``, exact only where the fan-out is
  uniform (a linear layer), an approximation where it is not (padding, strides that skip
  inputs). Spikes that reach a neuron without passing a synaptic layer (the skip branch of
  a residual add, pooling straight into a neuron) get an ``elementwise`` row of their own.
* **SNN dense MACs**: a synaptic layer reading a value that is not spikes (the direct-coded
  analog input, or the output of another synaptic layer with no neuron between) multiplies.
  The analog input is constant, so its layer is computed once per sample and held as a bias
  current (``analog_input="once"``, as the reference simulator and the Lava backends do);
  ``analog_input="per_step"`` charges it every step (T x), as a chip that recomputes it
  would. A time-varying non-spike value always costs T x.
* **Neuron updates**: neurons x T for every ``if_neuron`` and ``readout``; **spikes**
  emitted: T x sum of rates.
* **Burst and signed neurons** (``max_spikes`` = K > 1, ``signed``): rates count
  binary-equivalent unit spikes, so a burst of k spikes in one step is k spikes and k
  synaptic operations per fan-out, and a −θ spike is one spike (one subtracting
  accumulate). On graded-spike hardware a burst is one message carrying k; the count of
  spikes here is the binary-spike equivalent (docs/energy.md).
* **Memory traffic** (bytes, reported, never priced): a no-reuse model. ANN: each MAC reads
  a weight and an input activation, each output is written once. SNN: each synaptic
  operation reads a weight and reads + writes the target's accumulator; each dense MAC reads
  a weight and an input; each neuron update reads + writes its state.

Energies are compute-only estimates (per-operation energies x counts); see
:data:`PROFILES` for the constants and their sources.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from snnc.errors import DataError
from snnc.ir.executor import Executor, static_values
from snnc.ir.graph import Graph, Node, Value
from snnc.ir.ops import unit_spike_entries

ANALOG_INPUT_MODES = ("once", "per_step")


def _synaptic(node: Node) -> bool:
    return node.spec.has("synaptic")


def _traversed(node: Node) -> bool:
    """A stateless linear op without weights (pooling, reshape, concat, add, affine, ...):
    part of the synaptic matrix of the layer that reads it."""
    return node.spec.has("linear") and not node.spec.has("synaptic")

# ----------------------------------------------------------------------------- profiles
HOROWITZ_2014 = (
    'M. Horowitz, "1.1 Computing\'s energy problem (and what we can do about it)", 2014 IEEE International '
    "Solid-State Circuits Conference (ISSCC), Digest of Technical Papers, pp. 10-14, 2014, "
    "doi:10.1109/ISSCC.2014.6757323. Fig. 1.1.9, rough energy per operation in 45 nm at 0.9 V."
)
DAVIES_2018 = (
    "M. Davies, N. Srinivasa, T.-H. Lin, G. Chinya, Y. Cao, S. H. Choday, G. Dimou, P. Joshi, N. Imam, S. Jain, "
    "Y. Liao, C.-K. Lin, A. Lines, R. Liu, D. Mathaikutty, S. McCoy, A. Paul, J. Tse, G. Venkataramanan, Y.-H. Weng, "
    'A. Wild, Y. Yang, H. Wang, "Loihi: A Neuromorphic Manycore Processor with On-Chip Learning", IEEE Micro '
    "38(1):82-99, January/February 2018, doi:10.1109/MM.2018.112130359. Table of pre-silicon core energies "
    "(14 nm, from SDF and SPICE simulation)."
)


@dataclass(frozen=True)
class EnergyProfile:
    """Energy per operation of one hardware target (pJ) and the data widths of its memory
    model (bytes). ``mac_pj`` / ``activation_pj`` are None for a target that runs no ANN."""

    name: str
    description: str
    mac_pj: float | None  # ANN multiply-accumulate
    activation_pj: float | None  # ANN neuron: bias add + ReLU
    ac_pj: float  # SNN synaptic operation: one accumulate of a weight into a target
    dense_mac_pj: float  # SNN multiply-accumulate on a non-spike input (the analog input layer)
    neuron_update_pj: float  # one SNN neuron (or readout) update per step
    spike_pj: float  # one emitted spike
    weight_bytes: int
    activation_bytes: int
    state_bytes: int
    notes: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["notes"], d["sources"] = list(self.notes), list(self.sources)
        return d


_FP32_ADD, _FP32_MULT = 0.9, 3.7  # Horowitz 2014, 45 nm
_INT32_ADD, _INT8_MULT = 0.1, 0.2

PROFILES: dict[str, EnergyProfile] = {
    p.name: p
    for p in (
        EnergyProfile(
            name="cmos45nm",
            description="45 nm CMOS, 32-bit floating point (Horowitz 2014): ANN MAC = fp32 mult + add, SNN synaptic op = fp32 add",
            mac_pj=_FP32_MULT + _FP32_ADD,
            activation_pj=2 * _FP32_ADD,
            ac_pj=_FP32_ADD,
            dense_mac_pj=_FP32_MULT + _FP32_ADD,
            neuron_update_pj=2 * _FP32_ADD,
            spike_pj=_FP32_ADD,
            weight_bytes=4,
            activation_bytes=4,
            state_bytes=4,
            notes=(
                "fp32 add 0.9 pJ, fp32 mult 3.7 pJ (45 nm, 0.9 V).",
                "ANN activation = bias add + ReLU compare = 2 adds; SNN neuron update = current add + threshold compare = 2 adds; "
                "spike = the subtractive reset (1 add). Spike routing is not priced.",
                "Arithmetic only: a 32-bit read from an 8 KB SRAM costs 5 pJ in the same figure, more than a MAC.",
            ),
            sources=(HOROWITZ_2014,),
        ),
        EnergyProfile(
            name="cmos45nm-int8",
            description="45 nm CMOS, 8-bit weights and activations with 32-bit accumulators (Horowitz 2014)",
            mac_pj=_INT8_MULT + _INT32_ADD,
            activation_pj=2 * _INT32_ADD,
            ac_pj=_INT32_ADD,
            dense_mac_pj=_INT8_MULT + _INT32_ADD,
            neuron_update_pj=2 * _INT32_ADD,
            spike_pj=_INT32_ADD,
            weight_bytes=1,
            activation_bytes=1,
            state_bytes=4,
            notes=(
                "int8 mult 0.2 pJ, int32 add 0.1 pJ (45 nm, 0.9 V); int8 add (0.03 pJ) is not used: products and membrane "
                "potentials are accumulated in 32 bits, on both sides.",
                "Same operation model as cmos45nm.",
            ),
            sources=(HOROWITZ_2014,),
        ),
        EnergyProfile(
            name="loihi",
            description="Intel Loihi (14 nm), pre-silicon per-event energies (Davies et al. 2018); the SNN only",
            mac_pj=None,
            activation_pj=None,
            ac_pj=23.6,
            dense_mac_pj=_FP32_MULT + _FP32_ADD,
            neuron_update_pj=81.0,
            spike_pj=1.7,
            weight_bytes=1,
            activation_bytes=4,
            state_bytes=3,
            notes=(
                "Synaptic spike op 23.6 pJ: the table's minimum ('min'), pre-silicon simulation, not a chip measurement.",
                "Neuron update 81 pJ (active); the same table gives 52 pJ for an inactive neuron. IF neurons driven every "
                "step are charged as active.",
                "Spike 1.7 pJ: within-tile delivery only; each tile hop adds 3.0 pJ east-west (north-south figures differ "
                "between secondary sources: 4.0 / 4.2 pJ), which needs a placement and is not priced: a lower bound.",
                "The analog input layer is computed off the neuro-cores (host / embedded CPU) once per sample and held as a "
                "bias current; its MACs are charged at the cmos45nm fp32 MAC (4.6 pJ, Horowitz 2014), a stand-in.",
                "No ANN runs on Loihi: SNN/ANN ratios are given for the CMOS profiles only.",
            ),
            sources=(DAVIES_2018, HOROWITZ_2014),
        ),
    )
}
DEFAULT_PROFILES = ("cmos45nm", "loihi")


def get_profile(name: str | EnergyProfile) -> EnergyProfile:
    if isinstance(name, EnergyProfile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise DataError(f"unknown energy profile {name!r}; choose one of {', '.join(PROFILES)}") from None


# ------------------------------------------------------------------------ ANN counts
def ann_macs(node: Node) -> int:
    """Multiply-accumulates of one conv / transposed conv / linear node per sample, counted
    the conventional way (as examples/common/macs.py): conv and linear: output elements x
    fan-in (padding included); transposed conv: input elements x (C_out / groups x kernel)."""
    w = node.params["weight"]
    per = int(np.prod(w.shape[1:]))
    if node.op == "conv_transpose":
        return int(np.prod(node.inputs[0].shape)) * per
    if node.op in ("conv", "linear"):
        return int(np.prod(node.output.shape)) * per
    raise DataError(f"node {node.name!r} ({node.op}) is not a synaptic layer")  # pragma: no cover - a new synaptic op needs a count


def ann_operations(graph: Graph) -> list[dict[str, Any]]:
    """The ANN's work per sample on a graph of either stage: one row per synaptic layer
    (``macs``) and per ReLU / ``if_neuron`` (``activations`` = its neuron count). Synaptic
    layers keep their names through conversion, so these rows join the SNN rows on ``layer``."""
    rows = []
    for n in graph.nodes:
        if _synaptic(n):
            rows.append({"layer": n.name, "op": n.op, "shape": list(n.output.shape), "macs": ann_macs(n), "activations": 0})
        elif n.spec.has("activation") or n.spec.has("neuron"):
            rows.append({"layer": n.name, "op": n.op, "shape": list(n.output.shape), "macs": 0, "activations": int(np.prod(n.output.shape))})
    return rows


# -------------------------------------------------------------------------- fan-out
def _indicator(node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    """``node``'s linear map with every non-zero weight / coefficient replaced by 1: the
    vector-Jacobian product of ones through it counts paths (synapses)."""
    op = node.op
    attrs = node.attr_dict()
    if _synaptic(node):
        p = {"weight": torch.ones(node.params["weight"].shape, dtype=torch.float64), "bias": None}
        return node.spec.compute(xs, attrs, p)
    if op == "global_avg_pool":
        x = xs[0]
        return x.sum(dim=tuple(range(2, x.dim())), keepdim=bool(attrs["keepdims"]))
    if op == "avg_pool":
        return _sum_pool_indicator(node, xs[0])
    if node.spec.has("preserves_amplitude") and not node.params:  # data movement (reshape, concat, upsample): 0/1 already
        return node.spec.compute(xs, attrs, {})
    if op == "add":
        coeffs = node.attr("coeffs")
        out = None
        for i, x in enumerate(xs):
            if coeffs is not None:
                c = (torch.as_tensor(np.asarray(coeffs[i], dtype=np.float64)) != 0).to(torch.float64)
                if c.dim() == 1 and x.dim() > 2:
                    c = c.view(-1, *([1] * (x.dim() - 2)))
                x = x * c
            out = x if out is None else out + x
        return out
    if op == "affine":
        scale = torch.as_tensor(np.asarray(node.params["scale"], dtype=np.float64))
        return xs[0] * (scale != 0).to(torch.float64)
    raise DataError(f"energy estimate: no operation count for op {op!r} (node {node.name!r})")


def _sum_pool_indicator(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Window membership of an average pool (every real input of a window counts 1,
    whatever the divisor; padding has no input): a depthwise conv with a kernel of ones over
    the input padded to exactly the windows the op has (its output shape, ceil_mode included)."""
    nd = x.dim() - 2
    k = list(node.attr("kernel"))
    s = list(node.attr("strides") or k)
    pads = list(node.attr("pads") or [0] * (2 * nd))
    out_sp = list(node.output.shape[1:])
    fpad: list[int] = []
    crop = [slice(None), slice(None)]
    for i in range(nd):
        length = x.shape[2 + i]
        need = (out_sp[i] - 1) * s[i] + k[i]
        right = need - (length + pads[i])
        crop.append(slice(0, length + min(0, right)))
        fpad = [pads[i], max(0, right)] + fpad  # F.pad lists the last dimension first
    x = F.pad(x[tuple(crop)], fpad)
    c = x.shape[1]
    conv = F.conv1d if nd == 1 else F.conv2d
    y = conv(x, torch.ones((c, 1, *k), dtype=x.dtype), stride=s, groups=c)
    if list(y.shape[2:]) != out_sp:  # pragma: no cover - shape inference and this padding disagree
        raise DataError(f"energy estimate: pooling windows of {node.name!r} do not match its output shape")
    return y


def _upstream(value: Value, inner: dict[int, Node], sources: dict[int, Value]) -> None:
    """Walk back from ``value`` through stateless, non-synaptic ops; collect those ops and
    the values where the walk stops (spikes, graph inputs, synaptic-layer outputs)."""
    p = value.producer
    if p is None or _synaptic(p) or p.spec.stateful:
        sources[id(value)] = value
        return
    if not _traversed(p):
        raise DataError(f"energy estimate: no operation count for op {p.op!r} (node {p.name!r})")
    if id(p) in inner:
        return
    inner[id(p)] = p
    for v in p.inputs:
        _upstream(v, inner, sources)


def fan_out(graph: Graph, target: Node) -> dict[str, np.ndarray]:
    """Per source value (graph input, spiking layer or synaptic layer output) feeding
    ``target``: for every element j, the number of paths f_j from j to ``target``'s outputs
    (a synaptic layer) or to its input (a neuron / readout), every weight counted as one
    synapse. Keys are value names; arrays have the value's shape."""
    inner: dict[int, Node] = {}
    sources: dict[int, Value] = {}
    inputs = target.inputs if _synaptic(target) else target.inputs[:1]
    for v in inputs:
        _upstream(v, inner, sources)
    with torch.enable_grad():
        leaves = {k: torch.zeros((1, *v.shape), dtype=torch.float64, requires_grad=True) for k, v in sources.items()}
        env: dict[int, torch.Tensor] = dict(leaves)
        _Indicators(graph).walk([n for n in graph.nodes if id(n) in inner], env, free=False)
        xs = [env[id(v)] for v in inputs]
        out = _indicator(target, xs) if _synaptic(target) else xs[0]
        out.sum().backward()
    return {v.name: leaves[k].grad[0].numpy().copy() for k, v in sources.items()}


class _Indicators(Executor):
    """The executor on path counts: each node runs its indicator map (:func:`_indicator`)."""

    def run_node(self, node: Node, ins: list[torch.Tensor]) -> torch.Tensor:
        return _indicator(node, ins)


# ---------------------------------------------------------------------- operations
class _Rates:
    """Spike rates per source value: a float (layer average) or an array (per neuron)."""

    def __init__(self, graph: Graph, spike_rates: Mapping[str, Any], input_rate: Any):
        self.graph = graph
        self.rates = spike_rates
        self.input_rate = input_rate
        self.estimated: set[str] = set()

    def of(self, value: Value) -> float | np.ndarray:
        p = value.producer
        r = self.input_rate if p is None else self.rates.get(p.name)
        if r is None and p is not None and p.spec.has("spiking") and p.spec.has("preserves_amplitude"):
            # Not measured (spiking max pooling): the mean rate of the spikes it selects from (an approximation).
            inner: dict[int, Node] = {}
            srcs: dict[int, Value] = {}
            _upstream(p.inputs[0], inner, srcs)
            r = float(np.mean([np.mean(self.of(v)) for v in srcs.values()]))
            self.estimated.add(p.name)
        if r is None:
            name = "the graph input" if p is None else f"spiking layer {p.name!r}"
            raise DataError(f"energy estimate: no spike rate for {name}; pass the SimResult.spike_rates of a simulation of this graph")
        arr = np.asarray(r, dtype=np.float64)
        if arr.ndim == 0:
            return float(arr)
        if tuple(arr.shape) != tuple(value.shape):
            raise DataError(f"energy estimate: spike rates of {value.name!r} have shape {list(arr.shape)}, the layer {list(value.shape)}")
        return arr


def layer_operations(
    graph: Graph,
    spike_rates: Mapping[str, Any],
    timesteps: int,
    input_rate: float | np.ndarray | None = None,
    *,
    analog_input: str = "once",
) -> list[dict[str, Any]]:
    """Operation counts per sample, one row per synaptic layer, elementwise connection and
    neuron layer of the SNN-stage ``graph``, in graph order.

    ``spike_rates``: spikes per neuron per step for every ``if_neuron`` (a float per layer,
    or an array of the layer's shape for exact counts). ``input_rate``: None for the
    direct-coded analog input (the default encoding), or the spike rate of a spike-coded
    input. ``analog_input``: ``"once"`` (the analog layer is computed once per sample) or
    ``"per_step"``. Row fields: ``layer``, ``op``, ``kind`` (synapse / elementwise /
    neuron / readout), ``shape`` (output), ``ann_macs``, ``ann_activations``,
    ``connections`` (synapse paths from real inputs), ``snn_synops``, ``snn_dense_macs``,
    ``input`` (spikes / analog / current / mixed), ``input_rate`` (spike-weighted mean rate
    of its spike inputs), ``rates`` (per-neuron or layer-average), ``neurons``,
    ``neuron_updates``, ``spikes``, ``spike_rate``, ``sources``.
    """
    if graph.stage != "snn":
        raise DataError(f"energy estimate: graph {graph.name!r} is in the {graph.stage.upper()} stage; pass the SNN (model.snn) or use ann_operations")
    if analog_input not in ANALOG_INPUT_MODES:
        raise DataError(f"analog_input must be one of {', '.join(ANALOG_INPUT_MODES)}, got {analog_input!r}")
    T = int(timesteps)
    if T < 1:
        raise DataError(f"timesteps must be a positive integer, got {timesteps}")
    static = static_values(graph, static_inputs=input_rate is None)
    rates = _Rates(graph, spike_rates, input_rate)
    rows: list[dict[str, Any]] = []
    for n in graph.nodes:
        if _synaptic(n):
            row = _synapse_row(graph, n, static, rates, T, analog_input, kind="synapse")
            row["ann_macs"] = ann_macs(n)
            rows.append(row)
        elif n.spec.has("neuron") or n.spec.has("readout"):
            direct = _synapse_row(graph, n, static, rates, T, analog_input, kind="elementwise", skip_synaptic=True)
            if direct is not None:
                src = n.inputs[0].producer
                direct["layer"], direct["op"] = (src.name, src.op) if src is not None and _traversed(src) else (f"{n.name}.input", "direct")
                direct["shape"] = list(n.inputs[0].shape)
                rows.append(direct)
            rows.append(_neuron_row(n, rates, T))
    for name in sorted(rates.estimated):
        for r in rows:
            if name in r["sources"]:
                r["notes"] = r.get("notes", []) + [f"the rate of spiking max pool {name!r} is estimated from its inputs' rates"]
    return rows


def _empty_row(node: Node, kind: str) -> dict[str, Any]:
    return {
        "layer": node.name, "op": node.op, "kind": kind, "shape": list(node.output.shape),
        "ann_macs": 0, "ann_activations": 0, "connections": 0, "snn_synops": 0.0, "snn_dense_macs": 0.0,
        "input": None, "input_rate": None, "rates": None, "neurons": 0, "neuron_updates": 0, "spikes": 0.0,
        "spike_rate": None, "sources": [],
    }  # fmt: skip


def _synapse_row(graph: Graph, node: Node, static: set[int], rates: _Rates, T: int, analog_input: str, *, kind: str, skip_synaptic: bool = False):
    """The synaptic work into ``node`` (a synaptic layer; or, with ``skip_synaptic``, the
    spikes and analog values reaching a neuron / readout without a synaptic layer between)."""
    fo = fan_out(graph, node)
    values = {v.name: v for v in graph.values()}
    row = _empty_row(node, kind)
    kinds: set[str] = set()
    spike_paths, per_neuron, layer_avg = 0.0, False, False
    for name, f in fo.items():
        v = values[name]
        p = v.producer
        if skip_synaptic and p is not None and _synaptic(p):
            continue  # counted in that synaptic layer's own row
        paths = float(f.sum())
        row["connections"] += int(round(paths))
        row["sources"].append(name)
        if id(v) in static:
            kinds.add("analog")
            row["snn_dense_macs"] += paths * (1 if analog_input == "once" else T)
        elif p is None or p.spec.has("spiking"):
            kinds.add("spikes")
            r = rates.of(v)
            if isinstance(r, np.ndarray):
                per_neuron = True
                row["snn_synops"] += T * float((r * f).sum())
            else:
                layer_avg = True
                row["snn_synops"] += T * r * paths
            spike_paths += paths
        else:
            kinds.add("current")  # a time-varying synaptic output read without a neuron between
            row["snn_dense_macs"] += paths * T
    if skip_synaptic and not row["sources"]:
        return None
    row["input"] = kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else None)
    if spike_paths > 0:
        row["input_rate"] = row["snn_synops"] / (T * spike_paths)
        row["rates"] = "per-neuron" if per_neuron and not layer_avg else ("layer-average" if not per_neuron else "mixed")
    return row


def _neuron_row(node: Node, rates: _Rates, T: int) -> dict[str, Any]:
    neuron = node.spec.has("neuron")
    row = _empty_row(node, "neuron" if neuron else "readout")
    neurons = int(np.prod(node.output.shape))
    row["neurons"] = neurons
    row["neuron_updates"] = neurons * T
    if neuron:
        r = rates.of(node.output)
        total = float(np.sum(r)) if isinstance(r, np.ndarray) else r * neurons
        row["ann_activations"] = neurons
        row["spikes"] = T * total
        row["spike_rate"] = total / neurons
        row["rates"] = "per-neuron" if isinstance(r, np.ndarray) else "layer-average"
    return row


# --------------------------------------------------------------------------- energy
_COUNTS = ("ann_macs", "ann_activations", "connections", "snn_synops", "snn_dense_macs", "neurons", "neuron_updates", "spikes")


def _row_energy(row: dict[str, Any], p: EnergyProfile) -> dict[str, Any]:
    out_elems = int(np.prod(row["shape"])) if row["kind"] == "synapse" else 0
    if p.mac_pj is None:
        ann_pj = ann_bytes = None
    else:
        ann_pj = row["ann_macs"] * p.mac_pj + row["ann_activations"] * (p.activation_pj or 0.0)
        ann_bytes = row["ann_macs"] * (p.weight_bytes + p.activation_bytes) + out_elems * p.activation_bytes
    parts = {
        "synops": row["snn_synops"] * p.ac_pj,
        "dense": row["snn_dense_macs"] * p.dense_mac_pj,
        "neurons": row["neuron_updates"] * p.neuron_update_pj,
        "spikes": row["spikes"] * p.spike_pj,
    }
    snn_bytes = (
        row["snn_synops"] * (p.weight_bytes + 2 * p.state_bytes)
        + row["snn_dense_macs"] * (p.weight_bytes + p.activation_bytes)
        + row["neuron_updates"] * 2 * p.state_bytes
    )
    return {
        "ann_nj": None if ann_pj is None else ann_pj / 1e3,
        "snn_nj": sum(parts.values()) / 1e3,
        "snn_parts_nj": {k: v / 1e3 for k, v in parts.items()},
        "ann_bytes": ann_bytes,
        "snn_bytes": snn_bytes,
    }


def estimate_energy(
    model_or_graph: Any,
    spike_rates: Mapping[str, Any],
    timesteps: int,
    profiles: Sequence[str | EnergyProfile] = DEFAULT_PROFILES,
    *,
    input_rate: float | np.ndarray | None = None,
    analog_input: str = "once",
    samples: int | None = None,
) -> dict[str, Any]:
    """Operations and energy of the ANN and the SNN per sample, per layer and in total, on
    each of ``profiles`` (names in :data:`PROFILES` or :class:`EnergyProfile` objects).

    ``model_or_graph``: a SpikingModel or its SNN-stage graph. ``spike_rates`` and
    ``timesteps``: as :func:`layer_operations` (the rates should come from a run of that
    many steps); ``samples``: how many samples the rates were measured on (recorded only).
    Returns a JSON-able dict with ``layers`` (rows), ``totals`` (counts, and per profile ``ann_nj``,
    ``snn_nj``, ``ratio`` = SNN / ANN energy, memory bytes), ``profiles`` and ``settings``.
    """
    graph = getattr(model_or_graph, "snn", model_or_graph)
    profs = [get_profile(p) for p in profiles]
    rows = layer_operations(graph, spike_rates, timesteps, input_rate, analog_input=analog_input)
    totals: dict[str, Any] = {k: 0 for k in _COUNTS}
    per_profile = {p.name: {"ann_nj": 0.0 if p.mac_pj is not None else None, "snn_nj": 0.0, "snn_parts_nj": dict.fromkeys(("synops", "dense", "neurons", "spikes"), 0.0),
                            "ann_bytes": 0 if p.mac_pj is not None else None, "snn_bytes": 0.0} for p in profs}  # fmt: skip
    for row in rows:
        for k in _COUNTS:
            totals[k] += row[k]
        row["energy"] = {}
        for p in profs:
            e = _row_energy(row, p)
            row["energy"][p.name] = {k: e[k] for k in ("ann_nj", "snn_nj")}
            row["energy"][p.name]["ann_bytes"], row["energy"][p.name]["snn_bytes"] = e["ann_bytes"], e["snn_bytes"]
            t = per_profile[p.name]
            for k in ("ann_nj", "ann_bytes"):
                if t[k] is not None:
                    t[k] += e[k]
            t["snn_nj"] += e["snn_nj"]
            t["snn_bytes"] += e["snn_bytes"]
            for k, v in e["snn_parts_nj"].items():
                t["snn_parts_nj"][k] += v
    for t in per_profile.values():
        t["ratio"] = t["snn_nj"] / t["ann_nj"] if t["ann_nj"] else None
    syn = [r for r in rows if r["kind"] in ("synapse", "elementwise")]
    exact = all(r["rates"] in (None, "per-neuron") for r in rows)
    totals["synops_per_ann_mac"] = totals["snn_synops"] / totals["ann_macs"] if totals["ann_macs"] else None
    totals["energy"] = per_profile
    return {
        "timesteps": int(timesteps),
        "samples": None if samples is None else int(samples),
        "settings": {
            "input": "analog (direct coding)" if input_rate is None else "spikes",
            "analog_input": analog_input,
            "rates": "per-neuron" if exact else "layer-average",
            "units": "counts and nJ per sample; bytes per sample",
        },
        "layers": rows,
        "totals": totals,
        "synaptic_layers": len(syn),
        "profiles": {p.name: p.as_dict() for p in profs},
        "caveats": [
            "Estimates: per-operation energies x operation counts (compute only); memory traffic is counted in bytes but not priced.",
            "SNN synaptic operations assume event-driven execution with pooling and other stateless ops folded into the synaptic matrix.",
            "Loihi figures are pre-silicon per-event minima; spike routing between tiles is not priced.",
        ]
        + ([] if exact else ["Layer-average spike rates: exact where a layer's fan-out is uniform, an approximation elsewhere (padding, strides)."]),
    }


# ------------------------------------------------------------------ exact spike maps
def spike_rate_maps(
    model_or_graph: Any,
    x: np.ndarray,
    timesteps: int | Sequence[int],
    *,
    batch_size: int | None = None,
    encoding: str = "direct",
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, np.ndarray] | dict[int, dict[str, np.ndarray]]:
    """Spikes per neuron per step, one array per ``if_neuron`` (and ``spiking_max_pool``
    output) with the layer's shape, from the reference simulator run on ``x``; their means
    are ``SimResult.spike_rates``. Passed to :func:`estimate_energy`, they make the
    synaptic-operation counts exact. With a list of T, one run to the largest T gives the
    maps of every T (the first t steps of a run are a run of t steps): ``{T: maps}``."""
    steps = [int(timesteps)] if isinstance(timesteps, (int, np.integer)) else sorted({int(t) for t in timesteps})
    maps, _ = count_spikes(model_or_graph, x, steps, batch_size=batch_size, encoding=encoding, seed=seed, device=device)
    return maps[steps[0]] if isinstance(timesteps, (int, np.integer)) else maps


def _spike_unit(node: Node) -> tuple[torch.Tensor | None, int] | None:
    """What one unit spike in the output of the spiking ``node`` is worth: None for binary
    spikes (the plain neuron: every non-zero entry is one spike), else ``(θ, K)`` for a
    burst / signed neuron's counts (θ None for unit-scale spikes). A spiking max pool
    carries the spikes of the neuron it reads (through data movement)."""
    n = node
    while not n.spec.has("neuron"):
        if not n.inputs or n.inputs[0].producer is None or not n.spec.has("preserves_amplitude"):
            return None
        n = n.inputs[0].producer
    k, signed = int(n.attr("max_spikes")), bool(n.attr("signed"))
    if k == 1 and not signed:
        return None
    if n.attr("spike_scale") != "threshold":
        return None, k
    theta = torch.as_tensor(np.asarray(n.params["threshold"], dtype=np.float32))
    if n is not node:  # through pooling / padding: only a threshold per channel (or one) still applies
        try:
            torch.broadcast_shapes(theta.shape, tuple(node.output.shape))
        except RuntimeError:
            return None
        if theta.dim() >= 1 and theta.numel() > 1 and any(d != 1 for d in theta.shape[1:]):
            return None
    return theta, k


def spike_units(y: torch.Tensor, unit: tuple[torch.Tensor | None, int] | None) -> torch.Tensor:
    """Unit spikes per entry of a spiking value ``y`` (float64): binary-equivalent spikes, so
    a burst of k counts k and a −θ spike counts 1 (``|y| / θ``, or ``|y|`` for unit-scale
    spikes); the plain neuron's non-zero entries (``unit`` None, see :func:`_spike_unit`)."""
    if unit is None:
        return (y != 0).to(torch.float64)
    return unit_spike_entries(y, unit[0])


def count_spikes(
    model_or_graph: Any,
    x: np.ndarray,
    steps: Sequence[int],
    *,
    batch_size: int | None = None,
    encoding: str = "direct",
    seed: int = 0,
    device: str = "cpu",
) -> tuple[dict[int, dict[str, np.ndarray]], dict[int, list[np.ndarray]]]:
    """One reference-simulator run to max(steps): per-neuron spike rates after each T in
    ``steps`` (as :func:`spike_rate_maps`) and the graph outputs after each T. Spikes are
    unit spikes (:func:`spike_units`): a burst of k counts k, a −θ spike 1."""
    from snnc.ir.executor import check_input, run_batched
    from snnc.simulator.reference import ReferenceSimulator, check_timesteps, default_batch_size

    graph = getattr(model_or_graph, "snn", model_or_graph)
    x = np.asarray(x, dtype=np.float32)
    check_input(graph, x)
    steps = check_timesteps(steps)
    T = steps[-1]
    counts: dict[int, dict[str, torch.Tensor]] = {t: {} for t in steps}
    spiking = graph.having("spiking")

    units = {n.name: _spike_unit(n) for n in spiking}

    def observe(node: Node, out) -> None:
        if out.static:
            return
        per_step = spike_units(out.data, units[node.name]).sum(dim=1, dtype=torch.float64)  # [T, *shape]
        cum = torch.cumsum(per_step, dim=0)
        for t in steps:
            c = counts[t]
            c[node.name] = c[node.name] + cum[t - 1] if node.name in c else cum[t - 1].clone()

    sim = ReferenceSimulator(graph, device)
    gen = torch.Generator(device=device).manual_seed(seed)
    bs = batch_size or default_batch_size(T, graph, str(torch.device(device).type))
    outs = run_batched(x, bs, lambda xb: sim.simulate(xb, steps, encoding=encoding, generator=gen, observe=observe, watch=spiking))
    maps: dict[int, dict[str, np.ndarray]] = {}
    for t in steps:
        maps[t] = {name: (c / (len(x) * t)).cpu().numpy() for name, c in counts[t].items()}
        for n in graph.having("neuron"):  # a layer that never ran still gets its (zero) map
            maps[t].setdefault(n.name, np.zeros(n.output.shape))
    return maps, outs


# ---------------------------------------------------------------------------- table
def format_count(v: float | None) -> str:
    if v is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def format_energy(nj: float | None) -> str:
    if nj is None:
        return "-"
    if abs(nj) >= 1e6:
        return f"{nj / 1e6:.3g} mJ"
    if abs(nj) >= 1e3:
        return f"{nj / 1e3:.3g} µJ"
    if abs(nj) >= 1:
        return f"{nj:.3g} nJ"
    return f"{nj * 1e3:.3g} pJ"


def energy_title(est: dict[str, Any], where: str | None = None) -> str:
    src = f"spike rates on {est['samples']} {where or ''} samples".replace("  ", " ") if est.get("samples") else "the given spike rates"
    return f"Operations and energy per sample (T={est['timesteps']}, estimated from {src})"


def print_energy_table(console, est: dict[str, Any], *, where: str | None = None) -> None:
    """Per synaptic layer: ANN MACs, SNN synaptic operations (and dense MACs on the analog
    input), their ratio and the input spike rate; then the totals with energy per profile."""
    from rich.table import Table

    title = energy_title(est, where)
    table = Table(title=title, min_width=len(title))  # a narrow table would wrap its title
    for col in ("layer", "op", "ANN MACs", "SNN SynOps", "SynOps/MAC", "input rate"):
        table.add_column(col, justify="left" if col in ("layer", "op") else "right", overflow="fold")
    for r in est["layers"]:
        if r["kind"] not in ("synapse", "elementwise"):
            continue
        parts = [format_count(r["snn_synops"])] if r["input"] != "analog" else []
        if r["snn_dense_macs"]:
            parts.append(f"{format_count(r['snn_dense_macs'])} MACs")
        synops = " + ".join(parts) or "0"
        ratio = f"{r['snn_synops'] / r['ann_macs']:.2f}" if r["ann_macs"] and r["input"] != "analog" else "-"
        rate = f"{r['input_rate']:.3f}" if r["input_rate"] is not None else ("analog" if r["input"] == "analog" else "-")
        table.add_row(r["layer"], r["op"], format_count(r["ann_macs"]) if r["ann_macs"] else "-", synops, ratio, rate)
    t = est["totals"]
    table.add_section()
    ratio = f"{t['synops_per_ann_mac']:.2f}" if t["synops_per_ann_mac"] is not None else "-"
    dense = f" + {format_count(t['snn_dense_macs'])} MACs" if t["snn_dense_macs"] else ""
    table.add_row("total", "", format_count(t["ann_macs"]), format_count(t["snn_synops"]) + dense, ratio, "")
    console.print(table)
    lines = [
        f"SNN: {format_count(t['neuron_updates'])} neuron updates, {format_count(t['spikes'])} spikes; "
        f"ANN: {format_count(t['ann_activations'])} activations ({est['settings']['rates']} rates)"
    ]
    for name, e in t["energy"].items():
        if e["ann_nj"] is not None:
            lines.append(f"{name}: ANN {format_energy(e['ann_nj'])}, SNN {format_energy(e['snn_nj'])} (SNN/ANN {e['ratio']:.2f})")
        else:
            lines.append(f"{name}: SNN {format_energy(e['snn_nj'])} (no ANN on this target)")
    lines.append("Estimates: compute only (operations x per-op energy), memory traffic not priced; see docs/energy.md.")
    for line in lines:
        console.print(line)


def parse_profiles(names: Iterable[str] | str | None) -> tuple[str, ...]:
    """Profile names from a CLI value (repeated options and/or comma-separated); the
    defaults when empty. Unknown names raise a DataError listing the known ones."""
    if not names:
        return DEFAULT_PROFILES
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for n in names:
        out += [s.strip() for s in n.split(",") if s.strip()]
    for n in out:
        get_profile(n)
    return tuple(out)
