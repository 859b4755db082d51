"""fuse-synapses: fold synapses that read synaptic currents into synapses that read spikes.

**Why.** On Loihi (the ``lava-fixed`` backend) a synapse turns the spikes of one neuron layer
into a current on the membrane of the next; it cannot read another synapse's current, and
one current cannot feed two neuron layers (each layer scales its synapses to its own
threshold). A network with linear layers between its activations breaks both rules:
MobileNetV2's *linear bottleneck* (the 1x1 projection has no activation) feeds the residual
add and the next block's 1x1 expansion, and the residual stream those adds build is never
rectified, so in the SNN ``project conv -> add -> expand conv`` has no neuron in between.

**Algebra** (exact up to float rounding). Every synapse is a bias-free linear map ``L`` plus
a constant. For a synapse ``S`` whose input is a current, the pass walks the current back
to where it comes from (spikes, or values that do not change over time) and writes
``S(x) = sum_k L_k(leaf_k) + M``:

* ``S(sum_i c_i x_i) = sum_i (S_nb diag(c_i))(x_i)``: a synapse distributes over an add
  (coefficients scale its input channels); a shared residual stream is read again, not moved;
* ``S_nb(C_nb(x))`` is one synapse when one of the two is a channel mixer (a 1x1, stride-1,
  unpadded convolution, any groups: ``W[o, i, taps] = sum_m A[o, m] W_C[m, i, taps]``) or both
  are linear layers (``W_S W_C``); the groups of the product are found from its zero pattern;
* ``S_nb(affine(x)) = (S_nb diag(scale))(x)`` for a per-channel scale; ``S(pad(x))`` is ``S``
  with the padding added to its own; ``S(concat(a, b))`` splits ``S`` by input channels;
* the constant ``M = S(tree with every leaf zero)`` is evaluated, not derived: it is the
  new synapse's bias when it is one value per channel, and otherwise (a padded kxk after a
  biased conv sees the bias only inside the border) a static per-position shift, an
  ``affine`` of scale 1 after the sum, which Lava adds to the neurons' bias current.

Terms reading the same leaf through the same geometry are summed into one synapse. A
synapse whose current cannot be written so (two spatial kernels in a row, a pooled current,
the output of a temporal op) is left as it is, with the reason in the pass record and a
notice. Then, so that every current feeds one neuron layer, a current still read by several
layers is recomputed per extra reader (its producing synapses duplicated), where all its
readers and producers are ones Lava maps (attention networks are left alone).

**Verification.** With the original graph kept aside, both run a few steps on a few samples
with every stateful node of the fused graph replaced by the original's output (the same
spikes): the input of every neuron and readout must agree to a relative ``1e-5``, or the pass
fails. A graph without such chains is returned untouched (nothing is copied or rewritten).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from snnc.errors import PassError
from snnc.ir.executor import Executor, Timed, static_values
from snnc.ir.graph import Graph, Node, Value
from snnc.passes.base import Pass, PassContext, register_pass

log = logging.getLogger(__name__)

TOLERANCE = 1e-5  # the largest relative difference of a neuron's input current, fused vs unfused
CHECK_SAMPLES = 4  # the check keeps every stateful node's input and output for these (memory)
CHECK_STEPS = 4

# Ops that carry a current toward a neuron in Lava's fixed-point lowering (and what reads one).
_CURRENT_CARRIERS = frozenset({"add", "affine", "pad", "avg_pool", "global_avg_pool", "reshape", "upsample", "concat"})


class _Refuse(Exception):
    """A chain the pass cannot fold exactly (the message says why)."""


@register_pass
class FuseSynapses(Pass):
    """After fuse-synapses every synaptic op (conv, transposed conv, linear) whose input varies
    over time reads spikes (a neuron's output, or pooling / padding / reshaping /
    concatenation of spikes), and every such current feeds one reader, except where a chain
    cannot be folded exactly (recorded, with the reason). The graph computes the same
    function: each neuron's input current is the same up to float rounding (checked)."""

    name = "fuse-synapses"
    requires_stage = "snn"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        targets = _targets(graph, _domains(graph))
        if not targets and not _shared_currents(graph, _domains(graph)):
            return False  # nothing to fuse: the graph is not copied or touched
        original = graph.clone()
        fused, refused = [], {}
        for name in targets:
            node = graph.node(name)
            try:
                terms = _fuse(graph, node, _domains(graph))
            except _Refuse as e:
                refused[name] = str(e)
                log.info("fuse-synapses: %s left as it is (%s)", name, e)
                continue
            fused.append({"node": name, "synapses": terms})
        duplicated = _duplicate_shared(graph)
        for name, why in refused.items():
            ctx.notices.append(f"fuse-synapses: {name!r} reads a synaptic current and cannot be fused ({why}); lava-fixed cannot run it")
        if not fused and not duplicated:  # only refusals: the graph is unchanged
            if refused:
                ctx.record(self.name, {"fused": [], "duplicated": [], "refused": refused})
            return False
        error = _check_equivalent(original, graph, ctx)
        graph.meta["fused_synapses"] = len(fused) + int(graph.meta.get("fused_synapses", 0))
        ctx.record(self.name, {"fused": fused, "duplicated": duplicated, "refused": refused, "max_relative_error": error})
        log.info("fuse-synapses: fused %d synapse(s), duplicated %d shared current(s)", len(fused), len(duplicated))
        return True


