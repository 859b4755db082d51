"""Lowering of an SNN-stage graph to snnc's Lava processes, in float or Loihi fixed point.

**Split into static and time-varying parts.** Every op between two stateful nodes is
affine, so the input current of each neuron (and of the readout) is
``z(t) = L(spikes(t)) + z_static``: a linear map of the spikes plus a part that does not
change over time (biases, affine shifts, and under direct coding everything computed from
the analog input alone). The host computes ``z_static`` once per sample; it becomes the
neuron's **bias current**, which is how the analog input drives the first layer. The
processes compute only ``L``: their biases are zero and static inputs are absent.

**Fixed point.** Values between processes are integers of two kinds:

* *counts*: spikes and what pooling, reshaping, concatenation and max pooling make of
  them, with a real per-channel scale sigma (a spike of a neuron with threshold θ and
  θ-scaled spikes is worth θ; an average pool of k values is a sum with scale sigma / k)
  and a largest count per element per step ``cmax`` (1 for a plain neuron's binary spikes;
  K for a burst neuron's graded spikes, whose payload is its count, down to −K when it is
  signed; k·cmax after summing k of them), which bounds the synaptic currents;
* *currents*: synapse outputs in units of the receiving neuron's membrane (a-units:
  ``u = a << 6``).

A synapse (conv, transposed conv, linear, an affine on counts, or the elementwise synapse
through which a count enters an add or a neuron) turns counts into currents with 8-bit
mantissas ``m`` and one exponent ``e`` per synapse. Its real weights ``W * sigma_in * r_out``
absorb everything between it and the neuron: pooling of currents, add coefficients, affine
scales and the per-channel thresholds (``r_out = vth / θ``: every neuron of a layer shares one
17-bit threshold mantissa ``vth``). :func:`choose_vth` picks ``vth`` per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from snnc.backend import LoweringTable, Rule
from snnc.errors import BackendError
from snnc.ir.executor import Executor, Timed, iter_batches, static_values
from snnc.ir.graph import Graph, Node, Value
from snnc.ir.ops import neuron_variant
V_LIMIT = 2**23 - 1  # 24-bit state
VTH_MAX = 2**17 - 1  # 17-bit threshold mantissa
BIAS_MAX = 4095 << 7  # 13-bit signed mantissa, 3-bit exponent
M_MAX = 127  # 8-bit signed weight mantissa (Lava stores 2m)
# Input-driven bias currents are represented up to this many thresholds per step (beyond it
# an IF neuron fires every step or never anyway): the scale does not depend on the data run.
BIAS_HEADROOM = 8.0
EXP_RANGE = range(-8, 8)
# Loihi 2 graded spikes carry an integer payload of up to 24 bits (Lava's graded-spike
# process models, lava.proc.graded, send on 24-bit ports, ``precision=24``, signed; its Dense
# synapses take them with ``num_message_bits`` up to 24, the default in
# lava.networks.gradedvecnetwork). The burst / signed neurons send their count s as that
# payload: it must lie in [-2^23, 2^23 - 1].
GRADED_PAYLOAD_BITS = 24
# How to make a chain of synapses mappable (snnc/passes/fuse_synapses.py folds it exactly).
FUSE_HINT = (
    "the fuse-synapses pass folds such chains into synapses that read spikes: re-convert (the default pipeline runs it; "
    "with --passes, add fuse-synapses), or fuse this artifact: snnc calibrate ART --calib C.npz --passes fuse-synapses -o OUT.snn"
)


class Unmappable(BackendError):
    """A node the Lava lowering cannot map (with the reason)."""

    def __init__(self, node: str, op: str, reason: str):
        super().__init__(f"{node} ({op}): {reason}")
        self.node, self.op, self.reason = node, op, reason


@dataclass
class ProcPlan:
    name: str
    kind: str  # op | neuron | readout | maxpool
    inputs: list[str]  # dynamic values feeding the in-ports, in port order
    in_shapes: list[tuple[int, ...]]
    out_shape: tuple[int, ...]
    spec: dict


@dataclass
class Program:
    procs: list[ProcPlan]
    outputs: list[tuple[str, str | None]]  # per graph output: (value name, readout node or None if static)
    static_outputs: dict[str, np.ndarray]  # value name -> [N, ...]
    output_scale: dict[str, float]  # readout node -> divide the integral by this (and by t)
    layers: list[dict] = field(default_factory=list)  # fixed point: scaling report per layer


# --------------------------------------------------------------- analysis
def dynamic_values(graph: Graph) -> set[int]:
    """Values that vary over time under direct coding (those the executor does not fold)."""
    static = static_values(graph)
    return {id(n.output) for n in graph.nodes if id(n.output) not in static}


class _StaticPart(Executor):
    """The executor on the time-invariant part of every value: a stateful node whose output
    varies over time contributes nothing (the processes compute that part), one whose output
    does not gives its ``constant`` form (spiking max pooling of a constant: its max pool)."""

    def __init__(self, graph: Graph, dyn: set[int]):
        super().__init__(graph)
        self.dyn = dyn

    def call_stateful(self, node: Node, ins: list[Timed]) -> Timed:
        x = ins[0].data
        if id(node.output) in self.dyn:
            return Timed(torch.zeros((x.shape[0], *node.output.shape), dtype=x.dtype), static=True)
        return Timed(node.spec.constant(x, self.attrs(node), self.params(node)), static=True)


@torch.no_grad()
def static_parts(graph: Graph, x: np.ndarray, sinks: list[Node], dyn: set[int], batch: int = 256) -> dict[str, tuple[np.ndarray, bool]]:
    """For every sink (neuron / readout) the time-invariant part of its input current:
    ``(array, per_sample)``; per-sample arrays are [N, *shape], others [*shape]."""
    depends = _depends_on_input(graph)
    want = {s.name: s.inputs[0] for s in sinks}
    per_sample = {name: id(v) in depends for name, v in want.items()}
    out: dict[str, list[np.ndarray]] = {name: [] for name in want}
    ex = _StaticPart(graph, dyn)
    for i, xb in enumerate(iter_batches(x, batch)):
        env: dict[int, Timed] = {id(graph.inputs[0]): Timed(xb, static=True)}
        ex.walk(graph.nodes, env, free=False)
        for name, v in want.items():
            if per_sample[name] or i == 0:
                out[name].append(env[id(v)].data.numpy())
    return {name: (np.concatenate(a).astype(np.float32) if per_sample[name] else a[0][0], per_sample[name]) for name, a in out.items()}


def _depends_on_input(graph: Graph) -> set[int]:
    dep = {id(graph.inputs[0])}
    for n in graph.nodes:
        if not n.spec.has("neuron") and any(id(v) in dep for v in n.inputs):
            dep.add(id(n.output))
    return dep


def consumers(graph: Graph) -> dict[int, list[Node]]:
    use: dict[int, list[Node]] = {}
    for n in graph.nodes:
        for v in n.inputs:
            use.setdefault(id(v), []).append(n)
    return use


# ------------------------------------------------------------------ float
def _float_params(node: Node) -> dict[str, np.ndarray]:
    p = {k: np.array(a, dtype=np.float32) for k, a in node.params.items()}
    if "bias" in p:
        p["bias"] = np.zeros_like(p["bias"])
    if "shift" in p:
        p["shift"] = np.zeros_like(p["shift"])
    return p


MAX_INPUTS = 4  # in-ports of one snnc Lava process


def _check_ports(n: Node) -> str | None:
    return f"{len(n.inputs)} inputs (at most {MAX_INPUTS})" if len(n.inputs) > MAX_INPUTS else None


def _check_neuron(n: Node) -> str | None:
    if n.attr("bipolar"):
        return "bipolar neurons (the graded messages of an attention network) have no Lava lowering yet; run it on reference or spikingjelly"
    return None if n.attr("reset") in ("subtract", "zero") else f"reset {n.attr('reset')!r}"


def graded_payload_problem(n: Node, bits: int | None = None) -> str | None:
    """Why the burst / signed neuron ``n``'s counts (0..K, or -K..K when signed) do not fit
    a graded spike's signed payload of ``bits`` bits (default :data:`GRADED_PAYLOAD_BITS`,
    two's complement: [-2^(bits-1), 2^(bits-1) - 1]), or None."""
    k, signed = int(n.attr("max_spikes")), bool(n.attr("signed"))
    if k == 1 and not signed:
        return None  # binary spikes
    bits = GRADED_PAYLOAD_BITS if bits is None else bits
    top = 2 ** (bits - 1) - 1
    if k > top:
        rng = f"[-{top + 1}, {top}]"
        return (
            f"a {neuron_variant(n.attrs)} neuron sends counts up to {k}{' and down to -' + str(k) if signed else ''}, which do not fit "
            f"a {bits}-bit graded-spike payload {rng} (Loihi 2); convert with a smaller burst (--neuron burst:K) or --neuron if"
        )
    return None


