"""Operations and energy per layer: the ANN against the converted SNN, on named hardware profiles.

Public API (stable; the CLI and the HTML report call it)::

    from snnc.analysis.energy import activity_maps, estimate_energy, spike_rate_maps, print_energy_table

    res = model.simulate(x, T)                                    # any SimResult
    est = estimate_energy(model, res.spike_rates, T)              # layer-average rates
    est = estimate_energy(model, spike_rate_maps(model, x, T), T) # per-neuron rates: exact counts
    spikes, messages = activity_maps(model, x, T)                 # attention networks: + graded messages
    est = estimate_energy(model, spikes, T, message_rates=messages)
    print_energy_table(console, est)                              # a rich table (CLI)

``model`` is a :class:`~snnc.api.SpikingModel` or its SNN-stage graph (``model.snn``);
``spike_rates`` maps ``if_neuron`` names to spikes per neuron per step, either one number per
layer (``SimResult.spike_rates``) or one array per layer with the neuron shape
(:func:`spike_rate_maps`). The result is a JSON-able dict: ``layers`` (one row per layer), ``totals``,
``profiles`` (constants and full citations) and ``settings``; energies are nJ per sample.

What is counted, per sample (see docs/energy.md for the derivation and the caveats):

* **ANN**: the multiply-accumulates (MACs) of every conv / transposed conv / linear layer,
  counted the conventional way (output elements x fan-in, padding included), and one
  activation (bias add + ReLU) per ReLU neuron (a bipolar message neuron replaces none).
  Pooling, residual adds and affine ops are not counted (they are < 1 % of the MACs in the
  networks we measured); an attention network's nonlinear ops are ``ann_host_ops`` (below).
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
  emitted: T x sum of rates; **messages** (the events priced as spikes): the spikes of a
  binary-counted layer, the graded messages of a graded one.
* **Burst and signed neurons** (``max_spikes`` = K > 1, ``signed``): rates count
  binary-equivalent unit spikes, so a burst of k spikes in one step is k spikes and k
  synaptic operations per fan-out, and a −θ spike is one spike (one subtracting
  accumulate). On graded-spike hardware a burst is one message carrying k; the count of
  spikes here is the binary-spike equivalent (docs/energy.md).
* **Graded messages** (attention networks, :mod:`snnc.passes.messages`): a ``bipolar``
  neuron (K > 1) sends one graded spike per step at most, its signed count as payload. It
  is counted in **messages**: one per non-zero output (``message_rates``: non-zeros per
  neuron per step, from :func:`activity_maps`; without them bounded by min(1, r_j), and the
  rows say so). On graded-spike hardware a message costs one multiply-accumulate (payload x
  weight) per fan-out, not |count| accumulates: ``graded_synops = T * sum_j m_j * f_j``
  (m_j the message rate), priced at the profile's MAC energy (``dense_mac_pj``), kept apart
  from ``snn_synops``; the binary-equivalent count is reported as ``unit_equivalent_synops``
  (not priced). Its spike energy is per message. ``graded="burst"`` counts every neuron of
  K > 1 this way; by default burst and signed neurons keep the binary-equivalent rule above.
* **Host ops** (``kind`` "host", one row per ``temporal`` op: host-side or
  programmable-neuron work, :data:`snnc.ir.ops.TEMPORAL_TARGET`), per sample, priced at
  the profile's MAC energy and kept out of the synaptic totals. ``temporal_matmul``
  ([..., n, k] @ [..., k, m], running sums A, B): updating A B by this step's messages costs
  nnz(a_t) m + nnz(b_t) n MACs per leading index (each message multiplies a row / column of
  the other running sum); summed over the steps that is m x (messages of a) + n x (messages
  of b), exact from per-neuron message rates (moved through the data movement between the
  neuron and the op); recomputing A B from the running sums costs L n k m per step instead,
  and the cheaper of the two is counted (``host_detail`` has both). ``temporal_layer_norm``:
  per step and token 4 D operations (mean, variance, normalise, scale + shift) plus one
  reciprocal square root; ``temporal_softmax``: 3 n per step and row of n (exp, sum,
  divide); ``temporal_gelu`` / ``temporal_silu``: one lookup per element per step. These
  three run every step (the running mean moves every step). The ANN's counterparts (its
  matmuls, layer norms, softmaxes, GELU / SiLU, evaluated once) are ``ann_host_ops``,
  priced at its MAC energy.
* **Memory traffic** (bytes, reported, never priced): a no-reuse model. ANN: each MAC reads
  a weight and an input activation, each output is written once. SNN: each synaptic
  operation (graded ones too) reads a weight and reads + writes the target's accumulator;
  each dense MAC reads a weight and an input; each neuron update reads + writes its state.
  Host ops' traffic is not counted.

Energies are compute-only estimates (per-operation energies x counts); see
:data:`PROFILES` for the constants and their sources.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from snnc.errors import DataError
from snnc.ir.executor import static_values
from snnc.ir.graph import Graph, Node, Value
from snnc.ir.indicator import Indicators, indicator
from snnc.ir.ops import TEMPORAL_TARGET, unit_spike_entries

ANALOG_INPUT_MODES = ("once", "per_step")
GRADED_MODES = ("bipolar", "burst")  # which neurons send graded messages (see the module docstring)


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
    (``macs``), per ReLU / ``if_neuron`` (``activations`` = its neuron count) and per
    nonlinear op (matmul, layer norm, softmax, GELU / SiLU) or its temporal counterpart
    (``host_ops``: :func:`host_operations`, evaluated once). Synaptic layers keep their
    names through conversion, so these rows join the SNN rows on ``layer``."""
    rows = []
    for n in graph.nodes:
        row = {"layer": n.name, "op": n.op, "shape": list(n.output.shape), "macs": 0, "activations": 0, "host_ops": 0}
        if _synaptic(n):
            rows.append({**row, "macs": ann_macs(n)})
        elif n.spec.has("activation") or (n.spec.has("neuron") and not n.attr("bipolar")):
            rows.append({**row, "activations": int(np.prod(n.output.shape))})
        elif n.spec.has("nonlinear") or n.spec.has("temporal"):
            rows.append({**row, "host_ops": host_operations(n)[0]})
    return rows


