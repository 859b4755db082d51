"""Decomposed ops recognised before converting: GELU (erf and tanh forms), SiLU and
LayerNormalization as exporters write them out.

Before the nodes are converted, :func:`find_fusions` looks for

* **GELU, erf form**: ``Erf(u)`` with ``u = x / sqrt(2)`` (``Div`` by 1.414..., or ``Mul`` by
  0.7071...) whose output is used as ``x * 0.5 * (1 + erf)``, the ``0.5`` and the ``x``
  multiplied in any order (``Mul(x, 0.5)`` first, or last) → ``gelu``;
* **GELU, tanh form**: ``Tanh(u)`` with ``u = sqrt(2/pi) * (x + 0.044715 x^3)`` (``Pow(x, 3)``
  or ``x * x * x``) used as ``x * 0.5 * (1 + tanh)`` → ``gelu{approximate: tanh}``;
* **SiLU**: ``x * Sigmoid(x)`` → ``silu``;
* **LayerNormalization**: ``ReduceMean(x)`` → ``Sub(x, mean)`` → ``Pow(·, 2)`` (or ``Mul(d, d)``)
  → ``ReduceMean`` → ``Add(eps)`` → ``Sqrt`` → ``Div(d, ·)`` (or ``Reciprocal`` / ``Div(1, ·)``
  then ``Mul(d, ·)``), then optionally ``Mul`` by a scale and ``Add`` of a bias constant →
  ``layer_norm`` (over the last axis only; other axes are refused when the pattern is
  emitted).

The arithmetic around Erf / Tanh / Sigmoid is read as a polynomial in ``x``: nodes
``Mul``/``Add``/``Sub``/``Div``/``Pow``/``Neg`` whose output has a single reader are expanded,
scalar constants are numbers, and the one remaining computed leaf is ``x``; the coefficients
must equal those of the form (relative tolerance 1e-3). Every intermediate tensor must be
read only inside the pattern. The pattern's nodes are then absorbed and the fused op is
emitted where the first of them stands. A near miss leaves a note that the error for the
unconvertible node (Erf, Tanh, Sigmoid, ReduceMean) quotes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

import snnc.frontends.onnx.layout as layout
from snnc.frontends.onnx.helpers import DEFAULT_DOMAINS, ir_name, node_attrs, node_label, normalize_axis, reject
from snnc.frontends.onnx.layout import Laid
from snnc.ir.graph import Value

# The importer (snnc.frontends.onnx.importer) imports this module, so its type is not imported here.
Importer = Any

SQRT_HALF = math.sqrt(0.5)
TANH_C = math.sqrt(2.0 / math.pi)
TANH_CUBIC = 0.044715
_RTOL = 1e-3
_POLY_OPS = {"Mul", "Add", "Sub", "Div", "Pow", "Neg"}
_NAMES = {"gelu": "GELU", "silu": "SiLU"}

Poly = dict[int, float]


@dataclass
class Fusion:
    kind: str  # gelu | silu | layer_norm
    x: str  # the input tensor
    out: str  # the tensor the pattern computes
    members: list[onnx.NodeProto]
    attrs: dict[str, Any] = field(default_factory=dict)
    axes: list[int] | None = None  # layer_norm: the reduced axes
    scale: np.ndarray | None = None
    bias: np.ndarray | None = None


# ======================================================================== search
def find_fusions(ctx: Importer, nodes: Sequence[onnx.NodeProto]) -> None:
    """Record the patterns among ``nodes`` in ``ctx.fusions`` (keyed by the id of each
    pattern's first node) and near misses in ``ctx.pattern_notes``."""
    index = {id(n): i for i, n in enumerate(nodes)}
    taken: set[int] = set()
    for n in nodes:
        if n.domain not in DEFAULT_DOMAINS or n.op_type not in ("Erf", "Tanh", "Sigmoid", "ReduceMean"):
            continue
        if n.op_type == "ReduceMean":
            fusion = _layer_norm(ctx, n)
        else:
            fusion = _activation(ctx, n)
        if fusion is None:
            continue
        ids = {id(m) for m in fusion.members}
        if ids & taken or not all(i in index for i in ids):
            continue
        fusion.members.sort(key=lambda m: index[id(m)])
        taken |= ids
        ctx.fusions[id(fusion.members[0])] = fusion


def _const(ctx: Importer, name: str) -> np.ndarray | None:
    """Tensor ``name`` when it is computed from constants alone (looked up ahead of the
    driver), else None."""
    if not name:
        return None
    v = ctx.env.get(name)
    if isinstance(v, np.ndarray):
        return v
    if v is not None or name not in ctx.producer:
        return None
    a, b = ctx.eval_at_batch(name, 2), ctx.eval_at_batch(name, 3)  # not computed from the batch size
    return a if a is not None and b is not None and a.shape == b.shape and np.array_equal(a, b) else None


def _scalar(ctx: Importer, name: str) -> float | None:
    c = _const(ctx, name)
    if c is None or c.size != 1 or c.dtype.kind not in "iuf":
        return None
    v = float(c.reshape(-1)[0])
    return v if math.isfinite(v) else None


def _close(a: float, b: float, rtol: float = _RTOL) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-12)


