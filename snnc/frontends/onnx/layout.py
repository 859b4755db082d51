"""Tensors whose batch axis has moved: the layout algebra of attention blocks.

IR values are batch-first (``[batch, *per-sample shape]``), but transformer exports move the
batch axis around: ``nn.MultiheadAttention`` works on ``[N, batch, D]`` and reshapes it to
``[N, batch * heads, d]``, a hand-written attention block permutes ``[B, N, 3, H, d]`` to
``[3, B, H, N, d]`` and picks q, k, v out of the leading axis. Such an ONNX tensor ``T`` is
kept as a :class:`Laid` view of an IR value ``V`` instead of being refused at once:

* the *atoms* of the view are V's axes (atom 0 is the batch, atom ``k`` V's per-sample axis
  ``k``); ``order`` lists them in T's row-major order and ``groups`` says how many
  consecutive atoms form each axis of T (0: an axis of size 1). So
  ``T = reshape(transpose(V, order), [product of each group])`` and T's axis holding atom 0
  has a size that is a multiple of the batch size;
* Reshape, Transpose, Squeeze / Unsqueeze, Flatten just regroup or reorder the atoms (a
  reshape that splits an atom, or merges atoms that are neighbours in V, reshapes V per
  sample); Gather / Slice / Split of an axis without the batch are ``select`` / ``slice`` of
  V's axes; element-wise ops (constants are permuted into V's layout) act on V unchanged;
  ops over the last axis (``linear``, ``softmax``, ``layer_norm``) first bring T's last axis
  to V's last axis; ``matmul`` and ``add`` of two views bring both to the *front form*
  (V's axes in T's order with the batch moved first, the atoms of each of T's axes merged),
  where equal layouts are equal V shapes;
* an op that needs a batch-first tensor *materialises* the view: possible when T's first
  axis holds the batch alone, with ``transpose`` and ``reshape`` of V (per sample, the batch
  axis staying first). Otherwise the tensor really mixes samples (or the model's layout
  depends on the batch size) and the error names the node that moved the batch axis.

Reshape targets are resolved with the batch size standing as the prime :data:`PRIME` (the
model's fixed batch size when it has one), so products and divisibility decide uniquely
which target axis takes the batch; one ``-1`` or one entry computed from the batch size
(``UNKNOWN``: ``batch * heads`` folded from ``Shape``) is inferred from the element count,
which a valid Reshape determines.

A model exported with a fixed batch of 1 (no dynamic axes) names no batch axis at all: its
Reshape targets hold a ``1`` wherever the batch went. There the batch atom *floats*: it has
size 1, so it can join any axis without changing the tensor, and every view keeps it at the
front of its first axis (see :func:`batch_of_one`).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from snnc.errors import UnsupportedOpError
from snnc.frontends.onnx.helpers import BATCH, UNKNOWN, ir_name, node_label, reject
from snnc.ir.graph import Value

# The importer (snnc.frontends.onnx.importer) imports this module, so its type is not imported here.
Importer = Any

# The batch size in layout arithmetic: a prime larger than any per-sample size, so that a
# product of sizes is a multiple of it exactly when it counts the batch.
PRIME = (1 << 61) - 1

# Whether the model's batch is fixed at 1 (the batch atom floats; see the module docstring).
_BATCH_OF_ONE: contextvars.ContextVar[bool] = contextvars.ContextVar("snnc_onnx_batch_of_one", default=False)


@contextlib.contextmanager
def batch_of_one(flag: bool) -> Iterator[None]:
    """Within this block views are built for a model whose batch is fixed at 1."""
    token = _BATCH_OF_ONE.set(flag)
    try:
        yield
    finally:
        _BATCH_OF_ONE.reset(token)


@dataclass(eq=False)
class Laid:
    """ONNX tensor ``reshape(transpose(value, order), sizes of groups)`` (see the module
    docstring); ``origin`` describes the node that moved the batch axis, for errors."""

    value: Value
    order: tuple[int, ...]
    groups: tuple[int, ...]
    origin: str
    cache: Value | None = field(default=None, repr=False)
    floating: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.floating = _BATCH_OF_ONE.get()
        if self.floating and self.groups:
            # The batch (size 1) moves to the front of the first axis: T is unchanged.
            axes = [[a for a in g if a != 0] for g in self.axes()]
            axes[0].insert(0, 0)
            self.order = tuple(a for g in axes for a in g)
            self.groups = tuple(len(g) for g in axes)

    def size(self, atom: int, batch: int = PRIME) -> int:
        if atom == 0:
            return 1 if self.floating else batch
        return int(self.value.shape[atom - 1])

    def holds_batch(self, group: Sequence[int]) -> bool:
        """Whether T's axis of atoms ``group`` carries the batch (a floating batch never does)."""
        return 0 in group and not self.floating

    def axes(self) -> list[list[int]]:
        """The atoms of each of T's axes."""
        out, i = [], 0
        for n in self.groups:
            out.append(list(self.order[i : i + n]))
            i += n
        return out

    @property
    def rank(self) -> int:
        return len(self.groups)

    def dims(self, batch: int = PRIME) -> list[int]:
        """T's shape with the batch size as ``batch``."""
        return [math.prod(self.size(a, batch) for a in g) for g in self.axes()]

    def describe(self) -> str:
        parts = []
        for g in self.axes():
            n = math.prod(self.size(a) for a in g if a != 0)
            parts.append(("batch" if n == 1 else f"batch*{n}") if 0 in g else str(n))
        return "[" + ", ".join(parts) + "]"

    def batch_axis(self) -> int:
        return next(i for i, g in enumerate(self.axes()) if 0 in g)

    def is_plain(self) -> bool:
        """T's first axis is the batch alone (other atoms in it have size 1): it materialises."""
        first = self.axes()[0]
        return 0 in first and all(self.size(a) == 1 for a in first if a != 0)

    def same_layout(self, other: Laid) -> bool:
        return self.order == other.order and self.groups == other.groups and self.value.shape == other.value.shape