# -------------------------------------------------------------------------- fan-out
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
        Indicators(graph).walk([n for n in graph.nodes if id(n) in inner], env, free=False)
        xs = [env[id(v)] for v in inputs]
        out = indicator(target, xs) if _synaptic(target) else xs[0]
        out.sum().backward()
    return {v.name: leaves[k].grad[0].numpy().copy() for k, v in sources.items()}


# ---------------------------------------------------------------------- operations
def _spiking_neuron(value: Value) -> Node | None:
    """The neuron whose spikes ``value`` carries (itself, or through a spiking max pool /
    data movement), or None (a graph input, a value that is not spikes)."""
    n = value.producer
    while n is not None and not n.spec.has("neuron"):
        if not n.inputs or not n.spec.has("preserves_amplitude"):
            return None
        n = n.inputs[0].producer
    return n


def _sends_graded(neuron: Node | None, graded: str) -> bool:
    """Whether ``neuron`` sends graded messages (one per non-zero count, its payload the
    count): every bipolar neuron of K > 1; with ``graded="burst"`` every neuron of K > 1.
    K = 1 (plain, signed) spikes are binary: one unit spike is one message."""
    if neuron is None or int(neuron.attr("max_spikes")) == 1:
        return False
    return bool(neuron.attr("bipolar")) or graded == "burst"


class _Rates:
    """Spike rates per source value: a float (layer average) or an array (per neuron); and
    message rates (non-zero entries per element per step) for graded-message layers."""

    def __init__(self, graph: Graph, spike_rates: Mapping[str, Any], input_rate: Any, message_rates: Mapping[str, Any] | None = None, graded: str = "bipolar"):
        self.graph = graph
        self.rates = spike_rates
        self.input_rate = input_rate
        self.message_rates = message_rates or {}
        self.graded = graded
        self.estimated: set[str] = set()
        self.bounded: set[str] = set()  # graded layers whose message rates are bounded from unit-spike rates
        self.measured: set[str] = set()

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
        return self._check(value, r, "spike rates")

    @staticmethod
    def _check(value: Value, r: Any, what: str) -> float | np.ndarray:
        arr = np.asarray(r, dtype=np.float64)
        if arr.ndim == 0:
            return float(arr)
        if tuple(arr.shape) != tuple(value.shape):
            raise DataError(f"energy estimate: {what} of {value.name!r} have shape {list(arr.shape)}, the layer {list(value.shape)}")
        return arr

    def graded_source(self, value: Value) -> bool:
        return value.producer is not None and _sends_graded(_spiking_neuron(value), self.graded)

    def messages_of(self, value: Value) -> tuple[float | np.ndarray, str]:
        """Messages (non-zero entries) per element per step of the spike value ``value`` and
        how they are known: ``exact`` (binary or ±1 spikes: one message per unit spike),
        ``measured`` (``message_rates``) or ``bound`` (min(1, unit-spike rate): a message
        carries at least one unit spike and a neuron sends at most one per step)."""
        r = self.of(value)
        p = value.producer
        n = None if p is None else _spiking_neuron(value)
        if p is None or n is None or int(n.attr("max_spikes")) == 1:
            return r, "exact"
        m = self.message_rates.get(p.name)
        if m is None:
            self.bounded.add(p.name)
            return (np.minimum(r, 1.0) if isinstance(r, np.ndarray) else min(r, 1.0)), "bound"
        self.measured.add(p.name)
        return self._check(value, m, "message rates"), "measured"


