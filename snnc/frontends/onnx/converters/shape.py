"""Shape and layout ops: Flatten, Reshape, Squeeze and Unsqueeze (per-sample ``reshape``),
Transpose (``transpose``), Gather with a scalar index (``select``), Slice and Split
(``slice``), Concat (``concat``, and ``concat_constant`` with a constant repeated over the
batch), Pad (zeros, spatial axes: ``pad``), and Shape (folded to a constant holding the
batch-size sentinel).

Transpose, Reshape, Squeeze / Unsqueeze, Flatten, Gather, Slice and Split also take and
give :class:`~snnc.frontends.onnx.layout.Laid` views, tensors whose batch axis moved (see
:mod:`snnc.frontends.onnx.layout`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx

from snnc.errors import DataError, UnsupportedOpError
from snnc.frontends.common import resolve_sizes
from snnc.frontends.onnx.converters.pooling import gather_pool
import snnc.frontends.onnx.layout as layout
from snnc.frontends.onnx.helpers import (
    BATCH,
    UNKNOWN,
    BatchConstant,
    BatchFlat,
    full,
    node_attrs,
    node_label,
    normalize_axis,
    is_symbolic,
    reject,
    slice_shape,
)
from snnc.frontends.onnx.layout import PRIME, Laid
from snnc.ir.graph import Shape, Value

if TYPE_CHECKING:
    from snnc.frontends.onnx.importer import Importer


def _origin(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node {node_label(node)!r}"


def _batch(ctx: Importer) -> int:
    """The batch size in layout arithmetic: the model's fixed batch size, or the prime."""
    return ctx.fixed_batch or PRIME


def _moved(before: Laid, after: Laid, node: onnx.NodeProto) -> Laid:
    """``after``, naming ``node`` as the one that moved the batch axis when it did."""
    if before.batch_axis() != after.batch_axis() or before.axes()[before.batch_axis()] != after.axes()[after.batch_axis()]:
        after.origin = _origin(node)
    elif not after.origin:
        after.origin = before.origin or _origin(node)
    return after


def _reshape_view(ctx: Importer, node: onnx.NodeProto, view: Laid, values: list[int], allowzero: bool) -> Value | Laid | None:
    """Reshape of a view to target ``values`` (ONNX's, with the batch sentinels), or None."""
    batch = _batch(ctx)
    target = layout.resolve_target(node, view, values, allowzero, batch)
    if target is None:
        return None
    got = layout.regroup(ctx, node, view, target, batch)
    return None if got is None else layout.finish(_moved(view, got, node))


