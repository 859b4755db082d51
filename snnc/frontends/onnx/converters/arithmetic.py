"""Add / Sub / Mul / Div: ``add`` for two tensors computed from the input, ``affine`` for a
tensor and a constant (see the package docstring for the algebra)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from snnc.frontends.common import per_sample_constant
from snnc.frontends.onnx.helpers import full, reject
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


def convert_binary(ctx: Importer, node: onnx.NodeProto) -> Value:
    """Add / Sub / Mul / Div with at least one operand computed from the input."""
    lhs, rhs = ctx.lookup(node.input[0]), ctx.lookup(node.input[1])
    op = node.op_type
    if isinstance(lhs, Value) and isinstance(rhs, Value):
        if op not in ("Add", "Sub"):
            raise reject(node, f"{op} of two tensors computed from the input is not linear (gating, attention); snnc cannot convert it")
        if lhs.shape != rhs.shape:
            raise reject(node, f"{op} of tensors of different shapes {full(lhs.shape)} and {full(rhs.shape)} (broadcasting)")
        attrs = {} if op == "Add" else {"coeffs": [1.0, -1.0]}
        return ctx.emit("add", [lhs, rhs], node, attrs=attrs)
    x, c, const_left = (lhs, rhs, False) if isinstance(lhs, Value) else (rhs, lhs, True)
    cc = aligned_constant(c, x.shape)
    if cc is None:
        raise reject(node, f"constant of shape {list(np.shape(c))} does not broadcast over {full(x.shape)} without changing its shape")
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
    return ctx.emit("affine", [x], node, params={"scale": scale, "shift": shift})