def layer_operations(
    graph: Graph,
    spike_rates: Mapping[str, Any],
    timesteps: int,
    input_rate: float | np.ndarray | None = None,
    *,
    analog_input: str = "once",
    message_rates: Mapping[str, Any] | None = None,
    graded: str = "bipolar",
) -> list[dict[str, Any]]:
    """Operation counts per sample, one row per synaptic layer, elementwise connection,
    neuron layer and temporal (host) op of the SNN-stage ``graph``, in graph order.

    ``spike_rates``: spikes per neuron per step for every ``if_neuron`` (a float per layer,
    or an array of the layer's shape for exact counts), in unit spikes. ``message_rates``:
    messages (non-zero outputs) per neuron per step of the layers that send graded messages
    (same forms; :func:`activity_maps`); without them a graded layer's messages are bounded
    by min(1, unit-spike rate), and the rows say so. ``graded``: ``"bipolar"`` (bipolar
    neurons send graded messages, the default) or ``"burst"`` (every neuron of K > 1 too).
    ``input_rate``: None for the direct-coded analog input (the default encoding), or the
    spike rate of a spike-coded input. ``analog_input``: ``"once"`` (the analog layer is
    computed once per sample) or ``"per_step"``. Row fields: ``layer``, ``op``, ``kind``
    (synapse / elementwise / neuron / readout / host), ``shape`` (output), ``ann_macs``,
    ``ann_activations``, ``ann_host_ops``, ``connections`` (synapse paths from real inputs),
    ``snn_synops``, ``graded_synops``, ``unit_equivalent_synops``, ``snn_dense_macs``,
    ``host_ops`` (and ``host_detail``), ``input`` (spikes / analog / current / mixed),
    ``input_rate`` (spike-weighted mean rate of its binary-counted spike inputs),
    ``message_rate`` (of its graded inputs; of a graded neuron layer: its own), ``rates``
    (per-neuron or layer-average), ``messages_from``, ``neurons``, ``neuron_updates``,
    ``spikes``, ``messages``, ``graded``, ``spike_rate``, ``sources``.
    """
    if graph.stage != "snn":
        raise DataError(f"energy estimate: graph {graph.name!r} is in the {graph.stage.upper()} stage; pass the SNN (model.snn) or use ann_operations")
    if analog_input not in ANALOG_INPUT_MODES:
        raise DataError(f"analog_input must be one of {', '.join(ANALOG_INPUT_MODES)}, got {analog_input!r}")
    if graded not in GRADED_MODES:
        raise DataError(f"graded must be one of {', '.join(GRADED_MODES)}, got {graded!r}")
    T = int(timesteps)
    if T < 1:
        raise DataError(f"timesteps must be a positive integer, got {timesteps}")
    static = static_values(graph, static_inputs=input_rate is None)
    rates = _Rates(graph, spike_rates, input_rate, message_rates, graded)
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
        elif n.spec.has("temporal"):
            rows.append(_host_row(n, rates, T, static))
    for name in sorted(rates.estimated):
        for r in rows:
            if name in r["sources"]:
                r["notes"] = r.get("notes", []) + [f"the rate of spiking max pool {name!r} is estimated from its inputs' rates"]
    for name in sorted(rates.bounded):
        for r in rows:
            if name in r["sources"] or (r["kind"] == "neuron" and r["layer"] == name):
                r["notes"] = r.get("notes", []) + [
                    f"the messages of {name!r} are bounded by min(1, its unit-spike rate) per neuron and step (no message rates given: "
                    "pass message_rates from activity_maps for exact counts)"
                ]
    return rows


def _empty_row(node: Node, kind: str) -> dict[str, Any]:
    return {
        "layer": node.name, "op": node.op, "kind": kind, "shape": list(node.output.shape),
        "ann_macs": 0, "ann_activations": 0, "ann_host_ops": 0, "connections": 0, "snn_synops": 0.0, "graded_synops": 0.0,
        "unit_equivalent_synops": 0.0, "snn_dense_macs": 0.0, "host_ops": 0.0,
        "input": None, "input_rate": None, "message_rate": None, "rates": None, "messages_from": None, "neurons": 0,
        "neuron_updates": 0, "spikes": 0.0, "messages": 0.0, "graded": False, "spike_rate": None, "sources": [],
    }  # fmt: skip


def _weighted(r: float | np.ndarray, f: np.ndarray, paths: float) -> float:
    """Σ_j r_j f_j (r per neuron), or r · Σ_j f_j (one rate for the layer)."""
    return float((r * f).sum()) if isinstance(r, np.ndarray) else r * paths