@dataclass
class _Lowering:
    """What the per-op rules read while planning processes."""

    dyn: set[int]
    statics: dict
    fx: FixedPoint | None
    base: dict
    batch: int

    def common(self, n: Node) -> dict:
        ins = [v for v in n.inputs if id(v) in self.dyn]
        return dict(name=n.name, inputs=[v.name for v in ins], in_shapes=[(self.batch, *v.shape) for v in ins], out_shape=(self.batch, *n.output.shape))


def _plan_neuron(n: Node, lw: _Lowering) -> ProcPlan:
    common = lw.common(n)
    spec = {**lw.base, "kind": "neuron", "has_input": bool(common["inputs"]), "reset": n.attr("reset"), "shape": n.output.shape}
    spec.update(max_spikes=int(n.attr("max_spikes")), signed=bool(n.attr("signed")))
    if lw.fx is not None:
        spec.update(lw.fx.neuron_spec(n))
    else:
        spec.update(threshold=n.params["threshold"], v_init=n.params["v_init"], spike_scale=n.attr("spike_scale"), bias=lw.statics[n.name])
    return ProcPlan(kind="neuron", spec=spec, **common)


def _plan_readout(n: Node, lw: _Lowering) -> ProcPlan | None:
    common = lw.common(n)
    if not common["inputs"]:  # a time-invariant output: computed on the host
        return None
    spec = {**lw.base, "kind": "readout", "has_input": True, "shape": n.output.shape}
    spec.update(lw.fx.readout_spec(n) if lw.fx is not None else {"bias": lw.statics[n.name]})
    return ProcPlan(kind="readout", spec=spec, **common)