def _same(p: Poly, want: Poly) -> bool:
    keys = {k for k, v in p.items() if v != 0.0}
    return keys == set(want) and all(_close(p[k], want[k]) for k in want)


class _State:
    def __init__(self) -> None:
        self.x: str | None = None


def _mul(a: Poly, b: Poly) -> Poly:
    out: Poly = {}
    for i, u in a.items():
        for j, v in b.items():
            out[i + j] = out.get(i + j, 0.0) + u * v
    return out


def _add(a: Poly, b: Poly, sign: float = 1.0) -> Poly:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0.0) + sign * v
    return out


def _poly(ctx: Importer, name: str, st: _State, members: list[onnx.NodeProto], depth: int = 0) -> Poly | None:
    """Tensor ``name`` as a polynomial in the pattern's input ``x`` (fixed in ``st`` by the
    first computed leaf); the nodes expanded are appended to ``members``."""
    c = _scalar(ctx, name)
    if c is not None:
        return {0: c}
    if name == st.x:
        return {1: 1.0}
    node = ctx.producer.get(name)
    expandable = node is not None and node.op_type in _POLY_OPS and node.domain in DEFAULT_DOMAINS and depth < 16
    if expandable and ctx.single_reader(name) is not None:
        x, count = st.x, len(members)
        got = _expand(ctx, node, st, members, depth)
        if got is not None:
            return got
        st.x = x  # not a polynomial in one leaf: the tensor itself may be the leaf
        del members[count:]
    if st.x is None and _const(ctx, name) is None:
        st.x = name
        return {1: 1.0}
    return None


def _expand(ctx: Importer, node: onnx.NodeProto, st: _State, members: list[onnx.NodeProto], depth: int) -> Poly | None:
    """Node ``node`` (Mul/Add/Sub/Div/Pow/Neg) as a polynomial of its inputs' polynomials."""
    ins = [i for i in node.input]
    if node.op_type == "Neg":
        a = _poly(ctx, ins[0], st, members, depth + 1)
        if a is None:
            return None
        members.append(node)
        return {k: -v for k, v in a.items()}
    if len(ins) != 2:
        return None
    if node.op_type == "Pow":
        e = _scalar(ctx, ins[1])
        if e is None or e != int(e) or not 1 <= e <= 4:
            return None
        a = _poly(ctx, ins[0], st, members, depth + 1)
        if a is None:
            return None
        out: Poly = {0: 1.0}
        for _ in range(int(e)):
            out = _mul(out, a)
        members.append(node)
        return out
    if node.op_type == "Div":
        d = _scalar(ctx, ins[1])
        if d is None or d == 0:
            return None
        a = _poly(ctx, ins[0], st, members, depth + 1)
        if a is None:
            return None
        members.append(node)
        return {k: v / d for k, v in a.items()}
    a = _poly(ctx, ins[0], st, members, depth + 1)
    b = _poly(ctx, ins[1], st, members, depth + 1) if a is not None else None
    if a is None or b is None:
        return None
    members.append(node)
    if node.op_type == "Mul":
        return _mul(a, b)
    return _add(a, b, 1.0 if node.op_type == "Add" else -1.0)


def _forward(ctx: Importer, start: str, st: _State, m_want: float, b_want: float, members: list[onnx.NodeProto]) -> str | None:
    """Follow ``f`` (tensor ``start``) through single-reader Add / Sub / Mul / Div nodes while
    the value is ``m * x^k * (f + b)``; the tensor where ``k = 1``, ``m = m_want`` and
    ``b = b_want``, or None."""
    m, k, b = 1.0, 0, 0.0
    cur = start
    for _ in range(8):
        if k == 1 and _close(m, m_want, 1e-4) and (abs(b - b_want) <= 1e-4 * max(1.0, abs(b_want))):
            return cur
        reader = ctx.single_reader(cur)
        if reader is None or reader.domain not in DEFAULT_DOMAINS or reader.op_type not in ("Add", "Sub", "Mul", "Div"):
            return None
        if len(reader.input) != 2:
            return None
        if reader.input[0] == reader.input[1]:
            return None
        pos = 0 if reader.input[0] == cur else 1
        other = reader.input[1 - pos]
        c = _scalar(ctx, other)
        if reader.op_type in ("Add", "Sub"):
            if c is None or k != 0 or m == 0:
                return None
            if reader.op_type == "Add":
                b += c / m
            elif pos == 0:
                b -= c / m
            else:  # c - m (f + b) = -m (f + b - c / m)
                b -= c / m
                m = -m
        elif reader.op_type == "Div":
            if c is None or pos != 0 or c == 0:
                return None
            m /= c
        elif c is not None:
            m *= c
        else:
            side: list[onnx.NodeProto] = []
            p = _poly(ctx, other, st, side)
            if p is None or len(p) != 1:
                return None
            (j, coef), = p.items()
            m *= coef
            k += j
            members.extend(side)
        members.append(reader)
        cur = reader.output[0]
    return None


