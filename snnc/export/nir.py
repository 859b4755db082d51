"""Export an SNN-stage graph to NIR (the Neuromorphic Intermediate Representation), and
run a NIR file again to check what was written.

Two variants (``reset=``):

``soft`` (default) — the network exactly as the reference simulator runs it. NIR's only
spiking neurons reset to a fixed potential, so each subtract-reset ``if_neuron`` is built
from NIR primitives instead::

    z ──► I (r = 1/dt) ──► Threshold (θ − v_init) ──► [Scale θ] ──► consumers
           ▲                        │
           └──── Scale (−θ) ◄───────┘        (recurrent edge: one step late)

The integrator holds w(t) = w(t−1) + z(t) − θ·s(t−1), which is v(t) − v_init for the
reference's potential before its reset, so comparing w with θ − v_init fires exactly
when v(t) ≥ θ. NIR's Threshold compares with ``>``; the threshold written is the largest
float32 below θ − v_init, so ``w > θ'`` and ``v ≥ θ`` agree in float32 (ties included).
The readout becomes an integrator ``I``: its output after t steps is Σ x, and the
consumer divides by t. Every other op maps to its NIR node (see :func:`to_nir`).
The burst and signed neuron variants (``max_spikes`` > 1, ``signed``) are refused with an
ExportError (NIR's spiking nodes emit binary, non-negative spikes): convert with
``--neuron if`` to export.

``hard`` — every neuron becomes NIR's ``IF`` (reset to 0), normalised to threshold 1:
per-channel thresholds are divided into the incoming weights and biases, and each layer's
output spike scale is multiplied into the weights of its consumers. The initial
potential cannot be expressed (NIR's IF has none: it starts at 0). This is a different
network from the converted one: it is what a consumer that only understands NIR's IF
runs, e.g. SpikingJelly's ``import_from_nir``. The output is the last layer's current
(no integrator: the consumer averages it over the steps).

``dt`` only fixes the unit of the integrators' ``r``: every integrator is written with
r = 1/dt, so one step of length dt adds its input once (v += dt·r·I = I). The file's
metadata records dt, the reset variant, the readout convention and the T the model was
converted for.
"""

from __future__ import annotations

import io
import keyword
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from snnc.defaults import DEFAULT_NIR_DT
from snnc.errors import ExportError, UnsupportedOpError
from snnc.ir.graph import Graph, Node, Value
from snnc.ir.ops import TEMPORAL_TARGET, neuron_variant
from snnc.ir.verify import verify

EXPORT_FORMATS = ("nir",)
RESETS = ("soft", "hard")
DEFAULT_DT = DEFAULT_NIR_DT
EXECUTORS = ("nirtorch", "spikingjelly")

# Node types SpikingJelly 2.0's import_from_nir maps (plus nirtorch's Input/Output/SumPool2d).
SPIKINGJELLY_TYPES = frozenset({"Input", "Output", "Affine", "Linear", "Conv1d", "Conv2d", "AvgPool2d", "SumPool2d", "Flatten", "IF", "LIF", "CubaLIF"})

_UNSUPPORTED_HINTS = {
    "spiking_max_pool": "NIR has no spiking max-pooling; re-convert with `--maxpool avg` (MaxPool as average pooling, "
    "which NIR expresses as AvgPool2d) to export this model",
    "concat": "NIR has no concatenation (the edges into a NIR node are summed, not stacked); "
    "a model with Concat cannot be exported to NIR",
    "upsample": "NIR 1.0 has no upsampling primitive; a model with Upsample/Resize cannot be exported to NIR",
    "conv_transpose": "NIR 1.0 has no transposed convolution; a model with ConvTranspose cannot be exported to NIR",
    "pad": "NIR 1.0 has no padding primitive; pad inside the convolution that reads the value (its padding) and re-convert",
    "transpose": "NIR 1.0 has no transpose (token layouts of attention networks); an attention network cannot be exported to NIR",
    "slice": "NIR 1.0 has no slicing primitive; an attention network cannot be exported to NIR",
    "select": "NIR 1.0 has no indexing primitive; an attention network cannot be exported to NIR",
    "concat_constant": "NIR has no concatenation; a model with a class token cannot be exported to NIR",
    **{op: f"NIR has no node for it: a target needs a {need}" for op, need in TEMPORAL_TARGET.items()},
}


# ------------------------------------------------------------------ public API
@dataclass
class ExportSummary:
    """What :func:`export_nir` wrote."""

    path: str
    format: str
    reset: str
    dt: float
    timesteps: int | None
    nodes: int
    edges: int
    node_types: dict[str, int]
    spiking_layers: int
    bytes: int
    spikingjelly: bool  # SpikingJelly's import_from_nir can load the file
    spikingjelly_reason: str  # why not (empty when it can)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def to_nir(graph: Graph, *, reset: str = "soft", dt: float = DEFAULT_DT, timesteps: int | None = None) -> nir.NIRGraph:
    """The SNN-stage ``graph`` as a :class:`nir.NIRGraph` (see the module docstring for the
    two ``reset`` variants).

    Op mapping: conv → Conv1d/Conv2d (grouped convolutions as dense block-diagonal ones:
    NIR 1.0.8's types and nirtorch assume groups = 1), linear → Affine, affine → 1×1
    convolution with a diagonal weight (or an Affine on flat values; a Scale when there is
    no shift), avg_pool → AvgPool2d without padding, else a block-diagonal convolution (with
    a per-position Scale where padding is not counted), global_avg_pool → AvgPool2d over the
    map (+ Flatten), flattening reshape → Flatten, add → NIR's fan-in sum (a Scale on each
    edge whose coefficient is not 1), readout → I (soft) or the graph output (hard).
    spiking_max_pool, concat, upsample, conv_transpose and non-flattening reshapes raise
    :class:`~snnc.errors.UnsupportedOpError`.
    """
    if reset not in RESETS:
        raise ExportError(f"unknown reset variant {reset!r}; choose one of {', '.join(RESETS)}")
    if isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating, np.integer)) or not (dt > 0 and np.isfinite(dt) and np.isfinite(1.0 / dt)):
        raise ExportError(f"dt must be a positive number, got {dt!r}")
    if graph.stage != "snn":
        raise ExportError(f"graph {graph.name!r} is in the {graph.stage.upper()} stage; only a converted (SNN-stage) graph can be exported")
    verify(graph, "snn")
    low = _Lowering(graph, reset, float(dt))
    nodes, edges = low.run()
    meta = _metadata(graph, reset, float(dt), timesteps, low)
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=True)
    except (ValueError, AssertionError) as e:  # a type mismatch here is a bug in this exporter
        raise ExportError(f"the NIR graph built from {graph.name!r} does not type-check: {e}") from e


