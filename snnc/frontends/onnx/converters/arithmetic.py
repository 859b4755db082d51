"""Add / Sub / Mul / Div: ``add`` for two tensors computed from the input, ``affine`` for a
tensor and a constant (see the package docstring for the algebra). Constants broadcast over
the per-sample shape: a ``[N, D]`` position embedding added to ``[batch, N, D]`` tokens is an
``affine`` shift; a constant repeated over the batch (Expand to the batch size) is one sample."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from snnc.frontends.common import per_sample_constant
import snnc.frontends.onnx.layout as layout
from snnc.frontends.onnx.helpers import BatchConstant, full, reject
from snnc.frontends.onnx.layout import Laid
from snnc.ir.graph import Shape, Value

if TYPE_CHECKING:
    from snnc.frontends.onnx.importer import Importer


def aligned_constant(c: np.ndarray, shape: Shape) -> np.ndarray | None:
    """Constant ``c`` (ONNX-broadcast against ``[batch, *shape]``) as a float32 array of the
    per-sample rank that broadcasts over ``shape`` without changing it; None if impossible.

    Leading axes of size 1 are added up to the per-sample rank, so an ``affine`` node's
    parameters have its input's rank whatever rank the exporter gave the constant.
    """
    c = per_sample_constant(c, shape)
    if c is None:
        return None
    return c.reshape((1,) * (len(shape) - c.ndim) + c.shape)


def convert_binary(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    """Add / Sub / Mul / Div with at least one operand computed from the input (a
    batch-first value or a layout view whose batch axis moved)."""
    lhs, rhs = ctx.lookup(node.input[0], laid=True), ctx.lookup(node.input[1], laid=True)
    op = node.op_type
    computed = (Value, Laid)
    if isinstance(lhs, computed) and isinstance(rhs, computed):
        if op not in ("Add", "Sub"):
            raise reject(node, f"{op} of two tensors computed from the input is not linear (gating, attention); snnc cannot convert it")
        attrs = {} if op == "Add" else {"coeffs": [1.0, -1.0]}
        if isinstance(lhs, Value) and isinstance(rhs, Value):
            if lhs.shape != rhs.shape:
                raise reject(node, f"{op} of tensors of different shapes {full(lhs.shape)} and {full(rhs.shape)} (broadcasting)")
            return ctx.emit("add", [lhs, rhs], node, attrs=attrs)
        a, b = layout.of(lhs), layout.of(rhs)
        if not a.same_layout(b):
            a, b = layout.front_form(ctx, node, a), layout.front_form(ctx, node, b)
        if not a.same_layout(b):
            raise reject(
                node, f"{op} of tensors of shapes {a.describe()} and {b.describe()} (broadcasting, or the batch at different axes)"
            )
        y = ctx.emit("add", [a.value, b.value], node, attrs=attrs)
        return layout.finish(Laid(y, a.order, a.groups, a.origin or b.origin))
    x, c, const_left = (lhs, rhs, False) if isinstance(lhs, computed) else (rhs, lhs, True)
    if isinstance(c, BatchConstant):
        c = c.full
    if isinstance(x, Laid):
        cc = layout.constant_for(x, c)
        where = x.describe()
    else:
        cc = aligned_constant(c, x.shape)
        where = full(x.shape)
    if cc is None:
        raise reject(node, f"constant of shape {list(np.shape(c))} does not broadcast over {where} without changing its shape")
    ones, zeros = np.ones_like(cc), np.zeros_like(cc)
    if op == "Add":
        scale, shift = ones, cc
    elif op == "Sub":
        scale, shift = (-ones, cc) if const_left else (ones, -cc)
    elif op == "Mul":
        scale, shift = cc, zeros
    else:  # Div
        if const_left:
            raise reject(node, "division by a tensor computed from the input is not linear")
        if np.any(cc == 0):
            raise reject(node, "division by a constant containing zeros")
        scale, shift = (1.0 / cc).astype(np.float32), zeros
    if isinstance(x, Laid):
        y = ctx.emit("affine", [x.value], node, params={"scale": scale, "shift": shift})
        return Laid(y, x.order, x.groups, x.origin)
    return ctx.emit("affine", [x], node, params={"scale": scale, "shift": shift})