def _synapse_row(graph: Graph, node: Node, static: set[int], rates: _Rates, T: int, analog_input: str, *, kind: str, skip_synaptic: bool = False):
    """The synaptic work into ``node`` (a synaptic layer; or, with ``skip_synaptic``, the
    spikes and analog values reaching a neuron / readout without a synaptic layer or a
    temporal op between: those are counted in that layer's or op's own row)."""
    fo = fan_out(graph, node)
    values = {v.name: v for v in graph.values()}
    row = _empty_row(node, kind)
    kinds: set[str] = set()
    spike_paths = graded_paths = 0.0
    per_neuron = layer_avg = False
    hows: set[str] = set()
    for name, f in fo.items():
        v = values[name]
        p = v.producer
        if skip_synaptic and p is not None and (_synaptic(p) or p.spec.has("temporal")):
            continue  # counted in that synaptic layer's (host op's) own row
        paths = float(f.sum())
        row["connections"] += int(round(paths))
        row["sources"].append(name)
        if id(v) in static:
            kinds.add("analog")
            row["snn_dense_macs"] += paths * (1 if analog_input == "once" else T)
        elif p is None or p.spec.has("spiking"):
            kinds.add("spikes")
            r = rates.of(v)
            if rates.graded_source(v):
                m, how = rates.messages_of(v)
                hows.add(how)
                row["graded_synops"] += T * _weighted(m, f, paths)
                row["unit_equivalent_synops"] += T * _weighted(r, f, paths)
                graded_paths += paths
                r = m
            else:
                row["snn_synops"] += T * _weighted(r, f, paths)
                spike_paths += paths
            if isinstance(r, np.ndarray):
                per_neuron = True
            else:
                layer_avg = True
        else:
            kinds.add("current")  # a time-varying synaptic (or host op) output read without a neuron between
            row["snn_dense_macs"] += paths * T
    if skip_synaptic and not row["sources"]:
        return None
    row["input"] = kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else None)
    if spike_paths > 0:
        row["input_rate"] = row["snn_synops"] / (T * spike_paths)
    if graded_paths > 0:
        row["message_rate"] = row["graded_synops"] / (T * graded_paths)
        row["messages_from"] = hows.pop() if len(hows) == 1 else "mixed"
    if spike_paths > 0 or graded_paths > 0:
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
        row["ann_activations"] = 0 if node.attr("bipolar") else neurons  # a bipolar neuron carries a value, it replaces no activation
        row["spikes"] = T * total
        row["spike_rate"] = total / neurons
        row["rates"] = "per-neuron" if isinstance(r, np.ndarray) else "layer-average"
        row["messages"] = row["spikes"]  # binary-equivalent accounting: each unit spike is an event
        if _sends_graded(node, rates.graded):
            m, how = rates.messages_of(node.output)
            msgs = float(np.sum(m)) if isinstance(m, np.ndarray) else m * neurons
            row.update(graded=True, messages=T * msgs, message_rate=msgs / neurons, messages_from=how)
    return row


# ------------------------------------------------------------------------ host ops
_DATA_MOVEMENT = ("reshape", "transpose", "slice", "select", "pad", "upsample")


def _scalar_scale(node: Node) -> bool:
    """A multiplication by one non-zero constant (attention's 1/sqrt(d)): messages stay messages."""
    if node.op != "affine":
        return False
    scale, shift = np.asarray(node.params["scale"]), np.asarray(node.params["shift"])
    return scale.size == 1 and float(scale.reshape(-1)[0]) != 0 and not np.any(shift)


def _input_messages(value: Value, rates: _Rates, static: set[int]) -> tuple[float | np.ndarray, str]:
    """Messages per element per step of a temporal op's input ``value``: the message rates
    of the spike train it is (through data movement and scalar scaling, moved as the data
    is), or 1 (``dense``: every element every step) for a value that is not spikes."""
    chain: list[Node] = []
    v = value
    while v.producer is not None and not v.producer.spec.has("spiking"):
        p = v.producer
        if len(p.inputs) != 1 or not (p.op in _DATA_MOVEMENT or _scalar_scale(p)):
            return 1.0, "dense"
        chain.append(p)
        v = p.inputs[0]
    if id(v) in static:
        return 1.0, "dense"
    m, how = rates.messages_of(v)
    if not isinstance(m, np.ndarray):
        return m, how  # one rate for the layer: the same for every element it moves
    x = torch.as_tensor(m)[None]
    for node in reversed(chain):
        if node.op != "affine":
            x = node.spec.compute([x], node.attr_dict(), {})
    return x[0].numpy(), how


