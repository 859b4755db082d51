"""Pooling and reductions: AveragePool, MaxPool, GlobalAveragePool, and ReduceMean over
exactly the spatial axes (a global average pool)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import onnx

from snnc.frontends.onnx.helpers import check_spatial, node_attrs, node_label, normalize_axis, reject, window_attrs
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