def of(t: Value | Laid, origin: str = "") -> Laid:
    """``t`` as a view (a batch-first value is the identity view of itself)."""
    if isinstance(t, Laid):
        return t
    n = len(t.shape) + 1
    return Laid(t, tuple(range(n)), (1,) * n, origin)


def finish(view: Laid) -> Value | Laid:
    """The view, or its value when it is the identity view."""
    if view.order == tuple(range(len(view.order))) and all(n == 1 for n in view.groups):
        return view.value
    return view


def _aux(ctx: Importer, op: str, x: Value, node: onnx.NodeProto, suffix: str, **attrs) -> Value:
    return ctx.emit(op, [x], node, attrs=attrs, name=f"{ir_name(node)}.{suffix}")


def _transpose_value(ctx: Importer, node: onnx.NodeProto, x: Value, perm: Sequence[int]) -> Value:
    perm = [int(p) for p in perm]
    if perm == list(range(len(perm))):
        return x
    return _aux(ctx, "transpose", x, node, "transpose", perm=perm)


def _reshape_value(ctx: Importer, node: onnx.NodeProto, x: Value, shape: Sequence[int]) -> Value:
    shape = [int(d) for d in shape]
    if list(x.shape) == shape:
        return x
    return _aux(ctx, "reshape", x, node, "reshape", shape=shape)


# ================================================================ materialising
def not_batch_first(view: Laid, reader: str) -> str:
    """Why ``view`` cannot be read as a batch-first tensor by ``reader``."""
    return (
        f"{reader} reads a tensor of shape {view.describe()} ({view.origin} moved the batch axis): its first axis is not "
        "the batch axis alone, so the tensor mixes the samples of a batch and its layout depends on the batch size. "
        "snnc follows the batch axis through Reshape, Transpose, Squeeze/Unsqueeze, Gather/Slice/Split of other axes, "
        "MatMul, Gemm, Softmax, LayerNormalization, element-wise ops and Add; other ops need it first (move the "
        "batch axis back to the front before this node)"
    )