def host_operations(node: Node) -> tuple[int, dict[str, int]]:
    """The work of one evaluation of a ``nonlinear`` op (ANN) or one step of its ``temporal``
    counterpart done densely, per sample: (operations, breakdown). ``matmul`` ([..., n, k] @
    [..., k, m]): L n k m MACs (L leading indices); ``layer_norm``: 4 D arithmetic operations
    (mean, variance, normalise, scale + shift) and one reciprocal square root per token;
    ``softmax``: 3 n per row of n (exp, sum, divide); ``gelu`` / ``silu``: one lookup per element."""
    base = node.op[len("temporal_") :] if node.op.startswith("temporal_") else node.op
    shape = tuple(node.output.shape)
    numel = int(np.prod(shape))
    if base == "matmul":
        a, b = node.inputs
        macs = numel * int(a.shape[-1])  # output elements x k
        return macs, {"macs": macs}
    if base == "layer_norm":
        d = int(shape[-1])
        tokens = numel // d
        return tokens * (4 * d + 1), {"arithmetic": 4 * d * tokens, "rsqrt": tokens}
    if base == "softmax":
        return 3 * numel, {"exp": numel, "sum": numel, "divide": numel}
    if base in ("gelu", "silu"):
        return numel, {"lookup": numel}
    raise DataError(f"energy estimate: no operation count for op {node.op!r} (node {node.name!r})")


def _host_row(node: Node, rates: _Rates, T: int, static: set[int]) -> dict[str, Any]:
    """A temporal op's work per sample (host-side or programmable-neuron): see the module docstring."""
    row = _empty_row(node, "host")
    dense, detail = host_operations(node)
    row["ann_host_ops"] = dense
    row["target"] = TEMPORAL_TARGET.get(node.op)
    if node.op != "temporal_matmul":
        row["host_ops"] = float(dense * T)
        row["host_detail"] = {k: v * T for k, v in detail.items()}
        row["input"] = "dense"
        return row
    # event-driven: (A + a)(B + b) - A B = a (B + b) + A b: each message of a multiplies a row
    # of the new B (m MACs), each message of b a column of the old A (n MACs)
    a, b = node.inputs
    n, m = int(a.shape[-2]), int(b.shape[-1])
    lead = tuple(np.broadcast_shapes(tuple(a.shape[:-2]), tuple(b.shape[:-2])))
    msgs, hows, per_neuron, layer_avg = [], set(), False, False
    for v in (a, b):
        r, how = _input_messages(v, rates, static)
        hows.add(how)
        full = (*lead, *v.shape[-2:])
        if isinstance(r, np.ndarray):
            msgs.append(float(np.broadcast_to(r, full).sum()))
            per_neuron = True
        else:
            msgs.append(float(r) * int(np.prod(full)))
            layer_avg = layer_avg or how != "dense"
        src = _spiking_neuron(v)
        if src is not None:
            row["sources"].append(src.output.name)
    event = T * (m * msgs[0] + n * msgs[1])
    recompute = float(dense * T)  # S_a S_b from the running sums every step: L n k m MACs per step
    row["host_ops"] = min(event, recompute)
    row["host_detail"] = {
        "macs": row["host_ops"], "strategy": "event-driven" if event <= recompute else "recompute",
        "event_driven_macs": event, "recompute_macs": recompute, "input_messages": [T * msgs[0], T * msgs[1]],
    }  # fmt: skip
    row["input"] = "dense" if hows == {"dense"} else ("spikes" if "dense" not in hows else "mixed")
    row["messages_from"] = hows.pop() if len(hows) == 1 else "mixed"
    if per_neuron or layer_avg:
        row["rates"] = "per-neuron" if per_neuron and not layer_avg else ("layer-average" if not per_neuron else "mixed")
    return row


# --------------------------------------------------------------------------- energy
_COUNTS = (
    "ann_macs", "ann_activations", "ann_host_ops", "connections", "snn_synops", "graded_synops", "unit_equivalent_synops",
    "snn_dense_macs", "host_ops", "neurons", "neuron_updates", "spikes", "messages",
)  # fmt: skip
_PARTS = ("synops", "graded", "dense", "host", "neurons", "spikes")


def _ann_side(ann: Graph, totals: dict[str, Any], per_profile: dict[str, dict], profs) -> None:
    """The ANN's totals (MACs, activations, host ops; energy and bytes per profile) from the
    ANN graph itself, for an SNN whose synapses no longer match the ANN's layers."""
    rows = ann_operations(ann)
    macs = sum(r["macs"] for r in rows)
    acts = sum(r["activations"] for r in rows)
    host = sum(r["host_ops"] for r in rows)
    outs = sum(int(np.prod(r["shape"])) for r in rows if r["macs"])
    totals["ann_macs"], totals["ann_activations"], totals["ann_host_ops"] = macs, acts, host
    for p in profs:
        t = per_profile[p.name]
        if p.mac_pj is not None:
            t["ann_nj"] = ((macs + host) * p.mac_pj + acts * (p.activation_pj or 0.0)) / 1e3
            t["ann_bytes"] = macs * (p.weight_bytes + p.activation_bytes) + outs * p.activation_bytes