def _plan_maxpool(n: Node, lw: _Lowering) -> ProcPlan:
    attrs = {k: n.attr(k) for k in ("kernel", "strides", "pads", "dilations", "ceil_mode")}
    spec = {**lw.base, "kind": "maxpool", "attrs": attrs}
    if lw.fx is None:  # in fixed point its input is spikes, whose static part is zero
        spec["bias"] = lw.statics[n.name]
    return ProcPlan(kind="maxpool", spec=spec, **lw.common(n))


def _plan_op(n: Node, lw: _Lowering) -> ProcPlan:
    """Any stateless op: a process running the op set's compute on its time-varying inputs."""
    slots, port = [], 0
    for v in n.inputs:
        if id(v) in lw.dyn:
            slots.append(("port", port))
            port += 1
        else:
            slots.append(("zeros", tuple(v.shape)))
    spec = {**lw.base, "kind": "op", "op": n.op, "name": n.name, "attrs": dict(n.attrs), "slots": slots}
    spec.update(lw.fx.op_spec(n) if lw.fx is not None else {"params": _float_params(n)})
    return ProcPlan(kind="op", spec=spec, **lw.common(n))


# The per-op table of the lava backends: a neuron, readout or max-pool process for the
# stateful ops; any stateless op of the op set becomes an op process (fixed point adds the
# domain rules of :class:`FixedPoint`, which need the whole graph).
TABLE = LoweringTable(
    "lava",
    {
        "if_neuron": Rule(_plan_neuron, _check_neuron),
        "readout": Rule(_plan_readout),
        "spiking_max_pool": Rule(_plan_maxpool, _check_ports),
    },
    stateless=Rule(_plan_op, _check_ports),
)


def lower(graph: Graph, x: np.ndarray, T: int, batch: int, fixed: bool) -> Program:
    """The process plan for running ``graph`` on ``x`` for ``T`` steps in batches of ``batch``."""
    dyn = dynamic_values(graph)
    # Sinks of a static part: neurons and readouts (their bias), and spiking max pools, which
    # are not affine and must gate on the whole value of their input.
    sinks = [n for n in graph.nodes if n.spec.has("neuron") or n.spec.has("readout") or (n.spec.has("max_pool") and id(n.inputs[0]) in dyn)]
    statics = static_parts(graph, x, sinks, dyn)
    fx = FixedPoint(graph, dyn, statics, T) if fixed else None
    lw = _Lowering(dyn, statics, fx, {"T": T, "batch": batch, "mode": "fixed" if fixed else "float"}, batch)
    procs: list[ProcPlan] = []
    for n in graph.nodes:
        if id(n.output) not in dyn and not n.spec.has("readout"):
            continue  # time-invariant: part of a static part (a bias current)
        plan = TABLE.lower(n, lw)
        if plan is not None:
            procs.append(plan)
    outputs, static_outputs, scale = [], {}, {}
    producer = {id(n.output): n for n in graph.nodes}
    for v in graph.outputs:
        ro = producer.get(id(v))
        if ro is not None and ro.spec.has("readout") and id(ro.inputs[0]) in dyn:
            outputs.append((v.name, ro.name))
            scale[ro.name] = fx.output_scale(ro) if fixed else 1.0
        else:
            arr, per = statics[ro.name] if ro is not None and ro.spec.has("readout") else (None, False)
            if arr is None:
                raise BackendError(f"graph output {v.name!r} is not a readout")
            static_outputs[v.name] = arr if per else np.broadcast_to(arr, (len(x), *arr.shape)).copy()
            outputs.append((v.name, None))
    return Program(procs, outputs, static_outputs, scale, fx.layers if fixed else [])


# ------------------------------------------------------------ fixed point
def _full(a, shape) -> np.ndarray:
    return np.broadcast_to(np.asarray(a, dtype=np.float64), shape).copy()


def _channel_vector(a, shape) -> np.ndarray | None:
    """``a`` (broadcast to the per-sample ``shape``) as one value per channel, or None."""
    full = _full(a, shape)
    if len(shape) == 0:
        return None
    flat = full.reshape(shape[0], -1)
    return flat[:, 0].copy() if np.all(flat == flat[:, :1]) else None