def materialize(ctx: Importer, view: Laid, node: onnx.NodeProto, reader: str | None = None) -> Value:
    """The batch-first IR value of ``view`` (``transpose`` / ``reshape`` of its value, named
    after ``node``), emitted once; raises UnsupportedOpError naming ``node`` (described as
    ``reader``) when the batch is not T's first axis alone."""
    if view.cache is not None:
        return view.cache
    if not view.is_plain():
        label = reader or f"{node.op_type} node {node_label(node)!r}"
        raise UnsupportedOpError(node.op_type, node_label(node), not_batch_first(view, label))
    perm = [0] + [a for a in view.order if a != 0]
    x = _transpose_value(ctx, node, view.value, perm)
    x = _reshape_value(ctx, node, x, view.dims()[1:])
    view.cache = x
    return x


# ====================================================================== regrouping
def permute(view: Laid, perm: Sequence[int], origin: str) -> Laid:
    axes = view.axes()
    new = [axes[p] for p in perm]
    return Laid(view.value, tuple(a for g in new for a in g), tuple(len(g) for g in new), origin)


def insert_axes(view: Laid, positions: Sequence[int], origin: str) -> Laid:
    """Unsqueeze: size-1 axes at ``positions`` of the result."""
    axes = view.axes()
    out_rank = len(axes) + len(positions)
    it = iter(axes)
    new = [[] if i in set(positions) else next(it) for i in range(out_rank)]
    return Laid(view.value, view.order, tuple(len(g) for g in new), origin or view.origin)


def remove_axes(view: Laid, positions: Sequence[int], node: onnx.NodeProto) -> Laid:
    """Squeeze: drop size-1 axes ``positions`` (their size-1 atoms join a neighbour)."""
    axes = view.axes()
    for p in positions:
        g = axes[p]
        if view.holds_batch(g) or any(view.size(a) != 1 for a in g):
            raise reject(node, f"Squeeze of axis {p} of a tensor of shape {view.describe()}: the axis does not have size 1")
    keep = [i for i in range(len(axes)) if i not in set(positions)]
    if not keep:
        raise reject(node, "Squeeze would remove every axis")
    counts = {i: len(axes[i]) for i in keep}
    for p in positions:
        # Size-1 atoms stay where they are in the order: they join the previous kept axis,
        # or the next one at the front.
        prev = [i for i in keep if i < p]
        counts[prev[-1] if prev else keep[0]] += len(axes[p])
    return Laid(view.value, view.order, tuple(counts[i] for i in keep), view.origin)


def _segments(view: Laid, batch: int) -> tuple[list[int], list[int], list[int]] | None:
    """T's atom sequence with neighbours merged where they are also neighbours in V
    (``a`` then ``a + 1``, neither the batch): (merged sequence as new atom ids, the new
    per-sample sizes of V, and for each new atom the old atoms it merges) - merging only
    reshapes V."""
    runs: list[list[int]] = []
    for a in view.order:
        if runs and a != 0 and runs[-1][-1] != 0 and a == runs[-1][-1] + 1:
            runs[-1].append(a)
        else:
            runs.append([a])
    # New ids: runs sorted by their first atom (V's order is kept).
    ranked = sorted(runs, key=lambda r: r[0])
    new_id = {id(r): i for i, r in enumerate(ranked)}
    seq = [new_id[id(r)] for r in runs]
    sizes = [math.prod(view.size(a, batch) for a in r) for r in ranked[1:]]
    return seq, sizes, [len(r) for r in ranked]