def _activation(ctx: Importer, node: onnx.NodeProto) -> Fusion | None:
    """GELU (Erf / Tanh) or SiLU (Sigmoid) around ``node``."""
    st = _State()
    inner: list[onnx.NodeProto] = []
    p = _poly(ctx, node.input[0], st, inner) if node.input else None
    if p is None or st.x is None:
        return None
    forms = {
        "Erf": ("gelu", {1: SQRT_HALF}, 0.5, 1.0, {}, "x / sqrt(2)", "x * 0.5 * (1 + erf(x / sqrt(2)))"),
        "Tanh": ("gelu", {1: TANH_C, 3: TANH_C * TANH_CUBIC}, 0.5, 1.0, {"approximate": "tanh"},
                 "sqrt(2/pi) * (x + 0.044715 x^3)", "x * 0.5 * (1 + tanh(...))"),
        "Sigmoid": ("silu", {1: 1.0}, 1.0, 0.0, {}, "x itself", "x * sigmoid(x)"),
    }
    kind, want, m_want, b_want, attrs, inner_text, text = forms[node.op_type]
    if not _same(p, want):
        ctx.pattern_notes[id(node)] = f"this {node.op_type} is not part of {_NAMES[kind]}: its input is not {inner_text}"
        return None
    outer: list[onnx.NodeProto] = []
    out = _forward(ctx, node.output[0], st, m_want, b_want, outer)
    if out is None:
        ctx.pattern_notes[id(node)] = f"this {node.op_type} is not part of {_NAMES[kind]}: its output is not used as {text}"
        return None
    return Fusion(kind, st.x, out, [*inner, node, *outer], attrs=dict(attrs))


# ================================================================ layer norm
def _reduce_axes(ctx: Importer, node: onnx.NodeProto) -> list[int] | None:
    a = node_attrs(node)
    if not a.get("keepdims", 1):
        return None
    if ctx.opset >= 18:
        if len(node.input) < 2 or not node.input[1]:
            return None
        axes = _const(ctx, node.input[1])
        return None if axes is None or axes.dtype.kind not in "iu" else [int(v) for v in axes.reshape(-1)]
    axes = a.get("axes")
    return None if axes is None else [int(v) for v in axes]


def _layer_norm(ctx: Importer, r1: onnx.NodeProto) -> Fusion | None:
    x = r1.input[0] if r1.input else ""
    axes = _reduce_axes(ctx, r1)
    if not x or axes is None or _const(ctx, x) is not None:
        return None
    mean = r1.output[0]
    sub = ctx.single_reader(mean)
    if sub is None or sub.op_type != "Sub" or list(sub.input) != [x, mean]:
        return None
    shape = "ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div (or Reciprocal and Mul), Mul scale, Add bias"

    def miss(why: str) -> None:
        ctx.pattern_notes[id(r1)] = (
            f"ReduceMean → Sub starts a decomposed LayerNormalization ({shape}), but {why}; snnc imports that pattern "
            "over the last axis, or the LayerNormalization op (opset 17)"
        )

    d = sub.output[0]
    readers = list({id(r): r for r in ctx.consumers.get(d, [])}.values())
    if len(readers) != 2 or ctx.is_graph_output(d):
        return miss(f"x - mean is read by {len(readers)} node(s) instead of the square and the division")
    sq = next((r for r in readers if (r.op_type == "Pow" and r.input[0] == d and _scalar(ctx, r.input[1]) == 2.0)
               or (r.op_type == "Mul" and list(r.input) == [d, d])), None)
    if sq is None:
        return miss("x - mean is not squared (Pow 2 or Mul with itself)")
    nrm = next(r for r in readers if r is not sq)
    r2 = ctx.single_reader(sq.output[0])
    if r2 is None or r2.op_type != "ReduceMean" or r2.input[0] != sq.output[0] or _reduce_axes(ctx, r2) != axes:
        return miss("the square is not averaged over the same axes")
    add = ctx.single_reader(r2.output[0])
    eps = None
    if add is not None and add.op_type == "Add":
        eps = _scalar(ctx, add.input[1] if add.input[0] == r2.output[0] else add.input[0])
    if eps is None or eps < 0:
        return miss("the variance is not followed by Add of a non-negative epsilon")
    sqrt = ctx.single_reader(add.output[0])
    if sqrt is None or sqrt.op_type != "Sqrt":
        return miss("the variance plus epsilon is not followed by Sqrt")
    members = [r1, sub, sq, r2, add, sqrt]
    std = sqrt.output[0]
    if nrm.op_type == "Div" and list(nrm.input) == [d, std]:
        pass
    else:
        inv = ctx.single_reader(std)
        ok = inv is not None and (
            inv.op_type == "Reciprocal" or (inv.op_type == "Div" and inv.input[1] == std and _scalar(ctx, inv.input[0]) == 1.0)
        )
        if not ok or nrm.op_type != "Mul" or sorted(nrm.input) != sorted([d, inv.output[0]]) or ctx.single_reader(inv.output[0]) is not nrm:
            return miss("x - mean is not divided by the standard deviation")
        members.append(inv)
    members.append(nrm)
    out = nrm.output[0]
    scale = bias = None
    for op in ("Mul", "Add"):
        nxt = ctx.single_reader(out)
        if nxt is None or nxt.op_type != op or len(nxt.input) != 2:
            continue
        other = nxt.input[1] if nxt.input[0] == out else nxt.input[0]
        c = _const(ctx, other)
        if c is None or c.dtype.kind != "f" or (c.ndim > 0 and any(dim != 1 for dim in c.shape[:-1])):
            continue
        if op == "Mul":
            scale = c
        else:
            bias = c
        members.append(nxt)
        out = nxt.output[0]
    return Fusion("layer_norm", x, out, members, attrs={"epsilon": float(eps)}, axes=axes, scale=scale, bias=bias)