def _row_energy(row: dict[str, Any], p: EnergyProfile) -> dict[str, Any]:
    out_elems = int(np.prod(row["shape"])) if row["kind"] == "synapse" else 0
    if p.mac_pj is None:
        ann_pj = ann_bytes = None
    else:
        ann_pj = (row["ann_macs"] + row["ann_host_ops"]) * p.mac_pj + row["ann_activations"] * (p.activation_pj or 0.0)
        ann_bytes = row["ann_macs"] * (p.weight_bytes + p.activation_bytes) + out_elems * p.activation_bytes
    parts = {
        "synops": row["snn_synops"] * p.ac_pj,
        "graded": row["graded_synops"] * p.dense_mac_pj,  # payload x weight: a multiply-accumulate
        "dense": row["snn_dense_macs"] * p.dense_mac_pj,
        "host": row["host_ops"] * p.dense_mac_pj,
        "neurons": row["neuron_updates"] * p.neuron_update_pj,
        "spikes": row["messages"] * p.spike_pj,  # = spikes for binary-counted layers
    }
    snn_bytes = (
        (row["snn_synops"] + row["graded_synops"]) * (p.weight_bytes + 2 * p.state_bytes)
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
    message_rates: Mapping[str, Any] | None = None,
    graded: str = "bipolar",
) -> dict[str, Any]:
    """Operations and energy of the ANN and the SNN per sample, per layer and in total, on
    each of ``profiles`` (names in :data:`PROFILES` or :class:`EnergyProfile` objects).

    ``model_or_graph``: a SpikingModel or its SNN-stage graph. ``spike_rates``,
    ``message_rates``, ``graded`` and ``timesteps``: as :func:`layer_operations` (the rates
    should come from a run of that many steps); ``samples``: how many samples the rates were
    measured on (recorded only). Returns a JSON-able dict with ``layers`` (rows), ``totals``
    (counts, and per profile ``ann_nj``, ``snn_nj``, ``ratio`` = SNN / ANN energy,
    ``snn_parts_nj``, ``host_fraction``, memory bytes), ``profiles`` and ``settings``.
    """
    graph = getattr(model_or_graph, "snn", model_or_graph)
    profs = [get_profile(p) for p in profiles]
    rows = layer_operations(graph, spike_rates, timesteps, input_rate, analog_input=analog_input, message_rates=message_rates, graded=graded)
    totals: dict[str, Any] = {k: 0 for k in _COUNTS}
    per_profile = {p.name: {"ann_nj": 0.0 if p.mac_pj is not None else None, "snn_nj": 0.0, "snn_parts_nj": dict.fromkeys(_PARTS, 0.0),
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
    ann_graph = getattr(model_or_graph, "ann", None)
    fused = bool(graph.meta.get("fused_synapses")) and ann_graph is not None
    if fused:  # the SNN's synapses were composed (fuse-synapses): the ANN side is the ANN's own layers
        _ann_side(ann_graph, totals, per_profile, profs)
    for t in per_profile.values():
        t["ratio"] = t["snn_nj"] / t["ann_nj"] if t["ann_nj"] else None
        t["host_fraction"] = t["snn_parts_nj"]["host"] / t["snn_nj"] if t["snn_nj"] else 0.0
    syn = [r for r in rows if r["kind"] in ("synapse", "elementwise")]
    exact = all(r["rates"] in (None, "per-neuron") for r in rows)
    graded_rows = [r for r in rows if r["graded"] or r["graded_synops"]]
    hows = {r["messages_from"] for r in rows if r["messages_from"] not in (None, "dense")}
    hosts = [r for r in rows if r["kind"] == "host"]
    totals["synops_per_ann_mac"] = totals["snn_synops"] / totals["ann_macs"] if totals["ann_macs"] else None
    totals["graded_synops_per_ann_mac"] = totals["graded_synops"] / totals["ann_macs"] if totals["ann_macs"] and graded_rows else None
    totals["energy"] = per_profile
    caveats = [
        "Estimates: per-operation energies x operation counts (compute only); memory traffic is counted in bytes but not priced.",
        "SNN synaptic operations assume event-driven execution with pooling and other stateless ops folded into the synaptic matrix.",
        "Loihi figures are pre-silicon per-event minima; spike routing between tiles is not priced.",
    ]
    if fused:
        caveats.append(
            f"fuse-synapses composed {graph.meta['fused_synapses']} synapse(s) of the SNN: the ANN totals count the ANN's own layers "
            f"({totals['ann_macs']:,} MACs); the per-layer ANN columns of the fused synapses count the composed weights."
        )
    if not exact:
        caveats.append("Layer-average spike rates: exact where a layer's fan-out is uniform, an approximation elsewhere (padding, strides).")
    if graded_rows:
        caveats.append(
            "Graded messages (bipolar neurons): one message per non-zero count, one multiply-accumulate (payload x weight) per fan-out, "
            "priced at the profile's MAC energy (Loihi: the cmos45nm fp32 MAC, a stand-in)."
        )
        if "bound" in hows:
            caveats.append(
                "Some message counts are upper bounds, min(1, unit-spike rate) per neuron and step: pass message_rates (activity_maps) for exact counts."
            )
    if hosts:
        caveats.append(
            "Host ops (temporal layer norm, softmax, GELU / SiLU, spike-train products) are host-side or programmable-neuron work, "
            "priced at the profile's MAC energy; their memory traffic is not counted."
        )
    return {
        "timesteps": int(timesteps),
        "samples": None if samples is None else int(samples),
        "settings": {
            "input": "analog (direct coding)" if input_rate is None else "spikes",
            "analog_input": analog_input,
            "rates": "per-neuron" if exact else "layer-average",
            "graded": graded,
            "messages": None if not hows else (hows.pop() if len(hows) == 1 else "mixed"),
            "units": "counts and nJ per sample; bytes per sample",
        },
        "layers": rows,
        "totals": totals,
        "synaptic_layers": len(syn),
        "host_layers": len(hosts),
        "profiles": {p.name: p.as_dict() for p in profs},
        "caveats": caveats,
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
    maps, _, outs = count_activity(model_or_graph, x, steps, batch_size=batch_size, encoding=encoding, seed=seed, device=device, messages=False)
    return maps, outs


def count_activity(
    model_or_graph: Any,
    x: np.ndarray,
    steps: Sequence[int],
    *,
    batch_size: int | None = None,
    encoding: str = "direct",
    seed: int = 0,
    device: str = "cpu",
    messages: bool = True,
) -> tuple[dict[int, dict[str, np.ndarray]], dict[int, dict[str, np.ndarray]] | None, dict[int, list[np.ndarray]]]:
    """:func:`count_spikes` that also counts **messages**: the non-zero outputs of every
    spiking layer per neuron per step (a graded spike of any count is one message; for
    binary spikes they equal the spike rates). Returns (spike maps per T, message maps per T
    or None without ``messages``, outputs per T)."""
    from snnc.ir.executor import check_input, run_batched
    from snnc.simulator.reference import ReferenceSimulator, check_timesteps, default_batch_size

    graph = getattr(model_or_graph, "snn", model_or_graph)
    x = np.asarray(x, dtype=np.float32)
    check_input(graph, x)
    steps = check_timesteps(steps)
    T = steps[-1]
    counts: dict[int, dict[str, torch.Tensor]] = {t: {} for t in steps}
    sent: dict[int, dict[str, torch.Tensor]] = {t: {} for t in steps}
    spiking = graph.having("spiking")

    units = {n.name: _spike_unit(n) for n in spiking}

    def add(store: dict[int, dict[str, torch.Tensor]], name: str, per_step: torch.Tensor) -> None:
        cum = torch.cumsum(per_step, dim=0)
        for t in steps:
            c = store[t]
            c[name] = c[name] + cum[t - 1] if name in c else cum[t - 1].clone()

    def observe(node: Node, out) -> None:
        if out.static:
            return
        add(counts, node.name, spike_units(out.data, units[node.name]).sum(dim=1, dtype=torch.float64))  # [T, *shape]
        if messages:
            add(sent, node.name, (out.data != 0).sum(dim=1, dtype=torch.float64))

    sim = ReferenceSimulator(graph, device)
    gen = torch.Generator(device=device).manual_seed(seed)
    bs = batch_size or default_batch_size(T, graph, str(torch.device(device).type))
    outs = run_batched(x, bs, lambda xb: sim.simulate(xb, steps, encoding=encoding, generator=gen, observe=observe, watch=spiking))

    def rates(store: dict[int, dict[str, torch.Tensor]]) -> dict[int, dict[str, np.ndarray]]:
        maps: dict[int, dict[str, np.ndarray]] = {}
        for t in steps:
            maps[t] = {name: (c / (len(x) * t)).cpu().numpy() for name, c in store[t].items()}
            for n in graph.having("neuron"):  # a layer that never ran still gets its (zero) map
                maps[t].setdefault(n.name, np.zeros(n.output.shape))
        return maps

    return rates(counts), (rates(sent) if messages else None), outs


def activity_maps(
    model_or_graph: Any,
    x: np.ndarray,
    timesteps: int,
    *,
    batch_size: int | None = None,
    encoding: str = "direct",
    seed: int = 0,
    device: str = "cpu",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-neuron (unit-)spike rates and message rates (non-zero outputs per step) of every
    spiking layer, from one reference-simulator run of ``timesteps`` steps on ``x``:
    ``estimate_energy(model, spikes, T, message_rates=messages)`` then counts graded
    messages, graded synaptic operations and spike-train products exactly."""
    T = int(timesteps)
    spikes, messages, _ = count_activity(model_or_graph, x, [T], batch_size=batch_size, encoding=encoding, seed=seed, device=device)
    assert messages is not None
    return spikes[T], messages[T]


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
    input; graded synaptic operations where layers send graded messages), their ratio and the
    input spike (message) rate; the host ops of temporal layers in a table of their own; then
    the totals with energy per profile."""
    from rich.table import Table

    title = energy_title(est, where)
    graded = any(r.get("graded_synops") for r in est["layers"])
    table = Table(title=title, min_width=len(title))  # a narrow table would wrap its title
    cols = ("layer", "op", "ANN MACs", "SNN SynOps", *(("graded ops",) if graded else ()), "SynOps/MAC", "input rate")
    for col in cols:
        table.add_column(col, justify="left" if col in ("layer", "op") else "right", overflow="fold")
    for r in est["layers"]:
        if r["kind"] not in ("synapse", "elementwise"):
            continue
        parts = [format_count(r["snn_synops"])] if r["input"] != "analog" and (r["snn_synops"] or not r.get("graded_synops")) else []
        if r["snn_dense_macs"]:
            parts.append(f"{format_count(r['snn_dense_macs'])} MACs")
        synops = " + ".join(parts) or ("-" if r.get("graded_synops") else "0")
        ops = r["snn_synops"] + r.get("graded_synops", 0.0)
        ratio = f"{ops / r['ann_macs']:.2f}" if r["ann_macs"] and r["input"] != "analog" else "-"
        if r["input_rate"] is not None:
            rate = f"{r['input_rate']:.3f}"
        elif r.get("message_rate") is not None:
            rate = f"{r['message_rate']:.3f} msg"
        else:
            rate = "analog" if r["input"] == "analog" else "-"
        extra = (format_count(r["graded_synops"]) if r.get("graded_synops") else "-",) if graded else ()
        table.add_row(r["layer"], r["op"], format_count(r["ann_macs"]) if r["ann_macs"] else "-", synops, *extra, ratio, rate)
    t = est["totals"]
    table.add_section()
    ops = t["snn_synops"] + t.get("graded_synops", 0.0)
    ratio = f"{ops / t['ann_macs']:.2f}" if t["ann_macs"] else "-"
    dense = f" + {format_count(t['snn_dense_macs'])} MACs" if t["snn_dense_macs"] else ""
    extra = (format_count(t["graded_synops"]),) if graded else ()
    table.add_row("total", "", format_count(t["ann_macs"]), format_count(t["snn_synops"]) + dense, *extra, ratio, "")
    console.print(table)
    hosts = [r for r in est["layers"] if r["kind"] == "host"]
    if hosts:
        ht = Table(title="Host ops per sample (temporal ops: host-side or programmable-neuron work, priced at MAC energy)")
        for col in ("layer", "op", "ANN ops", "SNN host ops", "per ANN op", "inputs"):
            ht.add_column(col, justify="left" if col in ("layer", "op", "inputs") else "right", overflow="fold")
        for r in hosts:
            per = f"{r['host_ops'] / r['ann_host_ops']:.2f}" if r["ann_host_ops"] else "-"
            how = (r.get("host_detail") or {}).get("strategy")
            src = {"event-driven": "event-driven (messages)", "recompute": "recomputed every step (cheaper)"}.get(how, "dense: every step")
            ht.add_row(r["layer"], r["op"], format_count(r["ann_host_ops"]), format_count(r["host_ops"]), per, src)
        ht.add_section()
        per = f"{t['host_ops'] / t['ann_host_ops']:.2f}" if t["ann_host_ops"] else "-"
        ht.add_row("total", "", format_count(t["ann_host_ops"]), format_count(t["host_ops"]), per, "")
        console.print(ht)
    events = f"{format_count(t['spikes'])} spikes"
    if graded:
        events = f"{format_count(t['messages'])} messages ({format_count(t['spikes'])} unit spikes)"
    lines = [
        f"SNN: {format_count(t['neuron_updates'])} neuron updates, {events}; "
        f"ANN: {format_count(t['ann_activations'])} activations ({est['settings']['rates']} rates)"
    ]
    for name, e in t["energy"].items():
        host = f", host ops {100 * e['host_fraction']:.0f} % of it" if hosts and e.get("host_fraction") is not None else ""
        if e["ann_nj"] is not None:
            lines.append(f"{name}: ANN {format_energy(e['ann_nj'])}, SNN {format_energy(e['snn_nj'])} (SNN/ANN {e['ratio']:.2f}){host}")
        else:
            lines.append(f"{name}: SNN {format_energy(e['snn_nj'])} (no ANN on this target){host}")
    if graded:
        lines.append("Graded messages: one multiply-accumulate (payload x weight) per fan-out, priced as a MAC.")
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