def _greedy(seq: list[int], sizes: list[int], batch: int, target: list[int]) -> tuple[list[int], list[int], list[int]] | None:
    """Group atom sequence ``seq`` (sizes: ``sizes[a - 1]``, atom 0 the batch of size
    ``batch``) into ``target``'s axes, splitting atoms where an axis ends inside one.
    Returns (sequence, sizes, group counts) or None when ``target`` is not a regrouping."""
    seq, sizes = list(seq), list(sizes)

    def size(a: int) -> int:
        return batch if a == 0 else sizes[a - 1]

    groups: list[int] = []
    i = 0
    for v in target:
        n, prod = 0, 1
        while prod != v:
            if i >= len(seq):
                return None
            a = seq[i]
            s = size(a)
            if v % (prod * s) == 0:
                prod *= s
            elif a != 0 and v % prod == 0 and s % (v // prod) == 0:
                r = v // prod
                sizes[a - 1 : a] = [r, s // r]
                seq = [b + 1 if b > a else b for b in seq]
                seq.insert(i + 1, a + 1)
                prod = v
            else:
                return None
            n += 1
            i += 1
        groups.append(n)
    while i < len(seq):
        if size(seq[i]) != 1 or not groups:
            return None
        groups[-1] += 1
        i += 1
    return seq, sizes, groups


def regroup(ctx: Importer, node: onnx.NodeProto, view: Laid, target: list[int], batch: int = PRIME) -> Laid | None:
    """The view reshaped to ``target`` (T's new shape, the batch size counted as
    ``batch``), or None when that is no regrouping of its atoms (it mixes samples)."""
    if view.floating:
        batch = 1
    for attempt in range(2):
        if attempt == 1:
            view = front_form(ctx, node, view)
        seq, sizes, _ = _segments(view, batch)
        got = _greedy(seq, sizes, batch, target)
        if got is None:
            continue
        seq, sizes, groups = got
        # V's new per-sample shape (merges and splits are one reshape of V).
        value = _reshape_value(ctx, node, view.value, sizes)
        return Laid(value, tuple(seq), tuple(groups), view.origin)
    return None


def resolve_target(node: onnx.NodeProto, view: Laid, values: list[int], allowzero: bool, batch: int) -> list[int] | None:
    """A Reshape target as sizes with the batch counted as ``batch``: BATCH stands for it,
    one ``-1`` or one UNKNOWN (computed from the batch size) is inferred from the element
    count, ``0`` copies T's axis (without allowzero). None when it cannot be resolved."""
    dims = view.dims(batch)
    out: list[int | None] = []
    for i, t in enumerate(values):
        if t == BATCH:
            out.append(batch)
        elif t in (-1, UNKNOWN):
            out.append(None)
        elif t == 0 and not allowzero:
            if i >= len(dims):
                return None
            out.append(dims[i])
        elif t < 0:
            return None
        else:
            out.append(int(t))
    total = math.prod(dims)
    if out.count(None) > 1:
        return None
    if None in out:
        known = math.prod(d for d in out if d is not None)
        if known == 0 or total % known:
            return None
        out[out.index(None)] = total // known
    if math.prod(out) != total:  # type: ignore[arg-type]
        return None
    return [int(d) for d in out]  # type: ignore[arg-type]


def front_form(ctx: Importer, node: onnx.NodeProto, view: Laid) -> Laid:
    """The view with V rearranged so that V's axes follow T's order with the batch first,
    one atom per axis of T (the batch's axis: the atoms before and after the batch merged
    separately, size-1 parts dropped). Two tensors of one shape and one batch position
    then have the same V layout."""
    axes = view.axes()
    perm = [0] + [a for a in view.order if a != 0]
    x = _transpose_value(ctx, node, view.value, perm)
    shape: list[int] = []
    order: list[int] = []
    groups: list[int] = []
    for g in axes:
        if 0 in g:
            k = g.index(0)
            count = 0
            for part in (g[:k], None, g[k + 1 :]):
                if part is None:
                    order.append(0)
                    count += 1
                    continue
                s = math.prod(view.size(a) for a in part)
                if s != 1:
                    shape.append(s)
                    order.append(len(shape))
                    count += 1
            groups.append(count)
        else:
            shape.append(math.prod(view.size(a) for a in g))
            order.append(len(shape))
            groups.append(1)
    x = _reshape_value(ctx, node, x, shape)
    return Laid(x, tuple(order), tuple(groups), view.origin)


def prepare_last(ctx: Importer, node: onnx.NodeProto, view: Laid, what: str) -> Laid:
    """The view with T's last axis as V's last axis alone (for ops over the last axis)."""
    last = view.axes()[-1]
    if view.holds_batch(last):
        raise reject(node, f"{what} over the last axis of a tensor of shape {view.describe()}, which holds the batch axis")
    if last == [len(view.value.shape)]:
        return view
    return front_form(ctx, node, view)


# ============================================================== indexing and slicing
def _from_axes(value: Value, axes: list[list[int]], origin: str) -> Laid:
    return Laid(value, tuple(a for g in axes for a in g), tuple(len(g) for g in axes), origin)


def select(ctx: Importer, node: onnx.NodeProto, view: Laid, axis: int, index: int) -> Laid:
    """T indexed at ``index`` along ``axis`` (the axis removed): ``select`` of V's atoms."""
    axes = view.axes()
    g = axes[axis]
    if view.holds_batch(g):
        raise reject(
            node, f"indexing axis {axis} of a tensor of shape {view.describe()}: that axis holds the batch; snnc never picks samples"
        )
    dim = math.prod(view.size(a) for a in g)
    if not -dim <= index < dim:
        raise reject(node, f"index {index} is out of range for axis {axis} of size {dim}")
    index %= dim
    # The index in each atom of the axis (row-major), selected from the last atom id down
    # so that the earlier ids stay valid (a floating batch of 1 stays: its index is 0).
    parts = {}
    rem = index
    for a in reversed(g):
        parts[a] = rem % view.size(a)
        rem //= view.size(a)
    real = sorted((a for a in g if a != 0), reverse=True)
    x = view.value
    rest = [h for i, h in enumerate(axes) if i != axis]
    for a in real:
        name = f"{ir_name(node)}.select" if len(real) > 1 else None
        x = ctx.emit("select", [x], node, attrs={"axis": a, "index": int(parts[a])}, name=name)
        rest = [[b - 1 if b > a else b for b in h] for h in rest]
    if not rest:
        raise reject(node, f"indexing the only axis of a tensor of shape {view.describe()}")
    if 0 in g:
        rest[0].insert(0, 0)
    return _from_axes(x, rest, view.origin)


def slice_axis(ctx: Importer, node: onnx.NodeProto, view: Laid, axis: int, start: int, end: int, step: int, batch: int = PRIME) -> Laid:
    """T sliced ``start:end:step`` along ``axis`` (already clamped to the axis' size)."""
    axes = view.axes()
    g = axes[axis]
    dim = view.dims(batch)[axis]
    full = start == 0 and end >= dim and step == 1
    if full:
        return view
    if view.holds_batch(g):
        raise reject(
            node, f"slicing axis {axis} of a tensor of shape {view.describe()}: that axis holds the batch; snnc never picks samples"
        )
    if start >= end:
        raise reject(node, f"the slice {start}:{end} of axis {axis} is empty")
    g = [a for a in g if a != 0]  # a floating batch of 1
    inner = math.prod(view.size(a) for a in g[1:])
    if g and ((step == 1 and start % inner == 0 and end % inner == 0) or len(g) == 1):
        x = ctx.emit("slice", [view.value], node, attrs={"axis": g[0], "start": start // inner, "end": end // inner, "step": step})
        return Laid(x, view.order, view.groups, view.origin)
    raise reject(node, f"slicing axis {axis} of a tensor of shape {view.describe()} cuts across axes the tensor was reshaped from")


# ====================================================================== constants
def constant_for(view: Laid, c: np.ndarray) -> np.ndarray | None:
    """Constant ``c`` (ONNX-broadcast against T) as a per-sample constant broadcasting over
    V, or None when it varies along the batch's axis or would grow T."""
    c = np.asarray(c, dtype=np.float32)
    axes = view.axes()
    if c.ndim > len(axes):
        return None
    c = c.reshape((1,) * (len(axes) - c.ndim) + c.shape)
    shape: list[int] = []
    for d, g in zip(c.shape, axes):
        sizes = [view.size(a) for a in g]
        if view.holds_batch(g) or d == 1:
            if d != 1:
                return None
            shape += [1] * len(g)
        elif d == math.prod(sizes):
            shape += sizes
        else:
            return None
    c = c.reshape(shape)
    pos = {a: i for i, a in enumerate(view.order)}
    c = c.transpose([pos[a] for a in range(len(view.order))])
    return c[0]