def _bias_quantise(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """13-bit mantissa, 3-bit exponent: effective integer bias and the exponents used."""
    b = np.asarray(b, dtype=np.float64)
    exp = np.zeros(b.shape, dtype=np.int64)
    for e in range(8):
        exp = np.where(np.abs(np.rint(b / 2**exp)) > 4095, e + 1, exp)
    exp = np.minimum(exp, 7)
    mant = np.clip(np.rint(b / 2**exp), -4096, 4095)
    return (mant * 2**exp).astype(np.int64), exp


def _exponent(max_abs: float, scale: float) -> int | None:
    """Smallest weight exponent e with max|W| * scale / 2^(e+1) <= 127.5; None if none fits."""
    if max_abs == 0:
        return 0
    for e in EXP_RANGE:
        if max_abs * scale / 2 ** (e + 1) <= M_MAX + 0.5:
            return e
    return None


def _quantise(w: np.ndarray, scale: float, e: int) -> np.ndarray:
    return np.clip(np.rint(w * scale / 2 ** (e + 1)), -M_MAX - 1, M_MAX)


def choose_vth(terms: list[np.ndarray], vmax: float, min_exp: int | None = None) -> tuple[int, float]:
    """The layer scale (threshold mantissa) minimising the summed relative squared weight
    error of the layer's synapses, among the scales where one synapse's largest weight
    lands on the mantissa's edge (for every exponent) and the largest scale the overflow
    bounds allow. Returns (vth, error). With ``min_exp``, scales where every synapse's
    exponent is at least ``min_exp`` win whenever there is one (the quantiser asks for -1:
    a right shift of the even sums 2m*s by one bit is exact, by more it floors)."""
    if min_exp is not None:
        vth, err = choose_vth(terms, vmax)
        if all(_exponent(float(np.abs(w).max()) if w.size else 0.0, vth) >= min_exp for w in terms):
            return vth, err
        restricted = _choose_restricted(terms, vmax, min_exp)
        return restricted if restricted is not None else (vth, err)
    vmax = int(min(VTH_MAX, math.floor(vmax)))
    if vmax < 1:
        raise BackendError("the layer's input currents are too large for a 24-bit membrane")
    best = None
    for c in _candidate_scales(terms, vmax):
        err = scale_error(terms, c)
        if best is None or err < best[1] - 1e-15:
            best = (c, err)
    if best is None or not math.isfinite(best[1]):
        raise BackendError("no 8-bit weight exponent in [-8, 7] fits the layer's weights")
    return best


def _candidate_scales(terms: list[np.ndarray], vmax: int) -> list[int]:
    """The scales :func:`choose_vth` tries, largest first: ``vmax`` and every scale in
    [1, vmax] where some synapse's largest weight lands on the mantissa's edge."""
    cands = {vmax}
    for w in terms:
        m = float(np.abs(w).max()) if w.size else 0.0
        if m > 0:
            for e in EXP_RANGE:
                c = math.floor((M_MAX + 0.5) * 2 ** (e + 1) / m)
                if 1 <= c <= vmax:
                    cands.add(c)
    return sorted(cands, reverse=True)


def _choose_restricted(terms: list[np.ndarray], vmax: float, min_exp: int) -> tuple[int, float] | None:
    """:func:`choose_vth` among the scales where every exponent is at least ``min_exp``
    (None when there is none below ``vmax``)."""
    vmax = int(min(VTH_MAX, math.floor(vmax)))
    best = None
    for c in _candidate_scales(terms, vmax):
        exps = [_exponent(float(np.abs(w).max()), c) for w in terms if w.size and np.abs(w).max() > 0]
        if any(e is None or e < min_exp for e in exps):
            continue
        err = scale_error(terms, c)
        if math.isfinite(err) and (best is None or err < best[1] - 1e-15):
            best = (c, err)
    return best


def scale_error(terms: list[np.ndarray], c: int) -> float:
    """The summed relative squared weight error of a layer's synapses at scale ``c`` (inf
    where some synapse's largest weight fits no exponent)."""
    err = 0.0
    for w in terms:
        e = _exponent(float(np.abs(w).max()) if w.size else 0.0, c)
        if e is None:
            return math.inf
        q = _quantise(w, c, e) * 2 ** (e + 1) / c
        n = float((w**2).sum())
        err += float(((w - q) ** 2).sum()) / n if n > 0 else 0.0
    return err


@dataclass
class _Term:
    owner: str  # node holding the synapse
    kind: str  # weighted | affine | port
    op: str  # the owner's op
    port: int | None  # port index for port terms
    w: np.ndarray  # real weights at vth = 1 (normalised by the threshold)
    cmax: float  # largest count per input element per step
    unit: np.ndarray | None = None  # weighted: the real weight of a graph weight of 1 (w = unit * W)


class FixedPoint:
    """Domains, scales and quantisation for the fixed-point lowering (see module docstring)."""

    def __init__(self, graph: Graph, dyn: set[int], statics: dict, T: int, *, min_exp: int | None = None, margin: float = 0.0):
        self.graph, self.dyn, self.statics, self.T = graph, dyn, statics, T
        # For layers without a pinned scale: choose_vth's min_exp, and a fraction of the
        # overflow bound left free (so that rounding the weights, or a later calibration of
        # the bias, does not push a pinned scale past it).
        self.min_exp, self.margin = min_exp, margin
        self.use = consumers(graph)
        self.producer = {id(n.output): n for n in graph.nodes}
        self.dom: dict[int, str] = {}
        self.sigma: dict[int, np.ndarray] = {}
        self.cmax: dict[int, float] = {}
        self.ops: dict[str, dict] = {}  # node -> fixed op spec
        self.sinks: dict[str, dict] = {}  # neuron / readout -> fixed spec
        self.layers: list[dict] = []
        self._port_weights: dict[tuple[str, int], tuple[np.ndarray, int]] = {}
        # Per layer: its scale and each synapse's real weights, exponent and mantissas
        # (what snnc_lava.quantize projects the float graph onto).
        self.plans: dict[str, dict] = {}
        self.pins = pinned_scales(graph)
        self._forward()
        for n in graph.nodes:
            if n.spec.has("neuron") or (n.spec.has("readout") and id(n.inputs[0]) in dyn):
                self._layer(n)

    def fail(self, n: Node, why: str):
        raise Unmappable(n.name, n.op, why)

    # forward: which values are counts (with scales) and which currents
    def _forward(self) -> None:
        for n in self.graph.nodes:
            if id(n.output) not in self.dyn:
                continue
            shape = n.output.shape
            ins = [v for v in n.inputs if id(v) in self.dyn]
            doms = {self.dom[id(v)] for v in ins}
            if n.op == "readout":
                continue  # a graph output; its input is handled as a layer
            if n.op == "if_neuron":
                problem = graded_payload_problem(n)
                if problem:
                    self.fail(n, problem)
                th = n.params["threshold"] if n.attr("spike_scale") == "threshold" else 1.0
                self._count(n, _full(th, shape), float(n.attr("max_spikes")))  # |count| <= K per step
            elif n.op == "spiking_max_pool":
                v = n.inputs[0]
                if self.dom[id(v)] != "count" or _channel_vector(self.sigma[id(v)], v.shape) is None:
                    self.fail(n, "spiking max pooling needs spikes with one scale per channel at its input")
                self._count(n, self._pool_sigma(n, v, 1.0), self.cmax[id(v)])
            elif n.op == "pad":  # zero padding: no spikes at the border; the per-channel scale passes
                v = n.inputs[0]
                if self.dom[id(v)] == "current":
                    self.dom[id(n.output)] = "current"
                elif _channel_vector(self.sigma[id(v)], v.shape) is None:
                    self.fail(n, "padding spikes whose scale differs within a channel")
                else:
                    self._count(n, self._pool_sigma(n, v, 1.0), self.cmax[id(v)])
            elif n.spec.has("synaptic") or (n.op == "affine" and doms == {"count"}):
                if doms != {"count"}:
                    self.fail(n, "its input is a synaptic current, not spikes: on Loihi a neuron must sit between two synapses; " + FUSE_HINT)
                self.dom[id(n.output)] = "current"
            elif n.op == "add":
                self.dom[id(n.output)] = "current"
            elif n.op in ("avg_pool", "global_avg_pool"):
                v = n.inputs[0]
                k = self._pool_size(n, v)
                if self.dom[id(v)] == "count":
                    if _channel_vector(self.sigma[id(v)], v.shape) is None:
                        self.fail(n, "pooling spikes whose scale differs within a channel")
                    self._count(n, self._pool_sigma(n, v, 1.0 / k), self.cmax[id(v)] * k)
                else:
                    self.dom[id(n.output)] = "current"
            elif n.op in ("reshape", "upsample", "concat", "affine"):
                if len(doms) != 1:
                    self.fail(n, "mixes spikes and synaptic currents")
                if doms == {"current"}:
                    self.dom[id(n.output)] = "current"
                    continue
                if n.op == "affine":
                    continue  # handled above (affine on counts is a synapse)
                self._count(n, self._pass_sigma(n), max(self.cmax[id(v)] for v in ins))
            else:
                self.fail(n, "no Lava fixed-point mapping for this op")

    def _count(self, n: Node, sigma: np.ndarray, cmax: float) -> None:
        self.dom[id(n.output)] = "count"
        self.sigma[id(n.output)] = sigma
        self.cmax[id(n.output)] = cmax

    def _pool_size(self, n: Node, v: Value) -> int:
        if n.op == "global_avg_pool":
            return int(np.prod(v.shape[1:]))
        pads = n.attr("pads") or []
        if any(pads) and not n.attr("count_include_pad"):
            self.fail(n, "padded average pooling that excludes the padding divides unevenly")
        if n.attr("ceil_mode"):
            self.fail(n, "ceil_mode average pooling divides unevenly at the border")
        return int(np.prod(n.attr("kernel")))

    def _pool_sigma(self, n: Node, v: Value, factor: float) -> np.ndarray:
        c = _channel_vector(self.sigma[id(v)], v.shape)
        out = n.output.shape
        return _full((c * factor).reshape(-1, *([1] * (len(out) - 1))), out)

    def _pass_sigma(self, n: Node) -> np.ndarray:
        parts = []
        for v in n.inputs:
            s = self.sigma[id(v)] if id(v) in self.dyn else np.ones(v.shape)
            parts.append(torch.from_numpy(_full(s, v.shape))[None])
        y = n.spec.compute(parts, n.attr_dict(), {}) if n.op != "affine" else parts[0]
        return y[0].numpy()

    # backward: the synapses feeding one layer, their real weights at vth = 1
    def _terms(self, sink: Node, r: np.ndarray) -> list[_Term]:
        terms: list[_Term] = []
        v = sink.inputs[0]
        if self.dom[id(v)] == "count":
            terms.append(_Term(sink.name, "port", sink.op, 0, _full(r, v.shape) * self.sigma[id(v)], self.cmax[id(v)]))
        else:
            self._back(v, _full(r, v.shape), terms)
        return terms

    def _back(self, v: Value, r: np.ndarray, terms: list[_Term]) -> None:
        n = self.producer[id(v)]
        if len(self.use.get(id(v), [])) > 1:
            self.fail(n, "a synaptic current that feeds two layers (each needs its own scaling); " + FUSE_HINT)
        if n.spec.has("synaptic"):
            unit = self._weights(n, r, np.ones(np.shape(n.params["weight"])))  # for snnc_lava.quantize's grid
            terms.append(_Term(n.name, "weighted", n.op, None, self._weights(n, r), self.cmax[id(n.inputs[0])], unit))
        elif n.op == "affine":
            u = n.inputs[0]
            if self.dom[id(u)] == "count":
                w = _full(n.params["scale"], v.shape) * r * self.sigma[id(u)]
                terms.append(_Term(n.name, "affine", n.op, None, w, self.cmax[id(u)]))
            else:
                self._back(u, r * _full(n.params["scale"], v.shape), terms)
        elif n.op == "add":
            coeffs = n.attr("coeffs")
            port = 0
            for i, u in enumerate(n.inputs):
                if id(u) not in self.dyn:
                    continue
                c = 1.0 if coeffs is None else np.asarray(coeffs[i], dtype=np.float64)
                if np.ndim(c) == 1 and len(v.shape) > 1:
                    c = c.reshape(-1, *([1] * (len(v.shape) - 1)))
                ru = r * _full(c, v.shape)
                if self.dom[id(u)] == "count":
                    terms.append(_Term(n.name, "port", n.op, port, ru * self.sigma[id(u)], self.cmax[id(u)]))
                else:
                    self._back(u, ru, terms)
                port += 1
        elif n.op in ("avg_pool", "global_avg_pool"):
            u = n.inputs[0]
            c = _channel_vector(r, v.shape)
            if c is None:
                self.fail(n, "pooling of currents feeding neurons whose scale differs within a channel")
            k = self._pool_size(n, u)
            self._back(u, _full((c / k).reshape(-1, *([1] * (len(u.shape) - 1))), u.shape), terms)
        elif n.op == "reshape":
            u = n.inputs[0]
            self._back(u, r.reshape(u.shape), terms)
        elif n.op in ("upsample", "pad"):
            u = n.inputs[0]
            c = _channel_vector(r, v.shape)
            if c is None:
                self.fail(n, f"{n.op} of currents feeding neurons whose scale differs within a channel")
            self._back(u, _full(c.reshape(-1, *([1] * (len(u.shape) - 1))), u.shape), terms)
        elif n.op == "concat":
            axis = n.attr("axis") - 1
            start = 0
            for u in n.inputs:
                size = u.shape[axis]
                part = np.take(r, range(start, start + size), axis=axis)
                start += size
                if id(u) in self.dyn:
                    self._back(u, part, terms)
        else:
            self.fail(n, "no Lava fixed-point mapping for this op")

    def _weights(self, n: Node, r: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        """Real weights W * sigma_in * r_out of a conv / transposed conv / linear (of
        ``weight`` in place of the node's W when given)."""
        w = np.asarray(n.params["weight"] if weight is None else weight, dtype=np.float64)
        u = n.inputs[0]
        sig = self.sigma[id(u)]
        if n.op == "linear":
            s_in = _last_axis(sig, u.shape)
            r_out = _last_axis(r, n.output.shape)
            if s_in is None or r_out is None:
                self.fail(n, "a row-wise linear layer whose scales vary across rows")
            return w * r_out[:, None] * s_in[None, :]
        s_in = _channel_vector(sig, u.shape)
        r_out = _channel_vector(r, n.output.shape)
        if s_in is None or r_out is None:
            self.fail(n, "a convolution whose input or output scale differs within a channel")
        g = n.attr("groups")
        if n.op == "conv":
            cout, cin_g = w.shape[:2]
            idx = (np.arange(cout)[:, None] // (cout // g)) * cin_g + np.arange(cin_g)[None, :]
            return w * r_out.reshape(-1, 1, *([1] * (w.ndim - 2))) * s_in[idx].reshape(cout, cin_g, *([1] * (w.ndim - 2)))
        cin, cout_g = w.shape[:2]  # conv_transpose
        idx = (np.arange(cin)[:, None] // (cin // g)) * cout_g + np.arange(cout_g)[None, :]
        return w * s_in.reshape(-1, 1, *([1] * (w.ndim - 2))) * r_out[idx].reshape(cin, cout_g, *([1] * (w.ndim - 2)))

    # one layer: choose the scale, quantise its synapses, bias and initial potential
    def _layer(self, sink: Node) -> None:
        shape = sink.output.shape if sink.spec.has("neuron") else sink.inputs[0].shape
        theta = _full(sink.params["threshold"], shape) if sink.spec.has("neuron") else np.ones(shape)
        has_input = id(sink.inputs[0]) in self.dyn
        terms = self._terms(sink, 1.0 / theta) if has_input else []
        z, per_sample = self.statics[sink.name]
        b_norm = np.asarray(z, dtype=np.float64) / theta
        k = int(sink.attr("max_spikes")) if sink.spec.has("neuron") else 1
        if per_sample:  # driven by the input: a fixed headroom, so the scale does not depend on the data
            headroom = max(BIAS_HEADROOM, 2.0 * k)  # a burst neuron uses currents up to K thresholds per step
            b_norm = np.clip(b_norm, -headroom, headroom)
            s_max = headroom
        else:
            s_max = float(np.abs(b_norm).max()) if b_norm.size else 0.0
        l1 = sum(_row_l1(t) * t.cmax for t in terms)
        bounds = [VTH_MAX]
        if l1 > 0:
            bounds.append(V_LIMIT / 64 / l1)  # per-step current never wraps
        if s_max > 0:
            bounds.append(BIAS_MAX / 64 / s_max)  # bias fits 13-bit mantissa << 3-bit exponent
        if sink.spec.has("readout"):
            bounds.append(V_LIMIT / 64 / (self.T * (l1 + s_max) + 1e-12))  # the integral never saturates
        if k > 1:  # the 24-bit voltage must hold a burst of K thresholds (and the residual)
            bounds.append(V_LIMIT / 64 / (k + 1))
            if V_LIMIT / 64 / (k + 1) < 1:
                self.fail(sink, f"a burst of {k} thresholds does not fit the 24-bit membrane potential")
        vmax = min(bounds)
        pin, pin_problem = self.pins.get(sink.name), None
        if pin is not None:  # a scale the artifact was quantised (and calibrated) at: kept while it fits
            if pin > vmax:
                pin_problem = f"vth {pin} exceeds the overflow bound {math.floor(vmax)} (e.g. evaluated at a larger T than quantised for)"
            elif self._max_current(terms, pin) > V_LIMIT / 64:
                pin_problem = f"vth {pin} lets the per-step current wrap"
            elif not math.isfinite(scale_error([t.w for t in terms], pin)):
                pin_problem = f"no weight exponent fits at vth {pin}"
        if pin is not None and pin_problem is None:
            vth, err = pin, scale_error([t.w for t in terms], pin)
        else:
            vmax = vmax * (1.0 - self.margin) if vmax * (1.0 - self.margin) >= 1 else vmax
            while True:  # rounding can push mantissas up by half a step: recheck the current bound quantised
                vth, err = choose_vth([t.w for t in terms], vmax, self.min_exp)
                if self._max_current(terms, vth) <= V_LIMIT / 64 or vth <= 1:
                    break
                vmax = vth - 1
        report = {"layer": sink.name, "kind": "neuron" if sink.spec.has("neuron") else "readout", "vth": vth, "synapses": [], "weight_error": err}
        if pin is not None:
            report["pinned_vth"] = "kept" if pin_problem is None else f"not kept: {pin_problem}"
        plan = self.plans[sink.name] = {"vth": vth, "terms": []}
        for t in terms:
            e = _exponent(float(np.abs(t.w).max()) if t.w.size else 0.0, vth)
            m = _quantise(t.w, vth, e)
            plan["terms"].append((t, m, int(e)))
            rel = float(np.sqrt(((t.w - m * 2 ** (e + 1) / vth) ** 2).sum() / max((t.w**2).sum(), 1e-300)))
            report["synapses"].append({"node": t.owner, "kind": t.kind, "weight_exp": int(e), "max_mantissa": int(np.abs(m).max()) if m.size else 0, "relative_rms_error": rel})
            self._store(t, (2 * m).astype(np.int64), int(e))
        bias_eff, bias_exp = _bias_quantise(b_norm * vth * 64)
        bias_eff = bias_eff.astype(np.int32)  # fits: |bias| <= 4095 << 7
        target = b_norm * vth * 64
        report["bias_relative_rms_error"] = float(np.sqrt(((bias_eff - target) ** 2).sum() / max((target**2).sum(), 1e-300)))
        report["bias_exp_max"] = int(bias_exp.max()) if bias_exp.size else 0
        spec = {"bias": (bias_eff, per_sample), "port_weight": self._port_weights.get((sink.name, 0))}
        if sink.spec.has("neuron"):
            v0 = np.rint(_full(sink.params["v_init"], shape) / theta * vth * 64)
            spec.update(vth=vth, v_init=np.clip(v0, -V_LIMIT, V_LIMIT).astype(np.int64))
            report["threshold"] = "per channel" if np.unique(theta).size > 1 else float(theta.flat[0])
        else:
            spec.update(scale=float(vth) * 64)
        self.sinks[sink.name] = spec
        self.layers.append(report)

    @staticmethod
    def _max_current(terms: list[_Term], vth: int) -> float:
        """Largest per-step synaptic input (a-units) with the quantised weights."""
        total = 0.0
        for t in terms:
            e = _exponent(float(np.abs(t.w).max()) if t.w.size else 0.0, vth)
            m = _quantise(t.w, vth, e)
            total += _row_l1(_Term(t.owner, t.kind, t.op, t.port, np.abs(m) * 2 * 2.0**e, t.cmax)) * t.cmax
        return total

    def _store(self, t: _Term, w2: np.ndarray, e: int) -> None:
        if t.kind == "port":
            self._port_weights[(t.owner, t.port)] = (w2, e)
        else:
            key = "weight" if t.kind == "weighted" else "scale"
            self.ops.setdefault(t.owner, {})[key] = (w2, e)

    # specs for the process models
    def op_spec(self, n: Node) -> dict:
        params = {k: np.array(a, dtype=np.float64) for k, a in n.params.items()}
        spec: dict = {"sum_pool": n.op in ("avg_pool", "global_avg_pool")}
        q = self.ops.get(n.name, {})
        if n.spec.has("synaptic"):
            w2, e = q["weight"]
            params["weight"], params["bias"], spec["exp"] = w2.astype(np.float64), np.zeros_like(params["bias"]), e
        elif n.op == "affine":
            if "scale" in q:
                w2, e = q["scale"]
                params["scale"], spec["exp"] = w2.astype(np.float64), e
            else:  # on currents: its scale is folded into the synapses upstream
                params["scale"] = np.ones_like(params["scale"])
            params["shift"] = np.zeros_like(params["shift"])
        elif n.op == "add":
            ports = sum(1 for v in n.inputs if id(v) in self.dyn)
            spec["port_weights"] = [self._port_weights.get((n.name, i)) for i in range(ports)]
            spec["attrs"] = {**n.attrs, "coeffs": None}  # coefficients are folded into the synapses
        spec["params"] = params
        return spec

    def neuron_spec(self, n: Node) -> dict:
        return dict(self.sinks[n.name])

    def readout_spec(self, n: Node) -> dict:
        return dict(self.sinks[n.name])

    def output_scale(self, n: Node) -> float:
        return self.sinks[n.name]["scale"]


PIN_KEY = "fixed_point"  # graph.meta: the per-layer vth an artifact was quantised at (snnc_lava.quantize)


def pinned_scales(graph: Graph) -> dict[str, int]:
    """The per-layer threshold mantissas ``graph.meta["fixed_point"]["vth"]`` (layer name ->
    vth) that the lowering keeps while they fit, so that an artifact whose weights were put
    on that grid (``snnc convert --quantize loihi2``) is re-quantised losslessly; {} when
    absent. A BackendError names a malformed entry (the artifact was edited)."""
    meta = graph.meta.get(PIN_KEY)
    if meta is None:
        return {}
    vths = meta.get("vth") if isinstance(meta, dict) else None
    if not isinstance(vths, dict):
        raise BackendError(f"the artifact's meta.{PIN_KEY} must be an object with a \"vth\" object (layer -> threshold mantissa); got {meta!r:.80}")
    out = {}
    for name, v in vths.items():
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= VTH_MAX:
            raise BackendError(f"the artifact's meta.{PIN_KEY}.vth[{name!r}] must be an integer in [1, {VTH_MAX}], got {v!r:.40}; re-convert with --quantize")
        out[str(name)] = int(v)
    return out


def _last_axis(a: np.ndarray, shape) -> np.ndarray | None:
    full = _full(a, shape).reshape(-1, shape[-1])
    return full[0].copy() if np.all(full == full[:1]) else None


def _row_l1(t: _Term) -> float:
    """Largest sum of |weights| into one output per step and unit count (an upper bound
    for transposed convolutions, whose outputs see only part of the kernel)."""
    w = np.abs(t.w)
    if t.kind == "weighted" and t.op == "conv_transpose":
        return float(w.sum(axis=tuple(i for i in range(w.ndim) if i != 1)).max())
    if t.kind == "weighted":
        return float(w.reshape(w.shape[0], -1).sum(1).max())
    return float(w.max()) if w.size else 0.0