# ======================================================================= emission
def emit_fusion(ctx: Importer, f: Fusion) -> None:
    """Emit the fused op of ``f`` for its output tensor; its nodes are absorbed."""
    ctx.absorbed.update(id(m) for m in f.members)
    last = ctx.producer[f.out]
    x = ctx.lookup(f.x, laid=True, reader=f.members[0])
    if not isinstance(x, (Value, Laid)):
        raise reject(f.members[0], "its input is not computed from the model input")
    if f.kind == "layer_norm":
        result = layer_norm(ctx, last, x, f.attrs["epsilon"], f.scale, f.bias, axes=f.axes, first=f.members[0])
    else:
        result = elementwise(ctx, last, x, f.kind, f.attrs)
    ctx.env[f.out] = result
    ctx.fused_patterns[f"{f.kind} ({', '.join(m.op_type for m in f.members)})"] += 1


def elementwise(ctx: Importer, node: onnx.NodeProto, x: Value | Laid, op: str, attrs: dict[str, Any] | None = None) -> Value | Laid:
    """An element-wise op on a batch-first value or a layout view (same layout)."""
    if isinstance(x, Value):
        return ctx.emit(op, [x], node, attrs=attrs)
    y = ctx.emit(op, [x.value], node, attrs=attrs)
    return Laid(y, x.order, x.groups, x.origin)


def layer_norm(
    ctx: Importer,
    node: onnx.NodeProto,
    x: Value | Laid,
    epsilon: float,
    scale: np.ndarray | None,
    bias: np.ndarray | None,
    *,
    axes: list[int] | None,
    first: onnx.NodeProto | None = None,
) -> Value | Laid:
    """``layer_norm`` over the last axis of ``x`` (``axes`` the normalised axes, which must
    be just the last one); scale / bias constants broadcast along that axis."""
    view = layout.of(x, f"{node.op_type} node {node_label(node)!r}")
    rank = view.rank
    at = first or node
    got = sorted({normalize_axis(int(a), rank, at) for a in (axes or [-1])})
    if got != [rank - 1]:
        raise reject(
            at,
            f"layer normalisation over axes {got} of a tensor of rank {rank}; snnc's layer_norm normalises the last axis "
            f"only (axis -1 = {rank - 1}). Normalise over the last axis (nn.LayerNorm(D) on [..., D])",
        )
    view = layout.prepare_last(ctx, node, view, "LayerNormalization")
    dim = view.value.shape[-1]
    params = {}
    for key, c, default in (("scale", scale, 1.0), ("bias", bias, 0.0)):
        if c is None:
            params[key] = np.full(dim, default, np.float32)
            continue
        c = np.asarray(c, np.float32)
        if c.ndim > rank or (c.ndim and (any(d != 1 for d in c.shape[:-1]) or c.shape[-1] not in (1, dim))):
            raise reject(at, f"its {key} of shape {list(c.shape)} does not broadcast along the last axis ({dim} features) only")
        params[key] = np.broadcast_to(c.reshape(-1) if c.ndim else c, (dim,)).astype(np.float32).copy()
    y = ctx.emit("layer_norm", [view.value], node, attrs={"epsilon": float(epsilon)}, params=params, name=ir_name(node))
    return layout.finish(Laid(y, view.order, view.groups, view.origin))