# ----------------------------------------------------------------- domains
def _domains(graph: Graph) -> dict[int, str]:
    """Per value: ``static`` (time-invariant), ``spikes`` (a spiking op's output, or routing
    of spikes), ``current`` (a synapse, affine or add output, or routing of one), or
    ``opaque`` (anything else: temporal ops, readouts), as the Lava lowering sees them."""
    static = static_values(graph)
    dom: dict[int, str] = {id(v): "static" for v in graph.inputs}
    for n in graph.nodes:
        v = n.output
        if id(v) in static:
            dom[id(v)] = "static"
            continue
        ins = {dom[id(u)] for u in n.inputs} - {"static"}
        spec = n.spec
        if spec.stateful and spec.has("spiking"):
            dom[id(v)] = "spikes"
        elif spec.has("synaptic") or n.op in ("affine", "add"):
            dom[id(v)] = "current"
        elif spec.has("preserves_amplitude") and not spec.stateful:
            dom[id(v)] = "opaque" if "opaque" in ins else ("current" if "current" in ins else "spikes")
        else:
            dom[id(v)] = "opaque"
    return dom


def _targets(graph: Graph, dom: dict[int, str]) -> list[str]:
    """The synapses reading a time-varying current, in graph order."""
    return [n.name for n in graph.nodes if n.spec.has("synaptic") and dom[id(n.inputs[0])] == "current"]


# --------------------------------------------------------- linear maps
@dataclass
class _Map:
    """A bias-free synapse: ``op`` (conv, conv_transpose, linear), resolved geometry and a
    float64 weight in the op's own layout (grouped)."""

    op: str
    weight: np.ndarray
    strides: list[int] = field(default_factory=list)
    pads: list[int] = field(default_factory=list)
    dilations: list[int] = field(default_factory=list)
    groups: int = 1
    output_padding: list[int] = field(default_factory=list)

    @staticmethod
    def of(node: Node) -> _Map:
        w = np.asarray(node.params["weight"], dtype=np.float64)
        if node.op == "linear":
            return _Map("linear", w)
        nd = w.ndim - 2
        m = _Map(
            node.op, w, list(node.attr("strides") or [1] * nd), list(node.attr("pads") or [0] * (2 * nd)),
            list(node.attr("dilations") or [1] * nd), int(node.attr("groups")),
        )  # fmt: skip
        if node.op == "conv_transpose":
            m.output_padding = list(node.attr("output_padding") or [0] * nd)
        return m

    def with_weight(self, w: np.ndarray, groups: int | None = None) -> _Map:
        g = self.groups if groups is None else groups
        return _Map(self.op, w, list(self.strides), list(self.pads), list(self.dilations), g, list(self.output_padding))

    def attrs(self) -> dict[str, Any]:
        if self.op == "linear":
            return {}
        a: dict[str, Any] = {"strides": self.strides, "pads": self.pads, "dilations": self.dilations, "groups": self.groups}
        if self.op == "conv_transpose":
            a["output_padding"] = self.output_padding
        return a

    def key(self) -> str:
        return json.dumps([self.op, list(self.weight.shape), self.attrs()])

    @property
    def out_channels(self) -> int:
        return self.weight.shape[1] * self.groups if self.op == "conv_transpose" else self.weight.shape[0]

    def describe(self) -> str:
        if self.op == "linear":
            return "linear"
        k = "x".join(map(str, self.weight.shape[2:]))
        extra = "" if all(s == 1 for s in self.strides) else f" stride {self.strides}"
        extra += "" if not any(self.pads) else " padded"
        return f"{k} {self.op}{extra}"


