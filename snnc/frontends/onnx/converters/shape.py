"""Shape and layout ops: Flatten, Reshape, Squeeze and Unsqueeze (per-sample ``reshape``),
Transpose (identity permutations only), Concat, Pad (zeros, spatial axes: ``pad``), and Shape
(folded to a constant holding the batch-size sentinel)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx

from snnc.errors import UnsupportedOpError
from snnc.frontends.common import resolve_sizes
from snnc.frontends.onnx.converters.pooling import gather_pool
from snnc.frontends.onnx.helpers import BATCH, UNKNOWN, BatchFlat, full, node_attrs, node_label, normalize_axis, reject, slice_shape
from snnc.ir.graph import Shape, Value

if TYPE_CHECKING:
    from snnc.frontends.onnx.importer import Importer


def convert_flatten(ctx: Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    rank = len(x.shape) + 1
    axis = int(node_attrs(node).get("axis", 1))
    axis = axis + rank if axis < 0 else axis  # Flatten allows axis == rank
    # Flatten(axis=k) gives [prod(dims[:k]), prod(dims[k:])]: it keeps the batch first only
    # when every per-sample dimension before k is 1.
    if axis < 1 or axis > rank or math.prod(x.shape[: axis - 1]) != 1:
        raise reject(node, f"Flatten(axis={axis}) of {full(x.shape)} would merge samples of the batch; use axis=1")
    return ctx.emit("reshape", [x], node, attrs={"shape": [math.prod(x.shape[axis - 1 :])]})


def convert_reshape(ctx: Importer, node: onnx.NodeProto) -> Value | BatchFlat:
    flat = ctx.lookup(node.input[0], deferred=True)
    if isinstance(flat, BatchFlat):
        return _unflatten(ctx, node, flat)
    x = ctx.value(node)
    target = ctx.const(node, 1, "target shape", integer=True)
    allowzero = bool(node_attrs(node).get("allowzero", 0))
    values = target.reshape(-1).tolist()
    try:
        shape = _resolve_reshape(node, values, x.shape, allowzero, ctx.fixed_batch)
    except UnsupportedOpError as exc:
        if values == [-1] or (len(values) == 1 and values[0] == math.prod(x.shape) * (ctx.fixed_batch or 0)):
            # The whole batch flattened to one axis (the dynamo exporter's as_strided): kept
            # for a consumer that restores the batch axis or picks whole samples.
            return BatchFlat(x, exc)
        raise
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
    data = ctx.lookup(node.input[0], deferred=True)
    if not isinstance(data, BatchFlat):
        ctx.lookup(node.input[0])  # a pending error of its own first
        raise reject(
            node,
            "Gather (indexing or slicing) of a tensor computed from the input is not supported; snnc converts whole "
            "tensors (move the indexing out of the model)",
        )
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


def convert_squeeze(ctx: Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    rank = len(x.shape) + 1
    axes_arr = ctx.optional_const(node, 1, "axes", integer=True)
    if axes_arr is None:
        axes = {i for i, d in enumerate(x.shape, start=1) if d == 1}
    else:
        axes = {normalize_axis(int(a), rank, node) for a in axes_arr.reshape(-1)}
    if 0 in axes or any(x.shape[a - 1] != 1 for a in axes):
        raise reject(node, f"Squeeze of axes {sorted(axes)} of {full(x.shape)}: only per-sample axes of size 1 can be squeezed")
    shape = [d for i, d in enumerate(x.shape, start=1) if i not in axes]
    return ctx.emit("reshape", [x], node, attrs={"shape": shape})


def convert_unsqueeze(ctx: Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    axes_arr = ctx.const(node, 1, "axes", integer=True)
    out_rank = len(x.shape) + 1 + axes_arr.size
    axes = sorted(normalize_axis(int(a), out_rank, node) for a in axes_arr.reshape(-1))
    if 0 in axes:
        raise reject(node, "Unsqueeze at axis 0 would move the batch dimension")
    dims: list[int | None] = [None, *x.shape]
    for a in axes:
        dims.insert(a, 1)
    return ctx.emit("reshape", [x], node, attrs={"shape": [int(d) for d in dims[1:]]})


def convert_concat(ctx: Importer, node: onnx.NodeProto) -> Value:
    tensors = [ctx.lookup(i) for i in node.input if i]
    if not all(isinstance(t, Value) for t in tensors):
        raise reject(node, "Concat of a constant with tensors computed from the input is not supported")
    rank = len(tensors[0].shape) + 1
    axis = normalize_axis(int(node_attrs(node)["axis"]), rank, node)
    if axis == 0:
        raise reject(node, "Concat along the batch axis 0 is not supported")
    return ctx.emit("concat", tensors, node, attrs={"axis": axis})


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
    """Shape of a tensor computed from the input: ``[BATCH, *per-sample shape]``."""
    x = ctx.value(node)
    return slice_shape(np.array([BATCH, *x.shape], np.int64), node_attrs(node))


def convert_transpose(ctx: Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    perm = list(node_attrs(node).get("perm") or reversed(range(len(x.shape) + 1)))
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
        raise reject(
            node, f"Transpose (perm {perm}) of a tensor computed from the input: the IR keeps the channel-first layout and has no transpose"
        )
    return ctx.emit("identity", [x], node)