def export_nir(model: Any, path: str | os.PathLike, *, reset: str = "soft", dt: float = DEFAULT_DT) -> ExportSummary:
    """Write ``model`` (a :class:`~snnc.model.SpikingModel`, a ``.snn`` path or an SNN-stage
    :class:`~snnc.ir.graph.Graph`) as a NIR file (HDF5) at ``path``, atomically: on any
    error no file is left behind. Returns an :class:`ExportSummary`."""
    from snnc.utils.paths import check_output_path

    source = model if isinstance(model, (str, os.PathLike)) else None
    check_output_path(path, parents=True, inputs=[("the artifact being exported", source)])
    graph, timesteps = _graph_of(model)
    ngraph = to_nir(graph, reset=reset, dt=dt, timesteps=timesteps)
    buf = io.BytesIO()
    nir.write(buf, ngraph)
    data = buf.getvalue()
    from snnc.utils.io import atomic_write

    with atomic_write(path, "wb") as fh:
        fh.write(data)
    types: dict[str, int] = {}
    for node in ngraph.nodes.values():
        types[type(node).__name__] = types.get(type(node).__name__, 0) + 1
    ok, why = spikingjelly_compatible(ngraph, dt)
    notes = list(ngraph.metadata.get("notes", "").split("\n")) if ngraph.metadata.get("notes") else []
    return ExportSummary(
        path=str(path), format="nir", reset=reset, dt=float(dt), timesteps=timesteps, nodes=len(ngraph.nodes), edges=len(ngraph.edges),
        node_types=types, spiking_layers=len(graph.having("neuron")), bytes=len(data), spikingjelly=ok, spikingjelly_reason=why, notes=notes,
    )  # fmt: skip


def read_nir(path: str | os.PathLike) -> nir.NIRGraph:
    """Read a NIR file, with a clear error when it is missing or not NIR."""
    p = Path(path)
    if not p.exists():
        raise ExportError(f"NIR file {str(p)!r} does not exist")
    try:
        return nir.read(p)
    except Exception as e:  # h5py / nir raise many kinds
        raise ExportError(f"{str(p)!r} is not a readable NIR file ({type(e).__name__}: {e})") from e


def hard_reset_reference(graph: Graph) -> Graph:
    """The network the ``hard`` export describes, in snnc's IR: a copy of ``graph`` whose
    neurons reset to zero and start at v = 0 (run it with the reference simulator to
    compare with a re-imported hard-variant file)."""
    g = graph.clone()
    for n in g.having("neuron"):
        n.attrs["reset"] = "zero"
        n.set_param("v_init", np.zeros_like(n.params["v_init"]))
    return g


def spikingjelly_compatible(graph: nir.NIRGraph, dt: float = DEFAULT_DT) -> tuple[bool, str]:
    """Whether SpikingJelly 2.0's ``import_from_nir(graph, dt=dt)`` can load ``graph``, and
    why not: it maps only some node types and needs uniform IF parameters with r = 1/dt."""
    for name, node in graph.nodes.items():
        kind = type(node).__name__
        if kind not in SPIKINGJELLY_TYPES:
            return False, f"node {name!r} is a {kind}, which SpikingJelly does not import (the soft variant needs I, Threshold and Scale)"
        if kind in ("Conv1d", "Conv2d") and int(np.asarray(node.groups)) != 1:
            return False, f"node {name!r} is a grouped convolution"
        if kind == "IF":
            for key in ("r", "v_threshold", "v_reset"):
                if np.unique(np.asarray(getattr(node, key))).size != 1:
                    return False, f"IF node {name!r} has a non-uniform {key}"
            if not np.isclose(float(np.asarray(node.r).flat[0]), 1.0 / dt, rtol=1e-6):
                return False, f"IF node {name!r} has r != 1/dt"
    return True, ""


# ------------------------------------------------------------------ lowering
@dataclass
class _Term:
    """One contribution to a value: the output of NIR node ``src`` times ``factors`` (in
    order, each broadcastable to the value's shape). ``exclusive``: nothing else reads
    ``src``, so a factor may be folded into its weights."""

    src: str
    factors: tuple[np.ndarray, ...] = ()
    exclusive: bool = False

    def times(self, f: np.ndarray) -> _Term:
        return _Term(self.src, self.factors + (np.asarray(f, dtype=np.float32),), self.exclusive)