def _dense(m: _Map) -> np.ndarray:
    """The weight with its groups expanded to a full block-diagonal one: conv ``[C_out,
    C_in, *k]``, transposed conv ``[C_in, C_out, *k]``."""
    w, g = m.weight, m.groups
    a, b = w.shape[:2]
    if g == 1:
        return w
    ag = a // g
    d = np.zeros((a, b * g, *w.shape[2:]))
    for i in range(g):
        d[i * ag : (i + 1) * ag, i * b : (i + 1) * b] = w[i * ag : (i + 1) * ag]
    return d


def _grouped(d: np.ndarray) -> tuple[np.ndarray, int]:
    """The most groups a dense weight is block-diagonal in (exact zeros off the blocks), and
    the weight in grouped layout."""
    a, b = d.shape[:2]
    k = d.shape[2:]
    total = np.count_nonzero(d)
    for g in sorted((g for g in range(1, math.gcd(a, b) + 1) if a % g == 0 and b % g == 0), reverse=True):
        if g == 1:
            return d, 1
        blocks = d.reshape(g, a // g, g, b // g, -1)
        diag = blocks[np.arange(g), :, np.arange(g)]  # [g, a/g, b/g, K]
        if np.count_nonzero(diag) == total:
            return diag.reshape(a, b // g, *k), g
    return d, 1  # pragma: no cover - g = 1 always returns


def _pointwise(m: _Map) -> np.ndarray | None:
    """``[C_out, C_in]`` of a per-position channel mixer (1x1, stride 1, unpadded), or None."""
    if m.op == "linear" or any(d != 1 for d in m.weight.shape[2:]) or any(s != 1 for s in m.strides) or any(m.pads):
        return None
    if m.op == "conv_transpose" and any(m.output_padding):
        return None
    d = _dense(m)
    mat = d.reshape(d.shape[0], d.shape[1])
    return mat if m.op == "conv" else mat.T


def _compose(outer: _Map, inner: _Map) -> _Map:
    """The one synapse computing ``outer(inner(x))`` (both bias-free)."""
    if outer.op == "linear" and inner.op == "linear":
        return _Map("linear", outer.weight @ inner.weight)
    if "linear" in (outer.op, inner.op):
        raise _Refuse(f"a {outer.describe()} after a {inner.describe()}")
    a = _pointwise(outer)
    if a is not None:  # mix the channels of the inner synapse's output
        if inner.op == "conv":
            w, g = _grouped(np.einsum("om,mi...->oi...", a, _dense(inner)))
        else:
            w, g = _grouped(np.einsum("om,im...->io...", a, _dense(inner)))
        return inner.with_weight(w, g)
    b = _pointwise(inner)
    if b is not None:  # the outer synapse reads channel mixes of its input
        if outer.op == "conv":
            w, g = _grouped(np.einsum("om...,mi->oi...", _dense(outer), b))
        else:
            w, g = _grouped(np.einsum("mi,mo...->io...", b, _dense(outer)))
        return outer.with_weight(w, g)
    raise _Refuse(
        f"a {outer.describe()} after a {inner.describe()}: two spatial kernels in a row are not composed; put a neuron between them"
    )


def _input_vector(m: _Map, a: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``a`` broadcast to a synapse's per-sample input ``shape`` as one value per input
    channel (conv: axis 0; linear: the last axis)."""
    full = np.broadcast_to(np.asarray(a, dtype=np.float64), shape)
    if m.op == "linear":
        flat = full.reshape(-1, shape[-1])
    else:
        flat = full.reshape(shape[0], -1).T
    if not np.all(flat == flat[:1]):
        raise _Refuse(f"{what} differs within an input channel of the {m.describe()}")
    return flat[0].copy()


def _scale_inputs(m: _Map, c: np.ndarray) -> _Map:
    """``m`` reading ``diag(c) x`` (c: one factor per input channel)."""
    w = m.weight
    if m.op == "linear":
        return m.with_weight(w * c[None, :])
    tail = (1,) * (w.ndim - 2)
    if m.op == "conv_transpose":
        return m.with_weight(w * c.reshape(-1, 1, *tail))
    cout, cin_g = w.shape[:2]
    idx = (np.arange(cout)[:, None] // (cout // m.groups)) * cin_g + np.arange(cin_g)[None, :]
    return m.with_weight(w * c[idx].reshape(cout, cin_g, *tail))


def _input_slice(m: _Map, start: int, stop: int) -> _Map:
    """``m`` restricted to input channels ``start:stop`` (groups 1)."""
    if m.groups != 1:
        raise _Refuse(f"a grouped {m.describe()} reading a concatenation")
    if m.op == "conv_transpose":
        return m.with_weight(m.weight[start:stop])
    return m.with_weight(m.weight[:, start:stop])


# ------------------------------------------------------------- the rewrite
def _terms(m: _Map, v: Value, dom: dict[int, str], out: list[tuple[_Map, Value]]) -> None:
    """Append to ``out`` the bias-free synapses on leaves (spikes, static values) whose sum
    is ``m`` applied to ``v``'s time-varying part."""
    if dom[id(v)] in ("spikes", "static"):
        out.append((m, v))
        return
    n = v.producer
    if dom[id(v)] != "current" or n is None:
        raise _Refuse(f"its input comes from a {n.op if n is not None else 'graph input'}, which Lava does not map to spikes")
    if n.spec.has("synaptic"):
        _terms(_compose(m, _Map.of(n)), n.inputs[0], dom, out)
    elif n.op == "add":
        coeffs = n.attr("coeffs")
        for i, u in enumerate(n.inputs):
            mi = m
            if coeffs is not None:
                mi = _scale_inputs(m, _input_vector(m, _coeff(coeffs[i], v.shape), v.shape, f"the coefficient of {n.name!r}"))
            _terms(mi, u, dom, out)
    elif n.op == "affine":
        scale = _input_vector(m, n.params["scale"], v.shape, f"the scale of {n.name!r}")
        _terms(_scale_inputs(m, scale), n.inputs[0], dom, out)
    elif n.op == "pad":
        if m.op != "conv":
            raise _Refuse(f"a {m.describe()} after a padding")
        padded = m.with_weight(m.weight)
        padded.pads = [a + int(b) for a, b in zip(m.pads, n.attr("pads"))]
        _terms(padded, n.inputs[0], dom, out)
    elif n.op == "concat":
        axis = int(n.attr("axis")) - 1
        channel_axis = len(v.shape) - 1 if m.op == "linear" else 0
        if axis != channel_axis:
            raise _Refuse(f"a {m.describe()} after a concatenation along axis {axis + 1}, not its input channels")
        start = 0
        for u in n.inputs:
            size = u.shape[axis]
            _terms(_input_slice(m, start, start + size), u, dom, out)
            start += size
    else:
        raise _Refuse(f"a synapse after a {n.op} of currents cannot be folded; put a neuron between them")


def _coeff(c: Any, shape: tuple[int, ...]) -> np.ndarray:
    """An add coefficient (a scalar or one per channel) broadcast over ``shape``."""
    a = np.asarray(c, dtype=np.float64)
    if a.ndim == 1 and len(shape) > 1:
        a = a.reshape(-1, *([1] * (len(shape) - 1)))
    return np.broadcast_to(a, shape)


def _at_zero(v: Value, dom: dict[int, str], memo: dict[int, torch.Tensor]) -> torch.Tensor:
    """The current ``v`` (float64, one sample) with every leaf zero: its constant part."""
    if id(v) in memo:
        return memo[id(v)]
    if dom[id(v)] in ("spikes", "static"):
        out = torch.zeros((1, *v.shape), dtype=torch.float64)
    else:
        n = v.producer
        ins = [_at_zero(u, dom, memo) for u in n.inputs]
        params = {k: torch.from_numpy(np.asarray(a, dtype=np.float64)) for k, a in n.params.items()}
        out = n.spec.compute(ins, n.attr_dict(), params)
    memo[id(v)] = out
    return out


def _fuse(graph: Graph, s: Node, dom: dict[int, str]) -> int:
    """Replace synapse ``s`` (reading a current) by synapses on leaves; returns how many."""
    raw: list[tuple[_Map, Value]] = []
    _terms(_Map.of(s), s.inputs[0], dom, raw)
    merged: dict[tuple[int, str], tuple[_Map, Value]] = {}
    for m, leaf in raw:  # the same leaf through the same geometry: one synapse
        key = (id(leaf), m.key())
        if key in merged:
            m0, _ = merged[key]
            merged[key] = (m0.with_weight(m0.weight + m.weight), leaf)
        else:
            merged[key] = (m, leaf)
    terms = list(merged.values())
    params = {k: torch.from_numpy(np.asarray(a, dtype=np.float64)) for k, a in s.params.items()}
    const = s.spec.compute([_at_zero(s.inputs[0], dom, {})], s.attr_dict(), params)[0].numpy()
    bias = _bias_of(s.op, const)
    out_shape = s.output.shape
    values = []
    for k, (m, leaf) in enumerate(terms):
        b = bias if (k == 0 and bias is not None) else np.zeros(m.out_channels)
        node = graph.add_node(m.op, [leaf], m.attrs(), {"weight": m.weight, "bias": b}, name=f"{s.name}_fused", before=s)
        shape = node.spec.infer_shape([leaf.shape], node.attrs, node.params)
        if tuple(shape) != tuple(out_shape):  # pragma: no cover - a bug in the algebra above
            raise PassError(f"fuse-synapses: the fused synapse {node.name!r} has shape {list(shape)}, {s.name!r} had {list(out_shape)}")
        node.output.shape = tuple(out_shape)
        values.append(node.output)
    result = values[0]
    if len(values) > 1:
        result = graph.add_node("add", values, name=f"{s.name}_sum", shape=out_shape, before=s).output
    if bias is None:  # the constant varies by position: a static shift (Lava: the neurons' bias current)
        params = {"scale": np.ones(1), "shift": const}
        shift = graph.add_node("affine", [result], {}, params, name=f"{s.name}_shift", shape=out_shape, before=s)
        result = shift.output
    tree = s.inputs[0].producer
    graph.replace_all_uses(s.output, result)
    graph.remove_node(s)
    _remove_orphans(graph, tree)
    return len(terms)


def _bias_of(op: str, const: np.ndarray) -> np.ndarray | None:
    """``const`` (a synapse's output with zero input) as a per-channel bias, or None when
    it varies by position (beyond float rounding)."""
    flat = const.reshape(-1, const.shape[-1]) if op == "linear" else const.reshape(const.shape[0], -1).T
    ref = flat.mean(0)
    tol = 1e-9 * max(1.0, float(np.abs(flat).max(initial=0.0)))
    return ref if float(np.abs(flat - ref).max(initial=0.0)) <= tol else None


def _remove_orphans(graph: Graph, node: Node | None) -> None:
    """Remove ``node`` and what fed only it, once nothing reads them."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n is None or n.graph is not graph or n.output.uses or any(o is n.output for o in graph.outputs):
            continue
        producers = [v.producer for v in n.inputs]
        graph.remove_node(n)
        stack.extend(producers)


# ------------------------------------------------------ shared currents
def _clonable(v: Value, dom: dict[int, str]) -> bool:
    """The current ``v`` is made only of ops Lava maps on currents, down to its leaves."""
    if dom[id(v)] in ("spikes", "static"):
        return True
    n = v.producer
    if dom[id(v)] != "current" or n is None or not (n.spec.has("synaptic") or n.op in _CURRENT_CARRIERS):
        return False
    return all(_clonable(u, dom) for u in n.inputs)


def _legal_reader(n: Node) -> bool:
    return n.op in ("if_neuron", "readout") or n.op in _CURRENT_CARRIERS


def _shared_currents(graph: Graph, dom: dict[int, str]) -> list[Value]:
    """Time-varying currents read more than once, whose readers and producers Lava maps."""
    out = []
    for n in graph.nodes:
        v = n.output
        if dom[id(v)] != "current" or len(v.uses) < 2:
            continue
        if all(_legal_reader(u) for u, _ in v.uses) and _clonable(v, dom):
            out.append(v)
    return out


def _duplicate_shared(graph: Graph) -> list[str]:
    """Give every extra reader of a shared current its own copy of what computes it."""
    done = []
    while True:
        dom = _domains(graph)
        shared = _shared_currents(graph, dom)
        if not shared:
            return done
        v = shared[-1]  # the last in graph order first: copies are then read once each
        for reader, index in list(v.uses)[1:]:
            graph.set_input(reader, index, _copy_tree(graph, v, dom, reader))
        done.append(v.name)


def _copy_tree(graph: Graph, v: Value, dom: dict[int, str], before: Node) -> Value:
    if dom[id(v)] in ("spikes", "static"):
        return v
    n = v.producer
    ins = [_copy_tree(graph, u, dom, before) for u in n.inputs]
    params = {k: a.copy() for k, a in n.params.items()}
    return graph.add_node(n.op, ins, dict(n.attrs), params, name=f"{n.name}_copy", shape=v.shape, before=before).output


# --------------------------------------------------------------- the check
@torch.no_grad()
def _check_equivalent(original: Graph, fused: Graph, ctx: PassContext) -> float:
    """The largest relative difference between the input currents of every stateful node
    (neurons, readouts, ...) of ``fused`` and ``original``, both fed the original's spikes;
    a PassError when it exceeds :data:`TOLERANCE`."""
    T = max(1, min(int(ctx.timesteps), CHECK_STEPS))
    xs = _check_inputs(original, ctx)
    seen_in: dict[str, list[torch.Tensor]] = {}
    seen_out: dict[str, Timed] = {}

    def before(node: Node, env: dict) -> None:
        if node.spec.stateful:
            seen_in[node.name] = [env[id(v)].dense(T).clone() for v in node.inputs]

    def observe(node: Node, out: Timed) -> None:
        if node.spec.stateful:
            seen_out[node.name] = out

    Executor(original, timesteps=T).run(*xs, before=before, observe=observe)
    reference = dict(seen_in)
    worst = 0.0

    def compare(node: Node, env: dict) -> None:
        nonlocal worst
        if not node.spec.stateful:
            return
        ref = reference.pop(node.name, None)
        got = [env[id(v)].dense(T) for v in node.inputs]
        if ref is None or len(got) != len(ref):  # pragma: no cover - stateful nodes are never renamed
            raise PassError(f"fuse-synapses: {node.name!r} is new in the fused graph")
        for a, b in zip(ref, got):
            scale = float(a.abs().max()) if a.numel() else 0.0
            diff = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
            rel = diff / scale if scale > 0 else diff
            if rel > TOLERANCE:
                raise PassError(
                    f"fuse-synapses changed the input current of {node.name!r} (relative difference {rel:.3g} > {TOLERANCE:g}); "
                    "this is a bug: please report it, and convert without the pass (--passes without fuse-synapses) meanwhile"
                )
            worst = max(worst, rel)

    Executor(fused, timesteps=T).run(*xs, before=compare, replace=seen_out)
    if reference:  # pragma: no cover - stateful nodes are never removed
        raise PassError(f"fuse-synapses: {', '.join(reference)} missing from the fused graph")
    return worst


def _check_inputs(graph: Graph, ctx: PassContext) -> list[torch.Tensor]:
    """A few calibration samples, or seeded uniform values where there are none."""
    if ctx.calib is not None and len(ctx.calib) and len(graph.inputs) == 1 and tuple(ctx.calib.shape[1:]) == tuple(graph.inputs[0].shape):
        return [torch.from_numpy(np.ascontiguousarray(ctx.calib[:CHECK_SAMPLES], dtype=np.float32))]
    r = np.random.default_rng(ctx.seed)
    return [torch.from_numpy(r.uniform(0, 1, (CHECK_SAMPLES, *v.shape)).astype(np.float32)) for v in graph.inputs]
