"""Fake quantisation for ``lava-fixed``: the float graph its Loihi fixed-point lowering computes.

:func:`project` puts a float SNN-stage graph, in place, onto the grid the fixed-point
lowering (:class:`snnc_lava.lower.FixedPoint`) maps it to: per layer the threshold mantissa
``vth``, per synapse group the exponent ``e`` and the 8-bit mantissas ``m``. Every synaptic
weight becomes its dequantised value ``m * 2^(e+1) / vth`` (in the layer's normalised units,
divided back into the graph's own: the conv / linear weight, the affine scale of an affine on
spikes, the add coefficient of a spike input to a residual add; a neuron or readout fed by
spikes with no synapse between gets an ``affine`` holding that elementwise synapse), every
initial potential its rounded 24-bit value, and a layer's constant input current (its bias)
its 13-bit-mantissa value, through the parameter that carries it (the conv / linear bias, a
residual branch's bias, an affine's shift). The chosen vth are pinned in
``graph.meta["fixed_point"]``; the lowering keeps a pinned vth while it fits the layer's
overflow bounds, so lowering the projected graph reproduces the projected values exactly
(re-quantisation is lossless) and the reference simulator on it runs the integers the chip runs.

The quantiser chooses a layer's scale as the lowering does (least weight error), with two
differences: no synapse shifts right by more than one bit where the bounds allow
(:data:`MIN_EXP`: the sums ``2m*s`` are even, so one bit is exact, more floor them, a loss of
up to one unit per step that no float graph shows), and 1/32 of the bound is left free
(:data:`MARGIN`) so that rounding and the later calibration of the bias keep the pin valid.
What stays outside the float graph:

* Loihi fires at ``v > vth`` where the float graph fires at ``v >= theta`` (exact ties only);
* the first layer's input-driven bias current is rounded by the lowering (13-bit mantissa,
  3-bit exponent) and clipped to +-8 thresholds per step, as is a constant bias that no single
  per-channel parameter carries;
* a synapse whose exponent is still below -1 (a readout whose integral bound forces a small
  vth) floors its output every step.

:class:`LoihiQuantizer` is what the ``lava-fixed`` backend hands the core's hardware-aware
calibration (``snnc convert --quantize loihi2``): the ``quantize`` pass projects the whole
graph, each calibration pass projects every layer it changes, and calibrate-weights fits
through :func:`grid` (straight-through).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from snnc.errors import BackendError
from snnc.ir.graph import Graph, Node

from snnc_lava.lower import M_MAX, PIN_KEY, V_LIMIT, FixedPoint, _bias_quantise, _channel_vector, _full, dynamic_values, pinned_scales, static_parts

TARGET = "loihi2"
# The smallest weight exponent the quantiser chooses where it can: a synapse's sum of 2m*s is
# even, so shifting it right by one bit is exact; by k > 1 bits it floors, losing 1/2 - 2^-k
# units per step on average, which no float graph shows.
MIN_EXP = -1
# The fraction of a layer's overflow bound on vth the quantiser leaves free, so that rounding
# the weights or calibrating the bias afterwards keeps its pinned scale within the bound.
MARGIN = 1 / 32


def analyse(graph: Graph, T: int) -> FixedPoint:
    """The fixed-point mapping of ``graph`` run for ``T`` steps (the scales do not depend on
    the data: an input-driven bias gets a fixed headroom). A layer without a pinned scale
    gets one where no synapse shifts right by more than one bit (:data:`MIN_EXP`) if the
    bounds allow any."""
    dyn = dynamic_values(graph)
    sinks = [n for n in graph.nodes if n.spec.has("neuron") or n.spec.has("readout") or (n.spec.has("max_pool") and id(n.inputs[0]) in dyn)]
    x = np.zeros((1, *graph.inputs[0].shape), dtype=np.float32)
    return FixedPoint(graph, dyn, static_parts(graph, x, sinks, dyn), T, min_exp=MIN_EXP, margin=MARGIN)


def project(graph: Graph, T: int, layers: Iterable[str] | None = None) -> list[dict]:
    """Put the synapses, initial potentials and biases of ``layers`` (neuron / readout names;
    default every layer) on the lava-fixed grid, in place, and pin their scales in
    ``graph.meta``. Returns one record per projected layer: its vth and the largest relative
    change of a weight it made."""
    layers = None if layers is None else set(layers)
    undo: dict[str, tuple] = {}
    records = _project_once(graph, T, layers, undo)
    for _ in range(3):  # a pin the projected weights no longer allow (rare, the margin aside): once more
        fx = analyse(graph, T)
        lost = [L["layer"] for L in fx.layers if L.get("pinned_vth", "kept") != "kept" and (layers is None or L["layer"] in layers)]
        if not lost:
            break
        _unpin(graph, lost)
        again = {r["layer"]: r for r in _project_once(graph, T, lost, undo)}
        records = [again.get(r["layer"], r) for r in records]
    else:
        fx = analyse(graph, T)
    for L in fx.layers:  # a bias moved onto its grid that the lowering does not find there: put it back
        if L["layer"] in undo and L["bias_relative_rms_error"] > 1e-6:
            node, key, old = undo[L["layer"]]
            node.set_param(key, old)
    return records


def _unpin(graph: Graph, layers: list[str]) -> None:
    meta = graph.meta.get(PIN_KEY)
    if isinstance(meta, dict) and isinstance(meta.get("vth"), dict):
        for name in layers:
            meta["vth"].pop(name, None)


def _project_once(graph: Graph, T: int, layers: set[str] | None, undo: dict[str, tuple]) -> list[dict]:
    fx = analyse(graph, T)
    want = None if layers is None else set(layers)
    pins = dict(pinned_scales(graph))
    records = []
    for name, plan in fx.plans.items():
        if want is not None and name not in want:
            continue
        sink = graph.node(name)
        vth = int(plan["vth"])
        moved = 0.0
        for t, m, e in plan["terms"]:
            q = m * 2.0 ** (e + 1) / vth
            moved = max(moved, float(np.max(np.abs(q - t.w)) / max(float(np.abs(t.w).max()), 1e-300)) if t.w.size else 0.0)
            _put(graph, sink, t, q, fx.dyn)
        if sink.spec.has("neuron"):
            _put_v_init(sink, vth)
        snapped = _put_bias(sink, fx.statics[name], vth)
        if snapped is not None:
            undo.setdefault(name, snapped)
        pins[name] = vth
        records.append({"layer": name, "vth": vth, "synapses": len(plan["terms"]), "max_weight_change": moved})
    graph.meta[PIN_KEY] = {"backend": "lava-fixed", "target": TARGET, "timesteps": int(T), "vth": pins}
    return records


def grid(graph: Graph, T: int, layers: Iterable[str] | None = None) -> dict[str, dict]:
    """The weight grid of every conv / transposed conv / linear feeding ``layers`` (default
    all), by node name: ``{"param": "weight", "step": array shaped like the weight, "lo": -128,
    "hi": 127}``; on the chip the weight is ``clip(rint(W / step), lo, hi) * step`` (step 0: a
    weight that reaches no neuron). For fitting through the quantiser (calibrate-weights with
    a straight-through estimator); the exponents are those of the current weights."""
    fx = analyse(graph, T)
    want = None if layers is None else set(layers)
    out = {}
    for name, plan in fx.plans.items():
        if want is not None and name not in want:
            continue
        vth = plan["vth"]
        for t, m, e in plan["terms"]:
            if t.kind == "weighted" and t.unit is not None:
                nz = t.unit != 0
                step = np.where(nz, 2.0 ** (e + 1) / vth / np.where(nz, t.unit, 1.0), 0.0)
                out[t.owner] = {"param": "weight", "step": np.abs(step), "lo": -M_MAX - 1, "hi": M_MAX}
    return out


def fake_quantize(graph: Graph, T: int) -> Graph:
    """A copy of ``graph`` projected onto the lava-fixed grid (:func:`project`): the float
    graph whose reference simulation is what ``lava-fixed`` computes, up to the integer
    effects listed in the module docstring."""
    g = graph.clone()
    project(g, T)
    return g


class LoihiQuantizer:
    """The ``lava-fixed`` backend's quantiser for hardware-aware calibration, at ``T`` steps
    (the readout's scale bounds its integral over T steps)."""

    target = TARGET
    backend = "lava-fixed"

    def __init__(self, timesteps: int):
        self.timesteps = int(timesteps)

    def project(self, graph: Graph, layers: Iterable[str] | None = None) -> list[dict]:
        return project(graph, self.timesteps, layers)

    def grid(self, graph: Graph, layers: Iterable[str] | None = None) -> dict[str, dict]:
        return grid(graph, self.timesteps, layers)

    def describe(self) -> dict:
        return {"target": self.target, "backend": self.backend, "timesteps": self.timesteps}


# ---------------------------------------------------------------- helpers
def _ratio(q: np.ndarray, w: np.ndarray) -> np.ndarray:
    """q / w elementwise (1 where w is 0: such a weight is 0 on the grid as well)."""
    nz = w != 0
    return np.where(nz, q / np.where(nz, w, 1.0), 1.0)


def _reduce(full: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``full`` as an array of ``shape`` that broadcasts back to it (a per-channel parameter
    stays per channel), or ``full`` itself when it varies along a broadcast axis."""
    shape = tuple(shape)
    if len(shape) > full.ndim:
        return full
    lead = (1,) * (full.ndim - len(shape)) + shape
    idx = tuple(slice(0, 1) if d == 1 and f != 1 else slice(None) for d, f in zip(lead, full.shape))
    small = full[idx]
    if np.array_equal(np.broadcast_to(small, full.shape), full):
        return small.reshape(shape)
    return full


def _put(graph: Graph, sink: Node, t, q: np.ndarray, dyn: set[int]) -> None:
    """Write the dequantised weights ``q`` (normalised units) of synapse ``t`` into the graph."""
    owner = graph.node(t.owner)
    ratio = _ratio(q, t.w)
    if t.kind == "weighted":
        w = np.asarray(owner.params["weight"], dtype=np.float64)
        owner.set_param("weight", np.where(t.w != 0, w * ratio, 0.0))
    elif t.kind == "affine":  # an affine on spikes: its scale is the synapse
        scale = np.asarray(owner.params["scale"], dtype=np.float64)
        owner.set_param("scale", _reduce(_full(scale, t.w.shape) * ratio, scale.shape))
    elif owner is sink:  # spikes straight into the neuron / readout: give the synapse a node
        v = sink.inputs[0]
        c = _channel_vector(ratio, v.shape)
        scale = ratio if c is None else c.reshape((-1,) + (1,) * (len(v.shape) - 1))
        node = graph.add_node("affine", [v], {}, {"scale": scale, "shift": np.zeros(1)}, name=f"{sink.name}_synapse", shape=v.shape, before=sink)
        graph.set_input(sink, 0, node.output)
    elif owner.op == "add":  # a spike input of a residual add: its coefficient is the synapse
        i = _dynamic_input(owner, t.port, dyn)
        u = owner.inputs[i]
        coeffs = owner.attr("coeffs")
        coeffs = [1.0] * len(owner.inputs) if coeffs is None else list(coeffs)
        c = np.asarray(coeffs[i], dtype=np.float64).reshape(-1)
        c_full = _full(c.reshape((-1,) + (1,) * (len(u.shape) - 1)) if c.size > 1 else c[0], u.shape)
        new = _channel_vector(c_full * ratio, u.shape)
        if new is not None and np.allclose(new, _channel_vector(c_full, u.shape), rtol=1e-12, atol=0):
            return  # on the grid already (float64 attributes: keep them bit for bit)
        if new is None:
            raise BackendError(f"{owner.name} (add): the spike input {u.name!r} needs a coefficient that varies within a channel")
        coeffs[i] = float(new[0]) if np.all(new == new[0]) else [float(a) for a in new]
        owner.attrs["coeffs"] = coeffs
    else:
        raise BackendError(f"{owner.name} ({owner.op}): no parameter holds its synapse to {sink.name!r}")


def _dynamic_input(add: Node, port: int, dyn: set[int]) -> int:
    """The input index of the ``port``-th time-varying input of ``add``."""
    seen = -1
    for i, u in enumerate(add.inputs):
        if id(u) in dyn:
            seen += 1
            if seen == port:
                return i
    raise BackendError(f"{add.name} (add): no time-varying input number {port}")


def _put_bias(sink: Node, static: tuple[np.ndarray, bool], vth: int) -> tuple[Node, str, np.ndarray] | None:
    """Move a layer's constant input current (its bias) onto the lowering's bias grid (13-bit
    mantissa, 3-bit exponent, in units of 1 / (64 vth) thresholds), through the parameter
    that carries it: the bias of the conv / linear feeding the layer (or of one branch of its
    residual add), or the shift of an affine in front of it. Returns (node, parameter, old
    value) when it changed one, None where the bias depends on the input or nothing carries
    it per channel."""
    z, per_sample = static
    if per_sample:
        return None
    shape = sink.output.shape if sink.spec.has("neuron") else sink.inputs[0].shape
    theta = _full(sink.params["threshold"], shape) if sink.spec.has("neuron") else np.ones(shape)
    z = _full(z, shape)
    eff, _ = _bias_quantise(z / theta * vth * 64)
    delta = _channel_vector(eff / (vth * 64.0) * theta - z, shape)
    if delta is None or not np.any(delta):
        return None
    carrier = _bias_carrier(sink)
    if carrier is None:
        return None
    node, key, factor = carrier
    old = np.array(node.params[key])
    if key == "bias":
        node.set_param(key, old.astype(np.float64) + delta / factor)
    else:  # an affine's shift, per channel
        node.set_param(key, old.astype(np.float64) + delta.reshape((-1,) + (1,) * (len(shape) - 1)))
    return node, key, old


def _bias_carrier(sink: Node) -> tuple[Node, str, np.ndarray | float] | None:
    """(node, parameter, factor): where one unit of a layer's per-channel input current
    lives, read by nothing else (the factor: a residual add's coefficient of that branch)."""
    v = sink.inputs[0]
    p = v.producer
    if p is None or len(v.uses) != 1:
        return None
    if _biased(p):
        return p, "bias", 1.0
    if p.op == "affine":
        return p, "shift", 1.0
    if p.op == "add":
        coeffs = p.attr("coeffs")
        for i, u in enumerate(p.inputs):
            if _biased(u.producer) and len(u.uses) == 1:
                c = 1.0 if coeffs is None else np.asarray(coeffs[i], dtype=np.float64).reshape(-1)
                if np.all(np.asarray(c) != 0):
                    return u.producer, "bias", c if np.size(c) > 1 else float(np.asarray(c).reshape(-1)[0])
    return None


def _biased(node: Node | None) -> bool:
    """A conv / transposed conv, or a linear on a flat value: a bias per output channel."""
    return node is not None and node.spec.has("synaptic") and "bias" in node.params and (node.op != "linear" or len(node.output.shape) == 1)


def _put_v_init(sink: Node, vth: int) -> None:
    """The initial potential the lowering will hold: rint(v0 / theta * vth * 64), in float."""
    shape = sink.output.shape
    theta = _full(sink.params["threshold"], shape)
    v = np.asarray(sink.params["v_init"], dtype=np.float64)
    units = np.clip(np.rint(_full(v, shape) / theta * vth * 64), -V_LIMIT, V_LIMIT)
    sink.set_param("v_init", _reduce(units / (vth * 64.0) * theta, v.shape))
