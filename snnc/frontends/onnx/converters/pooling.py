"""Pooling and reductions: AveragePool, MaxPool, GlobalAveragePool, ReduceMean over exactly
the spatial axes (a global average pool), and the dynamo exporter's gather form of adaptive
average pooling (:func:`gather_pool`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import onnx

from snnc.frontends.common import adaptive_pool_windows
from snnc.frontends.onnx.helpers import check_spatial, ir_name, node_attrs, node_label, normalize_axis, reject, window_attrs
from snnc.ir.graph import Value

if TYPE_CHECKING:
    from snnc.frontends.onnx.importer import Importer

log = logging.getLogger(__name__)


def convert_avg_pool(ctx: Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    check_spatial(node, x)
    a = node_attrs(node)
    if "kernel_shape" not in a:
        raise reject(node, "the required attribute kernel_shape is missing (the model is malformed)")
    kernel = list(a["kernel_shape"])
    strides, dilations, pads = window_attrs(node, x, kernel)
    if any(d != 1 for d in dilations):
        raise reject(node, "dilated average pooling is not supported")
    attrs = {
        "kernel": kernel,
        "strides": strides,
        "pads": pads,
        "count_include_pad": bool(a.get("count_include_pad", 0)),
        "ceil_mode": bool(a.get("ceil_mode", 0)),
    }
    if all(k == 1 for k in kernel) and all(st == 1 for st in strides) and not any(pads):
        return ctx.emit("identity", [x], node)  # adaptive pooling to the input's own size
    return ctx.emit("avg_pool", [x], node, attrs=attrs)


def convert_max_pool(ctx: Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    check_spatial(node, x)
    a = node_attrs(node)
    if a.get("storage_order", 0):
        log.debug("MaxPool %r: storage_order only affects the unused indices output", node_label(node))
    if "kernel_shape" not in a:
        raise reject(node, "the required attribute kernel_shape is missing (the model is malformed)")
    kernel = list(a["kernel_shape"])
    strides, dilations, pads = window_attrs(node, x, kernel)
    attrs = {"kernel": kernel, "strides": strides, "pads": pads, "dilations": dilations, "ceil_mode": bool(a.get("ceil_mode", 0))}
    return ctx.emit("max_pool", [x], node, attrs=attrs)


def convert_global_avg_pool(ctx: Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    check_spatial(node, x)
    return ctx.emit("global_avg_pool", [x], node, attrs={"keepdims": True})


def convert_reduce_mean(ctx: Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    a = node_attrs(node)
    rank = len(x.shape) + 1
    if ctx.opset >= 18:
        axes_arr = ctx.optional_const(node, 1, "axes", integer=True)
        axes = None if axes_arr is None or axes_arr.size == 0 else axes_arr.reshape(-1).tolist()
        if axes is None and a.get("noop_with_empty_axes", 0):
            return ctx.emit("identity", [x], node)
    else:
        axes = a.get("axes")
    spatial = set(range(2, rank))
    got = None if axes is None else {normalize_axis(int(ax), rank, node) for ax in axes}
    if got != spatial or not spatial:
        which = "all axes (including the batch)" if got is None else f"axes {sorted(got)}"
        raise reject(
            node, f"ReduceMean over {which}; snnc supports the mean over exactly the spatial axes {sorted(spatial)} (global pooling)"
        )
    return ctx.emit("global_avg_pool", [x], node, attrs={"keepdims": bool(a.get("keepdims", 1))})


def gather_pool(ctx: Importer, node: onnx.NodeProto) -> Value | None:
    """The dynamo exporter's adaptive average pooling when its windows all have the same
    length ``k_a`` per spatial axis ``a`` (e.g. 1×1 to 7×7): ``Transpose`` (spatial axes
    first) → ``GatherND`` with constant indices of shape ``[o_1, k_1, ..., o_n, k_n, n]`` →
    ``Transpose`` (batch and channel first again) → ``ReduceMean`` over the ``k`` axes, each
    read only by the next. Output ``(o_1, ..., o_n)`` is the mean of the inputs at the indices
    ``[o_1, :, ..., o_n, :]``. When the index of every axis depends only on that axis's
    ``(o_a, k_a)`` and the resulting per-axis averaging matrices equal those of an average
    pool and / or nearest upsampling (:func:`~snnc.frontends.common.adaptive_pool_windows`),
    the chain is emitted as those ops and its nodes are absorbed; otherwise returns None."""
    x = ctx.value(node)
    nd = len(x.shape) - 1
    perm = list(node_attrs(node).get("perm") or [])
    if nd not in (1, 2) or perm != [*range(2, nd + 2), 0, 1]:
        return None
    chain = gather_chain(ctx, node)
    if chain is None:
        return None
    gather, back, mean = chain
    if node_attrs(gather).get("batch_dims", 0) or gather.input[0] != node.output[0]:
        return None
    idx = _constant_ahead(ctx, gather.input[1])
    if idx is None or idx.dtype.kind not in "iu" or idx.ndim != 2 * nd + 1 or idx.shape[-1] != nd:
        return None
    if list(node_attrs(back).get("perm") or []) != [2 * nd, 2 * nd + 1, *range(2 * nd)] or node_attrs(mean).get("keepdims", 1):
        return None
    axes = node_attrs(mean).get("axes") if ctx.opset < 18 else _constant_ahead(ctx, mean.input[1]) if len(mean.input) > 1 else None
    rank = 2 * nd + 2
    if axes is None or {int(a) % rank for a in np.asarray(axes).reshape(-1)} != {3 + 2 * a for a in range(nd)}:
        return None
    in_sizes = list(x.shape[1:])
    out_sizes = [idx.shape[2 * a] for a in range(nd)]
    plan = adaptive_pool_windows(in_sizes, out_sizes)
    if plan is None:
        return None
    for a, (size, k, s) in enumerate(zip(in_sizes, *plan)):
        ia = idx[..., a]
        if np.any(ia < -size) or np.any(ia >= size):
            return None
        ia = ia % size
        first = ia[tuple(slice(None) if j in (2 * a, 2 * a + 1) else slice(0, 1) for j in range(2 * nd))]
        if not np.array_equal(ia, np.broadcast_to(first, ia.shape)):
            return None  # this axis's index varies with another axis's window
        win = first.reshape(out_sizes[a], -1)  # [o_a, k_a]: the inputs window o_a averages
        got = np.zeros((len(win), size))
        np.add.at(got, (np.repeat(np.arange(len(win)), win.shape[1]), win.reshape(-1)), 1.0 / win.shape[1])
        want = np.zeros_like(got)
        for o in range(len(win)):
            lo = (o // s) * k
            want[o, lo : lo + k] = 1.0 / k
        if not np.allclose(got, want):
            return None
    kernel, scales = plan
    ctx.absorbed.update({id(gather), id(back), id(mean)})
    name = ir_name(mean)
    if all(k == 1 for k in kernel) and all(s == 1 for s in scales):
        value = ctx.emit("identity", [x], node, name=name)
    else:
        if any(k > 1 for k in kernel):
            x = ctx.emit("avg_pool", [x], node, attrs={"kernel": kernel, "strides": kernel, "pads": [0] * (2 * nd)}, name=name)
        if any(s > 1 for s in scales):
            x = ctx.emit("upsample", [x], node, attrs={"scales": scales, "mode": "nearest"}, name=name)
        value = x
    ctx.env[mean.output[0]] = value
    return value


def gather_chain(ctx: Importer, node: onnx.NodeProto) -> tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto] | None:
    """The GatherND, Transpose and ReduceMean after Transpose ``node`` when each is the only
    reader of the one before (the op types of :func:`gather_pool`'s chain), else None."""
    chain, cur = [], node
    for op_type in ("GatherND", "Transpose", "ReduceMean"):
        cur = ctx.single_reader(cur.output[0])
        if cur is None or cur.op_type != op_type:
            return None
        chain.append(cur)
    return chain[0], chain[1], chain[2]


def _constant_ahead(ctx: Importer, name: str) -> np.ndarray | None:
    """Tensor ``name`` when it is computed from constants alone, also when the driver has not
    reached its producers yet (the unoptimised dynamo export computes a GatherND's indices
    after the Transpose that feeds it); None otherwise."""
    if not name:
        return None
    a, b = ctx.eval_at_batch(name, 2), ctx.eval_at_batch(name, 3)
    return a if a is not None and b is not None and np.array_equal(a, b) else None