def convert_flatten(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    t = ctx.laid(node)
    if isinstance(t, Laid):
        rank = t.rank
        axis = int(node_attrs(node).get("axis", 1))
        axis = axis + rank if axis < 0 else axis
        dims = t.dims(_batch(ctx))
        got = layout.regroup(ctx, node, t, [math.prod(dims[:axis]), math.prod(dims[axis:])], _batch(ctx))
        if got is None:
            raise reject(node, f"Flatten(axis={axis}) of a tensor of shape {t.describe()} would mix the samples of the batch")
        return layout.finish(_moved(t, got, node))
    x = t
    rank = len(x.shape) + 1
    axis = int(node_attrs(node).get("axis", 1))
    axis = axis + rank if axis < 0 else axis  # Flatten allows axis == rank
    # Flatten(axis=k) gives [prod(dims[:k]), prod(dims[k:])]: it keeps the batch first only
    # when every per-sample dimension before k is 1.
    if axis < 1 or axis > rank or math.prod(x.shape[: axis - 1]) != 1:
        raise reject(node, f"Flatten(axis={axis}) of {full(x.shape)} would merge samples of the batch; use axis=1")
    return ctx.emit("reshape", [x], node, attrs={"shape": [math.prod(x.shape[axis - 1 :])]})


def convert_reshape(ctx: Importer, node: onnx.NodeProto) -> Value | BatchFlat | Laid:
    flat = ctx.lookup(node.input[0], deferred=True, laid=True)
    if isinstance(flat, BatchFlat):
        return _unflatten(ctx, node, flat)
    t = ctx.laid(node)
    target = ctx.const(node, 1, "target shape", integer=True)
    allowzero = bool(node_attrs(node).get("allowzero", 0))
    values = target.reshape(-1).tolist()
    if isinstance(t, Laid):
        got = _reshape_view(ctx, node, t, values, allowzero)
        if got is None:
            shown = ["batch" if v == BATCH else ("?" if v == UNKNOWN else v) for v in values]
            raise reject(node, f"Reshape to {shown} of a tensor of shape {t.describe()} would move elements between samples")
        return got
    x = t
    try:
        shape = _resolve_reshape(node, values, x.shape, allowzero, ctx.fixed_batch)
    except UnsupportedOpError as exc:
        if values == [-1] or (len(values) == 1 and values[0] == math.prod(x.shape) * (ctx.fixed_batch or 0)):
            # The whole batch flattened to one axis (the dynamo exporter's as_strided): kept
            # for a consumer that restores the batch axis or picks whole samples.
            return BatchFlat(x, exc)
        # A reshape moving the batch axis (nn.MultiheadAttention's [N, batch * heads, d]):
        # kept as a layout view when it only regroups the axes.
        got = _reshape_view(ctx, node, layout.of(x), values, allowzero)
        if got is None:
            raise
        return got
    return ctx.emit("reshape", [x], node, attrs={"shape": shape})


def _unflatten(ctx: Importer, node: onnx.NodeProto, flat: BatchFlat) -> Value:
    """Reshape of a whole-batch flatten ``[batch * S]`` back to ``[batch, ...]``: the
    composition is a per-sample reshape when the target keeps the batch first."""
    target = [int(t) for t in ctx.const(node, 1, "target shape", integer=True).reshape(-1)]
    x = flat.value
    first = target[0] if target else None
    ok_first = first in (BATCH, -1) or (ctx.fixed_batch is not None and first == ctx.fixed_batch)
    rest = target[1:]
    sizes = resolve_sizes(rest, math.prod(x.shape)) if ok_first and 0 not in rest and not (first == -1 and -1 in rest) else None
    if sizes is None:
        raise flat.error
    return ctx.emit("reshape", [x], node, attrs={"shape": sizes})


def convert_gather(ctx: Importer, node: onnx.NodeProto) -> Value:
    """Gather from a whole-batch flatten whose indices pick whole samples in order: the
    dynamo exporter's ``as_strided`` for ``torch.flatten`` of a channels-last tensor is
    ``Reshape(x, [-1])`` then ``Gather`` at ``b * S + offset`` (``Range`` over the batch
    size, ``Mul`` by the sample stride, ``Unsqueeze`` and ``Add`` of per-sample offsets).

    The chain is proved per-sample by evaluating the indices for two batch sizes: for each
    ``b`` the indices must be ``[b, *rest]`` with ``indices[i] - i * S`` the same offsets
    ``off`` for every sample and both batch sizes, inside ``[0, S)``. The Gather then is
    ``y[i] = x[i].flat[off]``; with ``off`` the identity order it is a per-sample reshape
    to ``rest`` (other orders would be a per-sample permutation, which the IR lacks).
    """
    data = ctx.lookup(node.input[0], deferred=True, laid=True)
    if not isinstance(data, BatchFlat):
        ctx.lookup(node.input[0], laid=True)  # a pending error of its own first
        if not isinstance(data, (Value, Laid)):
            raise reject(
                node,
                "Gather from a constant at indices computed from the input (an embedding lookup) is not supported; "
                "snnc imports networks on float inputs",
            )
        return _gather_index(ctx, node, data)
    if len(node.input) < 2 or not node.input[1]:
        raise reject(node, "its indices (input 1) are missing")
    axis = int(node_attrs(node).get("axis", 0))
    if axis not in (0, -1):
        raise reject(node, f"axis {axis} is out of range for the rank-1 flattened batch")
    x = data.value
    size = math.prod(x.shape)
    offsets = None
    for batch in (2, 3):
        idx = ctx.eval_at_batch(node.input[1], batch)
        off = _sample_offsets(idx, batch, size)
        if off is None or (offsets is not None and not np.array_equal(off, offsets)):
            raise UnsupportedOpError(
                node.op_type,
                node_label(node),
                f"{data.error.hint}; the Gather reading it does not pick whole samples, so the chain does mix samples",
            )
        offsets = off
    assert offsets is not None
    if not np.array_equal(offsets.reshape(-1), np.arange(size)):
        raise reject(
            node,
            "the Gather picks each sample's elements in another order (a per-sample permutation such as a transpose), "
            "which snnc's IR cannot represent; export the model in the default (contiguous) memory format",
        )
    shape = [int(d) for d in offsets.shape]
    ctx.notices.append(
        f"proved per-sample: Reshape of the whole batch to [-1] then Gather {node_label(node)!r} at b * {size} + offset "
        f"(indices evaluated for batch sizes 2 and 3) is a per-sample reshape to {shape}"
    )
    if shape == list(x.shape):
        return ctx.emit("identity", [x], node)
    return ctx.emit("reshape", [x], node, attrs={"shape": shape})


def _gather_index(ctx: Importer, node: onnx.NodeProto, data: Value | Laid) -> Value | Laid:
    """Gather of a computed tensor at a constant scalar index (``x[:, 0]``, q / k / v out of
    a stacked qkv tensor): ``select``; a one-element index list keeps the axis (``slice``)."""
    view = layout.of(data, _origin(node))
    idx = ctx.const(node, 1, "indices", integer=True)
    axis = normalize_axis(int(node_attrs(node).get("axis", 0)), view.rank, node)
    if idx.size != 1 or idx.ndim > 1:
        raise reject(
            node,
            f"Gather of {idx.size} indices (shape {list(idx.shape)}) from a tensor computed from the input; snnc maps a "
            "single constant index (x[:, 0], a scalar index tensor) to select and contiguous ranges (Slice) to slice",
        )
    i = int(idx.reshape(-1)[0])
    if view.holds_batch(view.axes()[axis]):
        raise reject(node, f"Gather along axis {axis} of a tensor of shape {view.describe()} picks samples of the batch; snnc never does")
    dim = view.dims()[axis]
    if not -dim <= i < dim:
        raise DataError(
            f"Gather node {node_label(node)!r}: index {i} is out of range for axis {axis} of size {dim}; the model is malformed"
        )
    i %= dim
    if idx.ndim == 1:
        got = layout.slice_axis(ctx, node, view, axis, i, i + 1, 1)
    else:
        got = layout.select(ctx, node, view, axis, i)
    return layout.finish(_moved(view, got, node))


def convert_slice(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    """Slice of a computed tensor with constant starts / ends / axes / steps (step >= 1)
    along axes without the batch: ``slice`` (a full range of the batch axis is kept)."""
    view = layout.of(ctx.laid(node), _origin(node))
    starts = ctx.const(node, 1, "starts", integer=True).reshape(-1)
    ends = ctx.const(node, 2, "ends", integer=True).reshape(-1)
    axes_arr = ctx.optional_const(node, 3, "axes", integer=True)
    steps_arr = ctx.optional_const(node, 4, "steps", integer=True)
    axes = list(range(len(starts))) if axes_arr is None else [int(a) for a in axes_arr.reshape(-1)]
    steps = [1] * len(starts) if steps_arr is None else [int(v) for v in steps_arr.reshape(-1)]
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise DataError(f"Slice node {node_label(node)!r}: starts, ends, axes and steps differ in length; the model is malformed")
    out = view
    batch = _batch(ctx)
    for s, e, a, st in zip(starts.tolist(), ends.tolist(), axes, steps):
        axis = normalize_axis(a, view.rank, node)
        if st < 1:
            raise reject(node, f"Slice with step {st} along axis {axis}: snnc slices forwards only (step >= 1)")
        dim = out.dims(batch)[axis]
        if out.holds_batch(out.axes()[axis]):
            if (s == 0 or s == -(2**63)) and (e >= dim or e == BATCH) and st == 1:
                continue
            raise reject(
                node,
                f"Slice {s}:{e}:{st} along axis {axis} of a tensor of shape {out.describe()} slices the batch axis; "
                "snnc never picks samples",
            )
        s = max(0, min(dim, s + dim if s < 0 else s))
        e = max(0, min(dim, e + dim if e < 0 else e))
        if s >= e:
            raise reject(node, f"Slice {s}:{e} along axis {axis} (size {dim}) is empty")
        out = layout.slice_axis(ctx, node, out, axis, s, e, st, batch)
    if out is view and isinstance(view.value, Value) and layout.finish(view) is view.value:
        return ctx.emit("identity", [view.value], node)
    return layout.finish(out)


def convert_split(ctx: Importer, node: onnx.NodeProto) -> list[Value | Laid]:
    """Split of a computed tensor along an axis without the batch: one ``slice`` per output."""
    view = layout.of(ctx.laid(node), _origin(node))
    a = node_attrs(node)
    axis = normalize_axis(int(a.get("axis", 0)), view.rank, node)
    if view.holds_batch(view.axes()[axis]):
        raise reject(
            node, f"Split along axis {axis} of a tensor of shape {view.describe()} splits the batch axis; snnc never picks samples"
        )
    dim = view.dims()[axis]
    n = len(node.output)
    split = ctx.optional_const(node, 1, "split", integer=True) if ctx.opset >= 13 else None
    if split is not None:
        sizes = [int(v) for v in split.reshape(-1)]
    elif "split" in a:
        sizes = [int(v) for v in a["split"]]
    else:
        parts = int(a.get("num_outputs", n))
        chunk = -(-dim // parts)
        sizes = [min(chunk, dim - i * chunk) for i in range(parts)]
    if len(sizes) != n or sum(sizes) != dim or any(v < 0 for v in sizes):
        raise DataError(
            f"Split node {node_label(node)!r}: sizes {sizes} do not split axis {axis} of size {dim} into {n} outputs; "
            "the model is malformed"
        )
    outs: list[Value | Laid] = []
    start = 0
    for size in sizes:
        if size == 0:
            raise reject(node, "Split with an empty output is not supported")
        outs.append(layout.finish(layout.slice_axis(ctx, node, view, axis, start, start + size, 1)))
        start += size
    return outs


def _sample_offsets(idx: np.ndarray | None, batch: int, size: int) -> np.ndarray | None:
    """The per-sample offsets ``off`` when ``idx[i] == i * size + off`` for every sample
    ``i < batch`` (``0 <= off < size``), else None."""
    if idx is None or idx.dtype.kind not in "iu" or idx.ndim < 1 or idx.shape[0] != batch:
        return None
    idx = idx.astype(np.int64)
    starts = (np.arange(batch, dtype=np.int64) * size).reshape((batch,) + (1,) * (idx.ndim - 1))
    off = idx - starts
    if np.any(off < 0) or np.any(off >= size) or not np.all(off == off[:1]):
        return None
    return off[0]


def _resolve_reshape(node: onnx.NodeProto, target: list[int], shape: Shape, allowzero: bool, fixed_batch: int | None) -> list[int]:
    """The per-sample shape a Reshape target means, if it keeps the batch dimension first.

    The first entry stands for the batch when it is the BATCH sentinel (from Shape), -1, 0
    (copy, without allowzero) or the model's fixed batch size.
    """
    fail = f"Reshape to {['batch' if t == BATCH else ('?' if t == UNKNOWN else t) for t in target]} of {full(shape)}"
    if not target or UNKNOWN in target:
        raise reject(node, f"{fail}: the target depends on the batch size in a way snnc cannot resolve")
    first, rest = target[0], list(target[1:])
    if not (first in (BATCH, -1) or (first == 0 and not allowzero) or (fixed_batch is not None and first == fixed_batch)):
        raise reject(node, f"{fail}: the batch dimension must stay first")
    if BATCH in rest:
        raise reject(node, f"{fail}: the batch size appears in a non-batch position")
    for i, t in enumerate(rest):
        if t == 0 and not allowzero:
            if i + 1 >= len(shape) + 1:
                raise reject(node, f"{fail}: 0 copies a dimension the input does not have")
            rest[i] = shape[i]  # 0 copies the input dimension at the same (batch-counted) axis
    if rest.count(-1) > 1 or (first == -1 and -1 in rest):
        raise reject(node, f"{fail}: more than one -1")
    sizes = resolve_sizes(rest, math.prod(shape))
    if sizes is None:
        raise reject(node, f"{fail}: the per-sample sizes do not match (it would move elements between samples)")
    return sizes


def convert_squeeze(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    t = ctx.laid(node)
    axes_arr = ctx.optional_const(node, 1, "axes", integer=True)
    if isinstance(t, Laid):
        if axes_arr is None:
            axes_l = [i for i, g in enumerate(t.axes()) if 0 not in g and all(t.size(a) == 1 for a in g)]
        else:
            axes_l = sorted({normalize_axis(int(a), t.rank, node) for a in axes_arr.reshape(-1)})
        return layout.finish(_moved(t, layout.remove_axes(t, axes_l, node), node))
    x = t
    rank = len(x.shape) + 1
    if axes_arr is None:
        axes = {i for i, d in enumerate(x.shape, start=1) if d == 1}
    else:
        axes = {normalize_axis(int(a), rank, node) for a in axes_arr.reshape(-1)}
    if 0 in axes or any(x.shape[a - 1] != 1 for a in axes):
        raise reject(node, f"Squeeze of axes {sorted(axes)} of {full(x.shape)}: only per-sample axes of size 1 can be squeezed")
    shape = [d for i, d in enumerate(x.shape, start=1) if i not in axes]
    return ctx.emit("reshape", [x], node, attrs={"shape": shape})


def convert_unsqueeze(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    t = ctx.laid(node)
    axes_arr = ctx.const(node, 1, "axes", integer=True)
    view = layout.of(t)
    out_rank = view.rank + axes_arr.size
    axes = sorted(normalize_axis(int(a), out_rank, node) for a in axes_arr.reshape(-1))
    if isinstance(t, Laid) or 0 in axes:
        # A new leading axis moves the batch (the dynamo exporter's unsqueeze(0) before a
        # permute of stacked q, k, v): a layout view.
        return layout.finish(_moved(view, layout.insert_axes(view, axes, ""), node))
    x = t
    dims: list[int | None] = [None, *x.shape]
    for a in axes:
        dims.insert(a, 1)
    return ctx.emit("reshape", [x], node, attrs={"shape": [int(d) for d in dims[1:]]})


def convert_concat(ctx: Importer, node: onnx.NodeProto) -> Value:
    """Concat of computed tensors (``concat``) and of constants repeated over the batch
    (``concat_constant``: a ViT's class token ``cls.expand(B, -1, -1)``)."""
    parts: list[Value | np.ndarray] = []
    for i in (i for i in node.input if i):
        t = ctx.lookup(i, laid=True)
        if isinstance(t, Laid):
            t = layout.materialize(ctx, t, node)
        if isinstance(t, BatchConstant):
            t = t.value
        elif isinstance(t, np.ndarray):
            sample = _repeated_sample(ctx, t)
            if sample is None:
                raise reject(
                    node,
                    f"Concat of a constant of shape {list(t.shape)} with tensors computed from the input: the constant is not "
                    "the same for every sample of the batch (concatenate a constant expanded to the batch size, e.g. "
                    "torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1))",
                )
            t = sample
        parts.append(t)
    values = [p for p in parts if isinstance(p, Value)]
    rank = len(values[0].shape) + 1
    axis = normalize_axis(int(node_attrs(node)["axis"]), rank, node)
    if axis == 0:
        raise reject(node, "Concat along the batch axis 0 is not supported")
    if len(values) == len(parts):
        return ctx.emit("concat", values, node, attrs={"axis": axis})
    # Runs of neighbouring constants (or computed tensors) are joined first; each constant
    # run then joins the computed tensor before it ("after"), or the first one ("before").
    runs: list[list[Value | np.ndarray]] = []
    for p in parts:
        if runs and isinstance(runs[-1][0], Value) == isinstance(p, Value):
            runs[-1].append(p)
        else:
            runs.append([p])

    def joined(run: list) -> Value:
        return run[0] if len(run) == 1 else ctx.emit("concat", run, node, attrs={"axis": axis})

    acc: Value | None = None
    lead: list[np.ndarray] | None = None
    for run in runs:
        if isinstance(run[0], Value):
            v = joined(run)
            if acc is None:
                acc = v if lead is None else _concat_constant(ctx, node, v, lead, axis, "before")
            else:
                acc = ctx.emit("concat", [acc, v], node, attrs={"axis": axis})
        elif acc is None:
            lead = run  # type: ignore[assignment]
        else:
            acc = _concat_constant(ctx, node, acc, run, axis, "after")  # type: ignore[arg-type]
    assert acc is not None
    return acc


def _concat_constant(ctx: Importer, node: onnx.NodeProto, x: Value, consts: list[np.ndarray], axis: int, position: str) -> Value:
    value = consts[0] if len(consts) == 1 else np.concatenate(consts, axis=axis - 1)
    return ctx.emit("concat_constant", [x], node, attrs={"axis": axis, "position": position}, params={"value": value.astype(np.float32)})


def _repeated_sample(ctx: Importer, c: np.ndarray) -> np.ndarray | None:
    """One sample of constant ``c`` when it is the same for every sample of the model's
    fixed batch (``[batch, ...]``, rows equal), else None."""
    b = ctx.fixed_batch
    if b is None or c.ndim < 1 or c.shape[0] != b or is_symbolic(c):
        return None
    return c[0] if np.all(c == c[:1]) else None


def convert_pad(ctx: Importer, node: onnx.NodeProto) -> Value:
    """Pad in constant mode with value 0, of the spatial axes only: ``pad``."""
    x = ctx.value(node)
    a = node_attrs(node)
    mode = a.get("mode", "constant")
    if mode != "constant":
        raise reject(node, f"Pad mode {mode!r} is not supported; snnc pads with zeros (mode 'constant', value 0)")
    rank = len(x.shape) + 1
    if ctx.opset >= 11:
        pads = ctx.const(node, 1, "pads", integer=True)
        value = ctx.optional_const(node, 2, "constant_value")
        axes_arr = ctx.optional_const(node, 3, "axes", integer=True)
    else:
        pads, value, axes_arr = np.asarray(a["pads"]), np.asarray(a.get("value", 0.0)), None
    if value is not None and np.any(np.asarray(value) != 0):
        raise reject(node, f"padding with the value {np.asarray(value).reshape(-1)[0]!r}; snnc pads with zeros only")
    axes = list(range(rank)) if axes_arr is None else [normalize_axis(int(ax), rank, node) for ax in np.asarray(axes_arr).reshape(-1)]
    pads = [int(v) for v in np.asarray(pads).reshape(-1)]
    if len(pads) != 2 * len(axes):
        raise reject(node, f"{len(pads)} pads for {len(axes)} axes (two per axis expected)")
    begin, end = [0] * rank, [0] * rank
    for i, ax in enumerate(axes):
        begin[ax], end[ax] = pads[i], pads[len(axes) + i]
    if any(begin[:2]) or any(end[:2]):
        raise reject(node, "padding of the batch or channel axis is not supported (only the spatial axes)")
    if any(v < 0 for v in begin + end):
        raise reject(node, "negative pads (cropping) are not supported")
    if not any(begin + end):
        return x  # pads of zero: nothing to do
    return ctx.emit("pad", [x], node, attrs={"pads": begin[2:] + end[2:]})


def convert_shape(ctx: Importer, node: onnx.NodeProto) -> np.ndarray:
    """Shape of a tensor computed from the input: ``[BATCH, *per-sample shape]`` (a view
    whose batch axis moved has BATCH where the batch is, UNKNOWN where it is merged)."""
    t = ctx.laid(node)
    if isinstance(t, Laid):
        dims = []
        for g in t.axes():
            n = math.prod(t.size(a) for a in g if a != 0)
            if t.holds_batch(g):
                dims.append(BATCH if n == 1 else UNKNOWN)
            else:
                dims.append(BATCH if g == [0] else n)
        return slice_shape(np.array(dims, np.int64), node_attrs(node))
    return slice_shape(np.array([BATCH, *t.shape], np.int64), node_attrs(node))


def convert_transpose(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    t = ctx.laid(node)
    view = layout.of(t)
    perm = [int(p) for p in (node_attrs(node).get("perm") or reversed(range(view.rank)))]
    if sorted(perm) != list(range(view.rank)):
        raise DataError(
            f"Transpose node {node_label(node)!r}: perm {perm} is not a permutation of the {view.rank} axes; the model is malformed"
        )
    if isinstance(t, Laid):
        return t if perm == list(range(view.rank)) else layout.finish(_moved(view, layout.permute(view, perm, view.origin), node))
    x = t
    if perm != list(range(len(x.shape) + 1)):
        pooled = gather_pool(ctx, node)
        if pooled is not None:
            return pooled
        reader = ctx.single_reader(node.output[0])
        if reader is not None and reader.op_type == "GatherND":
            raise reject(
                node,
                f"Transpose (perm {perm}) → GatherND is the dynamo exporter's form of indexing ops such as adaptive average "
                "pooling with irregular windows (sizes that do not divide one another) or nearest-exact upsampling; the IR "
                "keeps the channel-first layout and has neither transpose nor gather. snnc maps adaptive pooling between "
                "sizes that divide one another (e.g. 1×1, 7×7 or 14×14 to 7×7)",
            )
        return layout.finish(_moved(view, layout.permute(view, perm, ""), node))
    return ctx.emit("identity", [x], node)