class _Lowering:
    def __init__(self, graph: Graph, reset: str, dt: float):
        self.graph = graph
        self.hard = reset == "hard"
        self.dt = dt
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.owned: set[str] = set()  # Conv/Affine nodes made here whose weights may take a folded factor
        self.vals: dict[int, list[_Term]] = {}
        self.scale_cache: dict[tuple, str] = {}
        self.notes: list[str] = []
        self.readout = "integrator" if not self.hard else "average"

    # ------------------------------------------------------------- plumbing
    def add(self, base: str, node: nir.NIRNode, snnc_node: str | None = None, role: str | None = None) -> str:
        name = _sanitize(base)
        if name in self.nodes:
            i = 1
            while f"{name}_{i}" in self.nodes:
                i += 1
            name = f"{name}_{i}"
        meta = {}
        if snnc_node is not None:
            meta["snnc_node"] = snnc_node
        if role is not None:
            meta["role"] = role
        node.metadata = meta
        self.nodes[name] = node
        return name

    def edge(self, src: str, dst: str) -> None:
        if (src, dst) in self.edges:
            raise ExportError(f"internal: duplicate NIR edge {src} -> {dst}")
        self.edges.append((src, dst))

    def read(self, value: Value) -> list[_Term]:
        """``value``'s terms as one reader sees them (exclusive only for a sole reader)."""
        sole = len(value.uses) == 1 and all(value is not o for o in self.graph.outputs)
        return [_Term(t.src, t.factors, t.exclusive and sole) for t in self.vals[id(value)]]

    def set(self, node: Node, terms: list[_Term]) -> None:
        self.vals[id(node.output)] = terms

    def own(self, node: Node, name: str) -> None:
        self.owned.add(name)
        self.set(node, [_Term(name, (), True)])

    @staticmethod
    def merged(terms: list[_Term]) -> list[_Term]:
        """Identical terms (same source and factors) merged into one with a factor k
        (a NIR graph cannot hold the same edge twice)."""
        out: list[_Term] = []
        keys: list[tuple] = []
        counts: list[int] = []
        for t in terms:
            key = (t.src, tuple((f.shape, f.tobytes()) for f in t.factors))
            if key in keys:
                counts[keys.index(key)] += 1
            else:
                keys.append(key)
                counts.append(1)
                out.append(t)
        return [t if k == 1 else _Term(t.src, t.factors + (np.float32(k),), False) for t, k in zip(out, counts)]

    def materialise(self, term: _Term, shape: tuple[int, ...], extra: np.ndarray | None = None) -> str:
        """A NIR node whose output is ``term`` (times ``extra``)."""
        factors = term.factors + ((extra,) if extra is not None else ())
        factors = tuple(f for f in factors if not np.all(np.asarray(f) == 1))
        if not factors:
            return term.src
        if self.hard:  # one node for the product: a diagonal conv/Affine when per channel (SpikingJelly imports those)
            f = _product(factors, shape)
            vec = _per_channel(f, shape)
            if vec is not None:
                name = self.diagonal(f"{term.src}_scale", vec, None, shape)
            else:
                name = self.add(f"{term.src}_scale", nir.Scale(scale=f.astype(np.float32)), role="per-neuron scale")
            self.edge(term.src, name)
            return name
        # soft: one Scale per factor, in order, as the reference multiplies (shared by readers)
        src = term.src
        for f in factors:
            full = np.ascontiguousarray(np.broadcast_to(np.asarray(f, np.float32), shape))
            key = (src, full.shape, full.tobytes())
            if key not in self.scale_cache:
                name = self.add(f"{src}_scale", nir.Scale(scale=full), role="scale")
                self.edge(src, name)
                self.scale_cache[key] = name
            src = self.scale_cache[key]
        return src

    def connect(self, terms: list[_Term], dst: str, shape: tuple[int, ...]) -> None:
        """Edges from every term into ``dst`` (NIR sums the edges into a node)."""
        for t in self.merged(terms):
            self.edge(self.materialise(t, shape), dst)

    def diagonal(self, base: str, vec: np.ndarray, bias: np.ndarray | None, shape: tuple[int, ...], snnc_node: str | None = None, role: str = "per-channel scale") -> str:
        """``y = vec ⊙ x (+ bias)`` per channel: a 1×1 convolution with a diagonal weight
        (an Affine with a diagonal matrix on flat values)."""
        c = shape[0]
        vec = np.asarray(vec, np.float32).reshape(c)
        b = np.zeros(c, np.float32) if bias is None else np.asarray(bias, np.float32).reshape(c)
        nd = len(shape) - 1
        if nd == 0:
            node: nir.NIRNode = nir.Affine(weight=np.diag(vec).astype(np.float32), bias=b)
        else:
            w = np.zeros((c, c) + (1,) * nd, np.float32)
            w[(np.arange(c), np.arange(c)) + (0,) * nd] = vec
            node = _conv_node(w, b, shape, [1] * nd, [0] * nd, [1] * nd, base)
        name = self.add(base, node, snnc_node, role)
        self.owned.add(name)
        return name

    def fold_into_input(self, w: np.ndarray, terms: list[_Term], in_shape: tuple[int, ...]) -> tuple[np.ndarray, list[_Term]]:
        """hard: a single term's per-channel factor multiplied into the input channels
        (axis 1) of the consumer's weight."""
        if not self.hard or len(terms) != 1 or not terms[0].factors:
            return w, terms
        t = terms[0]
        vec = _per_channel(_product(t.factors, in_shape), in_shape)
        if vec is None:
            return w, terms
        w = (w.astype(np.float64) * vec.reshape((1, -1) + (1,) * (w.ndim - 2))).astype(np.float32)
        return w, [_Term(t.src, (), t.exclusive)]

    def fold_into_output(self, term: _Term, f: np.ndarray, shape: tuple[int, ...], shift: np.ndarray | None = None) -> bool:
        """hard: multiply a per-channel ``f`` (then add ``shift``) into the output channels
        of the Conv/Affine ``term.src`` when nothing else reads it; True when done."""
        if not self.hard or not term.exclusive or term.src not in self.owned:
            return False
        vec = _per_channel(f, shape)
        if vec is None:
            return False
        sh = None
        if shift is not None:
            sh = _per_channel(shift, shape)
            if sh is None:
                return False
        node = self.nodes[term.src]
        w = node.weight.astype(np.float64) * vec.reshape((-1,) + (1,) * (node.weight.ndim - 1))
        b = node.bias.astype(np.float64) * vec + (0.0 if sh is None else sh)
        node.weight = w.astype(np.float32)
        node.bias = b.astype(np.float32)
        return True

    def passthrough(self, terms: list[_Term], in_shape, transform: Callable[[np.ndarray], np.ndarray] | None) -> tuple[list[_Term], bool]:
        """hard: a single term's factor carried through a channel-wise linear op
        (``transform`` maps the factor to the op's output, None when it cannot). Returns
        the terms to connect and the carried factor (None when nothing was carried)."""
        if self.hard and len(terms) == 1 and terms[0].factors and transform is not None:
            f = transform(_product(terms[0].factors, in_shape))
            if f is not None:
                return [_Term(terms[0].src, (), False)], f
        return terms, None

    # ------------------------------------------------------------- the walk
    def run(self) -> tuple[dict[str, nir.NIRNode], list[tuple[str, str]]]:
        g = self.graph
        for v in g.inputs:
            name = self.add("input" if len(g.inputs) == 1 else f"input_{v.name}", nir.Input(input_type=np.array(v.shape)), v.name, "graph input")
            self.vals[id(v)] = [_Term(name, (), False)]
        for n in g.nodes:
            fn = getattr(self, f"_op_{n.op}", None)
            if fn is None:
                hint = _UNSUPPORTED_HINTS.get(n.op, "this op has no NIR counterpart")
                raise UnsupportedOpError(n.op, n.name, hint, where="NIR export")
            fn(n)
        for i, v in enumerate(g.outputs):
            src = self.output_source(v)
            out = self.add("output" if i == 0 else f"output_{i}", nir.Output(output_type=np.array(v.shape)), role="graph output")
            self.edge(src, out)
        return self.nodes, self.edges

    def output_source(self, v: Value) -> str:
        terms = self.merged([_Term(t.src, t.factors, t.exclusive and not v.uses) for t in self.vals[id(v)]])
        if len(terms) == 1:
            t = terms[0]
            if not t.factors:
                return t.src
            f = _product(t.factors, v.shape)
            if self.fold_into_output(t, f, v.shape):
                return t.src
            return self.materialise(t, v.shape)
        # an output fed by several edges: sum them in an identity node (nirtorch's Output does not sum)
        name = self.diagonal(f"{v.name}_sum", np.ones(v.shape[0], np.float32), None, v.shape, role="sum of the output's edges")
        self.connect(terms, name, v.shape)
        return name

    # ------------------------------------------------------------- ops
    def _op_conv(self, n: Node) -> None:
        x = n.inputs[0]
        nd = len(x.shape) - 1
        if nd not in (1, 2):
            raise UnsupportedOpError("conv", n.name, f"NIR has 1-d and 2-d convolutions only; this one is {nd}-d", where="NIR export")
        strides = list(n.attr("strides") or [1] * nd)
        dil = list(n.attr("dilations") or [1] * nd)
        pads = list(n.attr("pads") or [0] * (2 * nd))
        if pads[:nd] != pads[nd:]:
            raise ExportError(
                f"node {n.name!r} (conv): asymmetric padding {pads} cannot be written in NIR, whose convolutions pad each side "
                "equally; pad the input explicitly in the model (symmetric convolution padding) and re-convert"
            )
        w = _dense_weight(n.params["weight"], int(n.attr("groups")), x.shape[0])
        w, terms = self.fold_into_input(w, self.read(x), x.shape)
        name = self.add(n.name, _conv_node(w, n.params["bias"], x.shape, strides, pads[:nd], dil, n.name), n.name, "conv")
        self.connect(terms, name, x.shape)
        self.own(n, name)

    def _op_linear(self, n: Node) -> None:
        x = n.inputs[0]
        if len(x.shape) != 1:
            raise UnsupportedOpError(
                "linear", n.name, f"a fully connected layer over the last axis of a {list(x.shape)} value has no NIR counterpart "
                "(NIR's Affine maps flat vectors); flatten before the layer", where="NIR export",
            )  # fmt: skip
        w, terms = self.fold_into_input(n.params["weight"].astype(np.float32), self.read(x), x.shape)
        name = self.add(n.name, nir.Affine(weight=w, bias=n.params["bias"].astype(np.float32)), n.name, "linear")
        self.connect(terms, name, x.shape)
        self.own(n, name)

    def _op_affine(self, n: Node) -> None:
        x = n.inputs[0]
        shape = x.shape
        terms = self.read(x)
        scale = _fit(n.params["scale"], shape, n)
        shift = _fit(n.params["shift"], shape, n)
        if not np.any(shift):
            self.set(n, [t.times(scale) for t in terms])  # a pure scale: a factor on every term
            return
        if self.hard and len(terms) == 1:
            t = terms[0]
            f = _product(t.factors + (scale,), shape)
            if self.fold_into_output(t, f, shape, shift):
                self.set(n, [_Term(t.src, (), t.exclusive)])
                return
        sh = _per_channel(shift, shape) if len(shape) > 1 else shift.astype(np.float32).reshape(shape)
        if sh is None:
            raise ExportError(
                f"node {n.name!r} (affine): its shift varies within a channel, which NIR cannot add to a {list(shape)} value "
                "(biases are per channel); fold the constant into the preceding layer of the model and re-convert"
            )
        vec = _per_channel(scale, shape)
        if vec is None:  # per-position scale: a Scale first, then a diagonal identity that adds the shift
            terms = [t.times(scale) for t in terms]
            vec = np.ones(shape[0], np.float32)
        elif self.hard and len(terms) == 1 and terms[0].factors:  # carry the term's own per-channel factor into the diagonal
            fvec = _per_channel(_product(terms[0].factors, shape), shape)
            if fvec is not None:
                vec = vec.astype(np.float64) * fvec
                terms = [_Term(terms[0].src, (), terms[0].exclusive)]
        name = self.diagonal(n.name, vec, sh, shape, n.name, "affine: per-channel scale and shift")
        self.connect(terms, name, shape)
        self.own(n, name)

    def _op_add(self, n: Node) -> None:
        shape = n.output.shape
        coeffs = n.attr("coeffs")
        terms: list[_Term] = []
        for i, v in enumerate(n.inputs):
            ts = self.read(v)
            if coeffs is not None:
                c = np.asarray(coeffs[i], dtype=np.float32)
                if c.ndim == 1 and len(shape) > 1:
                    c = c.reshape((-1,) + (1,) * (len(shape) - 1))
                if not np.all(c == 1):
                    ts = [t.times(c) for t in ts]
            terms += ts
        self.set(n, terms)

    def _op_reshape(self, n: Node) -> None:
        x = n.inputs[0]
        src_shape, dst_shape = tuple(x.shape), tuple(n.attr("shape"))
        terms = self.read(x)
        if src_shape == dst_shape:
            self.set(n, terms)
            return
        dims = _flatten_dims(src_shape, dst_shape)
        if dims is None:
            raise UnsupportedOpError(
                "reshape", n.name, f"only flattening reshapes can be written in NIR (Flatten); {list(src_shape)} -> {list(dst_shape)} "
                "is not one", where="NIR export",
            )  # fmt: skip
        start, end = dims
        terms, carried = self.passthrough(terms, src_shape, lambda f: np.broadcast_to(f, src_shape).reshape(dst_shape))
        node = nir.Flatten(input_type={"input": np.array(src_shape)}, start_dim=start, end_dim=-1 if end == len(src_shape) - 1 else end)
        name = self.add(n.name, node, n.name, "flatten")
        self.connect(terms, name, src_shape)
        self.set(n, [_Term(name, () if carried is None else (carried.astype(np.float32),), False)])

    def _op_avg_pool(self, n: Node) -> None:
        x = n.inputs[0]
        shape, out_shape = tuple(x.shape), tuple(n.output.shape)
        nd = len(shape) - 1
        k = list(n.attr("kernel"))
        strides = list(n.attr("strides") or k)
        pads = list(n.attr("pads") or [0] * (2 * nd))
        cip = bool(n.attr("count_include_pad"))
        if pads[:nd] != pads[nd:]:
            raise ExportError(f"node {n.name!r} (avg_pool): asymmetric padding {pads} cannot be written in NIR (symmetric padding only)")
        floor_out = tuple(int((shape[1 + i] + 2 * pads[i] - k[i]) // strides[i] + 1) for i in range(nd))
        if floor_out != out_shape[1:]:
            raise ExportError(
                f"node {n.name!r} (avg_pool): ceil_mode adds partial windows at the border, which NIR's pooling cannot express; "
                "use ceil_mode=False (or pad the input so the windows fit) and re-convert"
            )
        terms, carried = self.passthrough(self.read(x), shape, lambda f: _channel_factor(f, shape, out_shape))
        padded = any(pads[:nd])
        if nd == 2 and not padded:
            node: nir.NIRNode = nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(strides), padding=np.array([0, 0]))
        else:  # 1-d, or padded: a block-diagonal convolution (zero padding, divisor = kernel size)
            c = shape[0]
            w = np.zeros((c, c) + tuple(k), np.float32)
            w[np.arange(c), np.arange(c)] = 1.0 / float(np.prod(k))
            node = _conv_node(w, np.zeros(c, np.float32), shape, strides, pads[:nd], [1] * nd, n.name)
        name = self.add(n.name, node, n.name, "average pooling")
        self.connect(terms, name, shape)
        factors: tuple[np.ndarray, ...] = () if carried is None else (carried.astype(np.float32),)
        if padded and not cip:  # the divisor counts only the input positions: a per-position correction
            factors += (_count_correction(k, strides, pads[:nd], shape, out_shape),)
        self.set(n, [_Term(name, factors, False)])

    def _op_global_avg_pool(self, n: Node) -> None:
        x = n.inputs[0]
        shape, out_shape = tuple(x.shape), tuple(n.output.shape)
        nd = len(shape) - 1
        terms = self.read(x)
        if nd == 0:
            self.set(n, terms)
            return
        if nd > 2:
            raise UnsupportedOpError("global_avg_pool", n.name, "NIR pools 2-d maps only", where="NIR export")
        c = shape[0]
        kept = (c,) + (1,) * nd
        terms, carried = self.passthrough(terms, shape, lambda f: _channel_factor(f, shape, out_shape))
        if nd == 2:
            node: nir.NIRNode = nir.AvgPool2d(kernel_size=np.array(shape[1:]), stride=np.array(shape[1:]), padding=np.array([0, 0]))
        else:
            w = np.zeros((c, c, shape[1]), np.float32)
            w[np.arange(c), np.arange(c)] = 1.0 / shape[1]
            node = _conv_node(w, np.zeros(c, np.float32), shape, [1], [0], [1], n.name)
        name = self.add(n.name, node, n.name, "global average pooling")
        self.connect(terms, name, shape)
        if out_shape != kept:
            flat = self.add(f"{n.name}_flatten", nir.Flatten(input_type={"input": np.array(kept)}, start_dim=0, end_dim=-1), n.name, "flatten")
            self.edge(name, flat)
            name = flat
        self.set(n, [_Term(name, () if carried is None else (carried.astype(np.float32),), False)])

    def _op_if_neuron(self, n: Node) -> None:
        x = n.inputs[0]
        shape = tuple(n.output.shape)
        theta = _fit(n.params["threshold"], shape, n)
        v0 = _fit(n.params["v_init"], shape, n)
        if np.any(theta <= 0):
            raise ExportError(f"node {n.name!r} (if_neuron): thresholds must be positive")
        _refuse_variant(n)
        terms = self.read(x)
        r = np.full(shape, 1.0 / self.dt, np.float32)
        out_factors: tuple[np.ndarray, ...] = (n.params["threshold"].astype(np.float32),) if n.attr("spike_scale") == "threshold" else ()
        if self.hard:
            name = self.add(n.name, nir.IF(r=r, v_threshold=np.ones(shape, np.float32), v_reset=np.zeros(shape, np.float32)), n.name, "IF neuron, threshold normalised to 1")
            inv = 1.0 / theta.astype(np.float64)
            for t in self.merged(terms):
                f = _product(t.factors, shape) * inv
                if self.fold_into_output(t, f, shape):
                    self.edge(t.src, name)
                else:
                    self.edge(self.materialise(_Term(t.src, (f,), False), shape), name)
            if _per_channel(inv, shape) is None:
                self.notes.append(f"{n.name}: per-neuron thresholds are applied by a Scale node before its IF")
            self.set(n, [_Term(name, out_factors, False)])
            return
        if n.attr("reset") == "subtract":
            v = self.add(f"{n.name}_v", nir.I(r=r), n.name, "membrane potential minus v_init (integrator)")
            s = self.add(f"{n.name}_spk", nir.Threshold(threshold=_below(theta - v0)), n.name, "spikes: w > θ − v_init")
            fb = self.add(f"{n.name}_reset", nir.Scale(scale=(-theta).astype(np.float32)), n.name, "soft reset: −θ·s, one step late")
            self.connect(terms, v, shape)
            self.edge(v, s)
            self.edge(s, fb)
            self.edge(fb, v)
        else:  # reset to zero: NIR's IF, exactly, when the neuron starts at 0
            if np.any(v0 != 0):
                raise ExportError(
                    f"node {n.name!r} (if_neuron): a reset-to-zero neuron with a non-zero initial potential cannot be written in NIR "
                    "(its IF neuron has no initial potential, and a hard reset cannot be built from integrators); "
                    "convert with insert-if{v_init=zero} or use subtract reset"
                )
            s = self.add(n.name, nir.IF(r=r, v_threshold=_below(theta), v_reset=np.zeros(shape, np.float32)), n.name, "IF neuron (reset to zero)")
            self.connect(terms, s, shape)
        self.set(n, [_Term(s, out_factors, False)])

    def _op_readout(self, n: Node) -> None:
        x = n.inputs[0]
        if self.hard:  # the output is the readout's input; the consumer averages it over the steps
            self.set(n, self.read(x))
            return
        shape = tuple(n.output.shape)
        name = self.add(n.name, nir.I(r=np.full(shape, 1.0 / self.dt, np.float32)), n.name, "readout: integral of the input; divide by t")
        self.connect(self.read(x), name, shape)
        self.set(n, [_Term(name, (), False)])


# ------------------------------------------------------------------ helpers
def _graph_of(model: Any) -> tuple[Graph, int | None]:
    """The SNN graph and converted-for T of a model (anything with ``snn`` and ``timesteps``:
    a :class:`~snnc.model.SpikingModel`), a ``.snn`` path, or a graph."""
    if isinstance(model, (str, os.PathLike)):
        from snnc.ir.serialize import load_artifact

        graphs, manifest = load_artifact(model)
        if "snn" not in graphs:
            raise ExportError(f"{str(model)!r} has no SNN graph; create it with `snnc convert`")
        t = (manifest.get("provenance") or {}).get("timesteps")
        return graphs["snn"], int(t) if t is not None else None
    if isinstance(getattr(model, "snn", None), Graph):
        return model.snn, int(model.timesteps)
    if isinstance(model, Graph):
        t = model.meta.get("timesteps")
        return model, int(t) if t is not None else None
    raise ExportError(f"cannot export a {type(model).__name__}; pass a SpikingModel, a .snn path or an SNN-stage Graph")


def _metadata(graph: Graph, reset: str, dt: float, timesteps: int | None, low: _Lowering) -> dict[str, Any]:
    import snnc

    meta: dict[str, Any] = {
        "generator": "snnc",
        "snnc_version": snnc.__version__,
        "nir_version": str(getattr(nir, "version", "")),
        "source_graph": graph.name,
        "reset": reset,
        "dt": float(dt),
        "r_convention": "every integrator (I, IF) has r = 1/dt: one step of length dt adds its input once (v += dt*r*x = x)",
        "input_encoding": "direct: present the analog input unchanged at every step",
        "readout": low.readout,
        "readout_note": (
            "the output node reads an integrator I: after t steps it holds the sum of the last layer's outputs; divide by t "
            "for snnc's time-averaged readout"
            if low.readout == "integrator"
            else "the output is the last layer's current at each step; average it over the steps for snnc's readout"
        ),
    }
    if timesteps is not None:
        meta["timesteps"] = int(timesteps)
    if reset == "soft":
        meta["neuron"] = (
            "subtract-reset IF as I -> Threshold -> Scale(-theta) -> I; the recurrent edge is read one step late, as graph "
            "executors do; Threshold fires on w > theta' with theta' the largest float32 below theta - v_init, i.e. on v >= theta"
        )
    else:
        meta["neuron"] = (
            "IF with threshold 1 and v_reset 0 (per-channel thresholds folded into the weights); starts at 0: snnc's initial "
            "potential v_init is dropped; NIR fires on v > 1 (SpikingJelly: v >= 1)"
        )
    if low.notes:
        meta["notes"] = "\n".join(low.notes)
    return meta


def _refuse_variant(n: Node) -> None:
    """An ExportError for a burst / signed ``if_neuron``: NIR's spiking nodes (IF, Threshold)
    emit binary, non-negative spikes, so a count of up to K spikes per step or a −θ spike
    has no NIR form that snnc writes."""
    k, signed = int(n.attr("max_spikes")), bool(n.attr("signed")) or bool(n.attr("bipolar"))
    if k == 1 and not signed:
        return
    variant = neuron_variant(n.attrs).split(":")[0]
    what = []
    if k > 1:
        what.append(f"up to {k} spikes in one step")
    if signed:
        what.append("negative (−θ) spikes")
    raise ExportError(
        f"node {n.name!r} (if_neuron) is a {variant}{':' + str(k) if k > 1 else ''} neuron ({' and '.join(what)}), which NIR cannot express: "
        "its IF and Threshold nodes emit one binary, non-negative spike per step. "
        "To export to NIR, convert the model with `snnc convert --neuron if` (the plain IF neuron)"
    )


def _sanitize(name: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_]", "_", name).strip("_") or "node"
    if s[0].isdigit():
        s = "n_" + s
    if keyword.iskeyword(s) or s == "state":
        s += "_"
    return s


def _fit(param: np.ndarray, shape: tuple[int, ...], node: Node) -> np.ndarray:
    """A parameter broadcast to the per-sample ``shape`` (float32, full)."""
    try:
        return np.ascontiguousarray(np.broadcast_to(np.asarray(param, np.float32), shape))
    except ValueError:
        raise ExportError(f"node {node.name!r}: parameter of shape {list(np.shape(param))} does not broadcast to {list(shape)}") from None


def _product(factors: Sequence[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """The product of ``factors`` broadcast to ``shape`` (float64)."""
    out = np.ones(shape, np.float64)
    for f in factors:
        out = out * np.asarray(f, np.float64)
    return np.broadcast_to(out, shape)


def _per_channel(f: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``f`` as one value per channel (axis 0) when it is constant within each channel;
    flat values have one channel per element."""
    a = np.broadcast_to(np.asarray(f), shape)
    if len(shape) == 1:
        return np.array(a)
    flat = a.reshape(shape[0], -1)
    if np.all(flat == flat[:, :1]):
        return np.array(flat[:, 0])
    return None


def _channel_factor(f: np.ndarray, shape: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray | None:
    """A per-channel factor moved through a channel-wise op (pooling): reshaped for its output."""
    vec = _per_channel(f, shape)
    if vec is None:
        return None
    return vec.reshape((-1,) + (1,) * (len(out_shape) - 1))


def _below(a: np.ndarray) -> np.ndarray:
    """The largest float32 below each element: ``x > below(a)`` ⟺ ``x >= a`` for float32 x."""
    a = np.asarray(a, np.float32)
    return np.nextafter(a, np.float32(-np.inf)).astype(np.float32)


def _dense_weight(w: np.ndarray, groups: int, c_in: int) -> np.ndarray:
    """A grouped convolution's weight as the equivalent ungrouped (block-diagonal) one."""
    w = np.asarray(w, np.float32)
    if groups == 1:
        return w
    c_out, cg = w.shape[0], w.shape[1]
    og = c_out // groups
    dense = np.zeros((c_out, c_in) + w.shape[2:], np.float32)
    for o in range(c_out):
        g = o // og
        dense[o, g * cg : (g + 1) * cg] = w[o]
    return dense


def _conv_node(w, b, in_shape, strides, pads, dil, name) -> nir.NIRNode:
    nd = w.ndim - 2
    w = np.array(w, np.float32)  # copies: folding later never touches the IR's arrays
    b = np.array(b, np.float32)
    if nd == 1:
        return nir.Conv1d(input_shape=int(in_shape[1]), weight=w, stride=int(strides[0]), padding=int(pads[0]), dilation=int(dil[0]), groups=1, bias=b)
    if nd == 2:
        return nir.Conv2d(
            input_shape=(int(in_shape[1]), int(in_shape[2])), weight=w, stride=tuple(int(s) for s in strides),
            padding=tuple(int(p) for p in pads), dilation=tuple(int(d) for d in dil), groups=1, bias=b,
        )  # fmt: skip
    raise ExportError(f"node {name!r}: NIR has 1-d and 2-d convolutions only")


def _flatten_dims(src: tuple[int, ...], dst: tuple[int, ...]) -> tuple[int, int] | None:
    """(start, end) such that flattening ``src`` over dims start..end gives ``dst``."""
    for s in range(len(src)):
        for e in range(s + 1, len(src)):
            if src[:s] + (int(np.prod(src[s : e + 1])),) + src[e + 1 :] == dst:
                return s, e
    return None


def _count_correction(k, strides, pads, shape, out_shape) -> np.ndarray:
    """kernel size / number of input positions in each window (count_include_pad=False)."""
    ones = torch.ones((1, 1) + tuple(shape[1:]))
    pool = F.avg_pool1d if len(k) == 1 else F.avg_pool2d
    frac = pool(ones, k, strides, pads, count_include_pad=True)[0, 0].numpy()  # valid / kernel size
    corr = (1.0 / frac.astype(np.float64)).astype(np.float32)
    return np.ascontiguousarray(np.broadcast_to(corr, out_shape))


# ------------------------------------------------------------------ running a NIR file
@dataclass
class NirRun:
    """Outputs of a NIR graph run for T steps with direct input, time-averaged as snnc's
    readout (one array per requested T), and spikes per spiking node."""

    outputs: dict[int, np.ndarray]
    spike_counts: dict[str, float]  # snnc neuron name -> spikes over all samples and max(T) steps
    neurons: dict[str, int]  # snnc neuron name -> neurons per sample
    samples: int
    timesteps: int
    executor: str
    spike_trains: dict[str, np.ndarray] = field(default_factory=dict)  # with record_spikes: name -> [T, N, ...]

    def output(self, timesteps: int) -> np.ndarray:
        return self.outputs[timesteps]

    @property
    def spike_rates(self) -> dict[str, float]:
        return {k: c / (self.neurons[k] * self.samples * self.timesteps) for k, c in self.spike_counts.items()}


def reference_spike_trains(graph: Graph, x: np.ndarray, timesteps: int, names: Sequence[str] | None = None, device: str = "cpu") -> dict[str, np.ndarray]:
    """The binary spike trains ``[T, N, ...]`` of the neuron layers ``names`` (default: all)
    in the reference simulator, direct input: what :func:`run_nir` with ``record_spikes``
    returns for an exact export."""
    from snnc.simulator.reference import ReferenceSimulator

    out: dict[str, np.ndarray] = {}
    layers = [n for n in graph.having("neuron") if names is None or n.name in names]

    def record(node: Node, value) -> None:
        out[node.name] = (value.dense(timesteps) != 0).cpu().numpy()  # θ·s(t) is 0 exactly when s(t) = 0

    ReferenceSimulator(graph, device).simulate(torch.from_numpy(np.asarray(x, np.float32)), [timesteps], observe=record, watch=layers)
    return out


def nirtorch_node_map(dt: float = DEFAULT_DT) -> dict:
    """torch modules for nirtorch's ``nir_to_torch``, written from NIR's equations (forward
    Euler with step ``dt``) for the nodes nirtorch has no (correct) default for: I, IF,
    Threshold, Scale, Affine (nirtorch 2.6's default leaves the bias at its random
    initialisation) and Flatten (whose dims NIR counts without the batch axis)."""
    return {
        nir.I: lambda node: _Integrator(node, dt),
        nir.IF: lambda node: _IFNeuron(node, dt),
        nir.Threshold: lambda node: _Threshold(node),
        nir.Scale: lambda node: _Scale(node),
        nir.Affine: lambda node: _Affine(node),
        nir.Flatten: lambda node: _Flatten(node),
    }


def run_nir(
    source: nir.NIRGraph | str | os.PathLike,
    x: np.ndarray,
    timesteps: int | Sequence[int],
    *,
    executor: str = "nirtorch",
    batch_size: int = 128,
    device: str = "cpu",
    dt: float | None = None,
    record_spikes: bool = False,
    progress=None,
) -> NirRun:
    """Run a NIR graph (or file) on ``x`` ([N, ...]) with direct input for max(``timesteps``)
    steps and return snnc's time-averaged readout after each requested T.

    ``executor``: ``nirtorch`` (nirtorch's graph executor with :func:`nirtorch_node_map`;
    runs both variants) or ``spikingjelly`` (SpikingJelly 2.0's ``import_from_nir``; the hard
    variant). The readout convention and dt come from the file's metadata."""
    from snnc.simulator.reference import check_timesteps

    graph = source if isinstance(source, nir.NIRGraph) else read_nir(source)
    meta = graph.metadata or {}
    dt = float(meta.get("dt", DEFAULT_DT)) if dt is None else float(dt)
    readout = str(meta.get("readout", "average"))
    steps = check_timesteps(timesteps)
    T = steps[-1]
    if len([n for n in graph.nodes.values() if isinstance(n, nir.Output)]) != 1:
        raise ExportError("running a NIR graph needs exactly one Output node (nirtorch supports one)")
    gm = _executor(graph, executor, dt, device)
    spiking = {name: m for name, m in gm.named_modules() if isinstance(m, (_Threshold, _IFNeuron))}
    for m in spiking.values():
        m.record = record_spikes
    x = np.asarray(x, np.float32)
    outs: dict[int, list[np.ndarray]] = {t: [] for t in steps}
    task = progress(f"NIR ({executor}) T={T}", len(x)) if progress else None
    # torch.device(...) as a context: nirtorch creates the recurrent edges' first-step zeros
    # with torch.zeros(1), on the default device
    with torch.no_grad(), torch.device(device):
        for lo in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[lo : lo + batch_size]).to(device)
            state = None
            acc = None
            for t in range(1, T + 1):
                out, state = gm(xb, state)
                if readout == "integrator":
                    cur = out
                else:
                    acc = out.clone() if acc is None else acc + out
                    cur = acc
                if t in outs:
                    outs[t].append((cur / t).cpu().numpy())
            if task:
                task.advance(len(xb))
    counts: dict[str, float] = {}
    sizes: dict[str, int] = {}
    trains: dict[str, np.ndarray] = {}
    for m in spiking.values():
        key = m.snnc_node
        counts[key] = counts.get(key, 0.0) + m.count
        sizes[key] = m.neurons
        if record_spikes and m.trains:
            trains[key] = np.concatenate([np.stack(b) for b in _split_batches(m.trains, T)], axis=1)
    return NirRun({t: np.concatenate(outs[t]) for t in steps}, counts, sizes, len(x), T, executor, trains)


def _split_batches(trains: list[np.ndarray], T: int) -> list[list[np.ndarray]]:
    return [trains[i : i + T] for i in range(0, len(trains), T)]


def _executor(graph: nir.NIRGraph, executor: str, dt: float, device: str):
    if executor == "nirtorch":
        import nirtorch

        try:
            return nirtorch.nir_to_torch(graph, nirtorch_node_map(dt), device=device)
        except Exception as e:
            raise ExportError(f"nirtorch cannot build this NIR graph: {type(e).__name__}: {e}") from e
    if executor == "spikingjelly":
        try:
            from spikingjelly.activation_based.nir_exchange import import_from_nir
        except ImportError as e:
            raise ExportError(f"SpikingJelly's NIR importer is not installed ({e}); run `make setup`") from e
        try:
            return import_from_nir(graph, dt=dt, device=device, step_mode="s")
        except Exception as e:
            raise ExportError(
                f"SpikingJelly cannot import this NIR graph ({type(e).__name__}: {e}); it imports the hard-reset variant "
                "(`snnc export --reset hard`) of models with per-channel or per-layer thresholds"
            ) from e
    raise ExportError(f"unknown NIR executor {executor!r}; choose one of {', '.join(EXECUTORS)}")


class _Integrator(nn.Module):
    """nir.I: dv/dt = r·x; one Euler step of length dt: v += dt·r·x. Output: v."""

    def __init__(self, node, dt: float):
        super().__init__()
        self.register_buffer("gain", torch.as_tensor(np.asarray(node.r, np.float64) * dt, dtype=torch.float32))

    def forward(self, input, state=None):
        v = self.gain * input if state is None else state + self.gain * input
        return v, v


class _Spiking(nn.Module):
    """Counts (and optionally records) the spikes of a spiking node."""

    def __init__(self, node, size_of):
        super().__init__()
        self.snnc_node = str((node.metadata or {}).get("snnc_node", ""))
        self.neurons = int(np.prod(np.shape(size_of)))
        self.count = 0.0
        self.record = False
        self.trains: list[np.ndarray] = []

    def _seen(self, z: torch.Tensor) -> None:
        self.count += int(torch.count_nonzero(z))
        if self.record:
            self.trains.append(z.cpu().numpy().astype(np.uint8))


class _Threshold(_Spiking):
    """nir.Threshold: z = 1 where x > threshold, else 0."""

    def __init__(self, node):
        super().__init__(node, node.threshold)
        self.register_buffer("threshold", torch.tensor(np.array(node.threshold, np.float32)))

    def forward(self, input):
        z = (input > self.threshold).to(input.dtype)
        self._seen(z)
        return z


class _IFNeuron(_Spiking):
    """nir.IF: v += dt·r·x; z = v > v_threshold; v = v_reset where z. Starts at v = 0."""

    def __init__(self, node, dt: float):
        super().__init__(node, node.r)
        self.register_buffer("gain", torch.as_tensor(np.asarray(node.r, np.float64) * dt, dtype=torch.float32))
        self.register_buffer("v_threshold", torch.tensor(np.array(node.v_threshold, np.float32)))
        self.register_buffer("v_reset", torch.tensor(np.array(node.v_reset, np.float32)))

    def forward(self, input, state=None):
        v = self.gain * input if state is None else state + self.gain * input
        spiked = v > self.v_threshold
        v = torch.where(spiked, self.v_reset, v)
        z = spiked.to(input.dtype)
        self._seen(z)
        return z, v


class _Scale(nn.Module):
    """nir.Scale: y = x ⊙ s."""

    def __init__(self, node):
        super().__init__()
        self.register_buffer("scale", torch.tensor(np.array(node.scale, np.float32)))

    def forward(self, input):
        return input * self.scale


class _Affine(nn.Module):
    """nir.Affine: y = W x + b."""

    def __init__(self, node):
        super().__init__()
        self.register_buffer("weight", torch.tensor(np.array(node.weight, np.float32)))
        self.register_buffer("bias", torch.tensor(np.array(node.bias, np.float32)))

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)


class _Flatten(nn.Module):
    """nir.Flatten: start_dim/end_dim count the per-sample axes (the batch axis is not one)."""

    def __init__(self, node):
        super().__init__()
        s, e = int(node.start_dim), int(node.end_dim)
        self.start = s + 1 if s >= 0 else s
        self.end = e + 1 if e >= 0 else e

    def forward(self, input):
        return torch.flatten(input, self.start, self.end)
