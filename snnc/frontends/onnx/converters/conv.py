"""Linear layers: Conv, ConvTranspose, Gemm, MatMul (with a following bias Add fused; on
any rank, over the last axis) and BatchNormalization; MatMul of two computed tensors
(``matmul``: attention's Q K^T and A V)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx

from snnc.errors import DataError
import snnc.frontends.onnx.layout as layout
from snnc.frontends.onnx.converters.arithmetic import aligned_constant
from snnc.frontends.onnx.layout import Laid
from snnc.frontends.onnx.helpers import check_spatial, check_window, full, ir_name, node_attrs, node_label, reject, window_attrs
from snnc.ir.graph import Value

if TYPE_CHECKING:
    from snnc.frontends.onnx.importer import Importer


def convert_conv(ctx: Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    w = ctx.const(node, 1, "weight")
    check_spatial(node, x, w.ndim - 2)
    b = ctx.optional_const(node, 2, "bias")
    a = node_attrs(node)
    kernel = list(a.get("kernel_shape") or w.shape[2:])
    strides, dilations, pads = window_attrs(node, x, kernel)
    groups = int(a.get("group", 1))
    if groups < 1:
        raise DataError(f"Conv node {node_label(node)!r}: group {groups} must be >= 1 (the model is malformed)")
    if x.shape[0] != w.shape[1] * groups:
        raise reject(node, f"weight {list(w.shape)} with group={groups} does not fit {x.shape[0]} input channels")
    bias = np.zeros(w.shape[0], np.float32) if b is None else _vector(node, b, w.shape[0], "bias")
    attrs = {"strides": strides, "pads": pads, "dilations": dilations, "groups": groups}
    return ctx.emit("conv", [x], node, attrs=attrs, params={"weight": w, "bias": bias})


def convert_conv_transpose(ctx: Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    w = ctx.const(node, 1, "weight")
    nd = check_spatial(node, x, w.ndim - 2)
    b = ctx.optional_const(node, 2, "bias")
    a = node_attrs(node)
    groups = int(a.get("group", 1))
    kernel = list(a.get("kernel_shape") or w.shape[2:])
    strides = list(a.get("strides") or [1] * nd)
    dilations = list(a.get("dilations") or [1] * nd)
    outpad = list(a.get("output_padding") or [0] * nd)
    auto_pad = a.get("auto_pad", "NOTSET")
    out_shape = list(a.get("output_shape") or [])
    if auto_pad in ("SAME_UPPER", "SAME_LOWER") and not out_shape:
        out_shape = [s * i for s, i in zip(strides, x.shape[1:])]
    if out_shape:
        if len(out_shape) != nd:
            raise reject(node, f"output_shape {out_shape} must list the {nd} spatial dimensions")
        pads = _conv_transpose_pads(node, auto_pad, x.shape[1:], out_shape, kernel, strides, dilations, outpad)
    elif auto_pad == "VALID":
        pads = [0] * (2 * nd)
    else:
        pads = list(a.get("pads") or [0] * (2 * nd))
    check_window(node, kernel, strides, dilations, pads, output_padding=outpad)
    if groups < 1:
        raise DataError(f"ConvTranspose node {node_label(node)!r}: group {groups} must be >= 1 (the model is malformed)")
    cout = w.shape[1] * groups
    bias = np.zeros(cout, np.float32) if b is None else _vector(node, b, cout, "bias")
    attrs = {"strides": strides, "pads": pads, "dilations": dilations, "output_padding": outpad, "groups": groups}
    return ctx.emit("conv_transpose", [x], node, attrs=attrs, params={"weight": w, "bias": bias})


def _vector(node: onnx.NodeProto, arr: np.ndarray, n: int, what: str) -> np.ndarray:
    """A per-output-channel constant: ``n`` values in any shape with one non-unit axis."""
    if arr.size != n or sum(d != 1 for d in arr.shape) > 1:
        raise reject(node, f"its {what} has shape {list(arr.shape)}; expected {n} values, one per output channel")
    return arr.reshape(-1)


def _conv_transpose_pads(
    node: onnx.NodeProto,
    auto_pad: str,
    in_spatial: Sequence[int],
    out_shape: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    outpad: Sequence[int],
) -> list[int]:
    """Pads producing ``output_shape`` (ONNX ConvTranspose spec: the odd element goes at
    the beginning unless auto_pad is SAME_UPPER)."""
    begin, end = [], []
    for size, want, k, s, d, op in zip(in_spatial, out_shape, kernel, strides, dilations, outpad):
        total = s * (size - 1) + op + (k - 1) * d + 1 - want
        if total < 0:
            raise reject(
                node, f"output_shape {list(out_shape)} is larger than the full transposed convolution; set pads/output_padding instead"
            )
        small, large = total // 2, total - total // 2
        b, e = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        begin.append(b)
        end.append(e)
    return begin + end


def convert_gemm(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    a = node_attrs(node)
    if a.get("transA", 0):
        raise reject(node, "transA=1 would transpose the batch into the features; re-export without transposing the input")
    t = ctx.laid(node)
    if not isinstance(ctx.lookup(node.input[1], laid=True), np.ndarray):
        raise reject(
            node,
            "Gemm of two tensors computed from the input contracts over the batch axis (the rows of A are the samples); "
            "snnc maps the product of two computed tensors only as MatMul over per-sample matrices",
        )
    w = ctx.const(node, 1, "weight (B)").astype(np.float32)
    rank = t.rank if isinstance(t, Laid) else len(t.shape) + 1
    if rank != 2 or w.ndim != 2:
        shown = t.describe() if isinstance(t, Laid) else full(t.shape)
        raise reject(node, f"Gemm needs a [batch, features] input, got {shown}")
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    weight = alpha * (w if a.get("transB", 0) else w.T)  # [N, K]
    n = weight.shape[0]
    c = ctx.optional_const(node, 2, "bias (C)")
    bias = np.zeros(n, np.float32)
    if c is not None:
        cc = aligned_constant(c, (n,))
        if cc is None:
            raise reject(node, f"bias C of shape {list(c.shape)} does not broadcast over [batch, {n}] per sample")
        bias = beta * np.broadcast_to(cc, (n,)).astype(np.float32)
    return _linear(ctx, node, t, weight, bias)


def _linear(
    ctx: Importer, node: onnx.NodeProto, t: Value | Laid, weight: np.ndarray, bias: np.ndarray, name: str | None = None
) -> Value | Laid:
    """``linear`` over the last axis of a value or a layout view."""
    if isinstance(t, Value):
        return ctx.emit("linear", [t], node, params={"weight": weight, "bias": bias}, name=name)
    view = layout.prepare_last(ctx, node, t, node.op_type)
    y = ctx.emit("linear", [view.value], node, params={"weight": weight, "bias": bias}, name=name)
    return layout.finish(Laid(y, view.order, view.groups, view.origin))


def convert_matmul(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    """``x @ W`` with a constant W: ``linear`` over the last axis (a following Add of a bias
    vector fused); ``a @ b`` of two computed tensors: ``matmul`` over per-sample matrices."""
    rhs = ctx.lookup(node.input[1], laid=True)
    t = ctx.laid(node)
    if isinstance(rhs, (Value, Laid)):
        return _matmul(ctx, node, t, rhs)
    view = layout.of(t)
    w = ctx.const(node, 1, "weight matrix (second operand)")
    last = view.dims()[-1]
    if w.ndim != 2 or view.rank < 2 or last != w.shape[0] or view.holds_batch(view.axes()[-1]):
        shown = view.describe() if isinstance(t, Laid) else full(t.shape)
        raise reject(node, f"only x @ W with a constant 2-D W is supported (x {shown}, W {list(w.shape)})")
    weight = w.T.astype(np.float32)
    bias = np.zeros(weight.shape[0], np.float32)
    add = ctx.single_reader(node.output[0])
    if add is not None and add.op_type == "Add":
        other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        c = ctx.env.get(other)
        n = weight.shape[0]
        vector = isinstance(c, np.ndarray) and c.ndim <= view.rank and all(d == 1 for d in c.shape[:-1])
        if vector and (c.ndim == 0 or c.shape[-1] in (1, n)):
            # Add of a vector along the features only: it is this linear layer's bias.
            bias = np.broadcast_to(c.reshape(-1) if c.ndim else c, bias.shape).astype(np.float32).copy()
            ctx.absorbed.add(id(add))
            ctx.fused.append(f"{node_label(node)} + {node_label(add)}")
            value = _linear(ctx, node, t, weight, bias, name=ir_name(add))
            ctx.env[add.output[0]] = value
            return value
    return _linear(ctx, node, t, weight, bias)


def _matmul(ctx: Importer, node: onnx.NodeProto, lhs: Value | Laid, rhs: Value | Laid) -> Value | Laid:
    """The product of two computed tensors over their last two axes (attention's Q K^T and
    A V). Both are brought to the front form; they must hold the batch at the same axis, the
    matrix axes must not hold it, and the other axes broadcast per sample."""
    a, b = layout.of(lhs), layout.of(rhs)
    for v, which in ((a, "first"), (b, "second")):
        if v.rank < 3 or any(v.holds_batch(g) for g in v.axes()[-2:]):
            raise reject(
                node,
                f"MatMul of two computed tensors whose {which} operand has shape {v.describe()}: snnc multiplies per-sample "
                "matrices ([batch, ..., n, k] @ [batch, ..., k, m]); the batch axis must not be a matrix axis",
            )
    if a.rank != b.rank:
        raise reject(node, f"MatMul of two computed tensors of different ranks ({a.describe()} and {b.describe()}); unsqueeze one of them")
    fa, fb = layout.front_form(ctx, node, a), layout.front_form(ctx, node, b)
    if fa.order != fb.order or fa.groups != fb.groups:
        raise reject(node, f"MatMul of tensors of shapes {a.describe()} and {b.describe()} that hold the batch at different axes")
    y = ctx.emit("matmul", [fa.value, fb.value], node)
    return layout.finish(Laid(y, fa.order, fa.groups, fa.origin or fb.origin))


def convert_batch_norm(ctx: Importer, node: onnx.NodeProto) -> Value:
    a = node_attrs(node)
    if a.get("training_mode", 0):
        raise reject(node, "training_mode=1 normalises with batch statistics; export the model in eval mode")
    x = ctx.value(node)
    params = {
        "scale": ctx.const(node, 1, "scale"),
        "bias": ctx.const(node, 2, "bias"),
        "mean": ctx.const(node, 3, "running mean"),
        "var": ctx.const(node, 4, "running variance"),
    }
    for key, arr in params.items():
        if arr.size != x.shape[0]:
            raise reject(node, f"{key} has {arr.size} entries for {x.shape[0]} channels")
        params[key] = arr.reshape(-1)
    eps = float(a.get("epsilon", 1e-5))
    if not math.isfinite(eps) or eps < 0:
        raise DataError(f"BatchNormalization node {node_label(node)!r} has epsilon {eps}; it must be a finite number >= 0 (re-export the model)")
    var = params["var"].astype(np.float64)
    if np.all(np.isfinite(var)) and np.any(var + eps <= 0):
        bad = int(np.argmax(var + eps <= 0))
        raise DataError(
            f"BatchNormalization node {node_label(node)!r}: running variance {float(var[bad]):g} of channel {bad} plus epsilon "
            f"{eps:g} is not positive, so the layer divides by zero or the square root of a negative number; the model's "
            f"statistics ({node.input[4]!r}) are corrupt"
        )
    return ctx.emit("batch_norm", [x], node, attrs={"epsilon": eps}, params=params)
