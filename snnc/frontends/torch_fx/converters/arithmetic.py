"""Arithmetic: ``add`` (with coefficients) for two activations, ``affine`` for an activation
and a constant (add, sub, rsub, mul, div, neg)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from snnc.frontends.common import per_sample_constant
from snnc.frontends.torch_fx.context import Context, Permuted, describe, to_numpy
from snnc.ir.graph import Value


def emit_affine(cx: Context, x: Value, scale: torch.Tensor, shift: torch.Tensor) -> Value:
    params = {"scale": _align_constant(cx, x, scale), "shift": _align_constant(cx, x, shift)}
    for key, arr in params.items():
        if not np.all(np.isfinite(arr)):
            cx.unsupported(f"the constant {key} has non-finite values (division by zero?)")
    return cx.emit("affine", [x], None, params)


def _align_constant(cx: Context, x: Value, c: torch.Tensor) -> np.ndarray:
    """A constant operand as an array broadcasting over ``x``'s per-sample shape.

    Buffers such as a ``[1, C, 1, 1]`` normalisation mean carry a leading batch axis of 1,
    dropped here; a constant that differs across the batch, or would broadcast the
    activation to a bigger shape, is not element-wise and is rejected.
    """
    aligned = per_sample_constant(to_numpy(c), x.shape)
    if aligned is None:
        cx.unsupported(
            f"a constant of shape {list(c.shape)} differs across the batch or does not broadcast element-wise over "
            f"per-sample shape {list(x.shape)}"
        )
    return aligned


def _no_moved_batch(cx: Context, *operands: Any) -> None:
    """A tensor whose batch a permute moved is refused with the reason (Context.tensor)."""
    for x in operands:
        if isinstance(x, Permuted):
            cx.tensor(x, "operand")


def _combine(cx: Context, a: Any, b: Any, ca: float, cb: float) -> Value:
    """``ca * a + cb * b``: an add node for two activations, an affine node for an
    activation and a constant."""
    _no_moved_batch(cx, a, b)
    if isinstance(a, Value) and isinstance(b, Value):
        if a.shape != b.shape:
            cx.unsupported(f"adding activations of different shapes {list(a.shape)} and {list(b.shape)} (broadcasting) is not supported")
        coeffs = None if (ca, cb) == (1.0, 1.0) else [ca, cb]
        return cx.emit("add", [a, b], {} if coeffs is None else {"coeffs": coeffs})
    if isinstance(a, Value):
        return emit_affine(cx, a, torch.tensor(ca), cb * cx.constant(b, "operand"))
    if isinstance(b, Value):
        return emit_affine(cx, b, torch.tensor(cb), ca * cx.constant(a, "operand"))
    cx.unsupported(f"arithmetic on {describe(a)} and {describe(b)} is not supported")


def add(cx: Context, input: Any, other: Any, *, alpha: Any = 1) -> Value:
    return _combine(cx, input, other, 1.0, cx.number(alpha, "alpha"))


def sub(cx: Context, input: Any, other: Any, *, alpha: Any = 1) -> Value:
    return _combine(cx, input, other, 1.0, -cx.number(alpha, "alpha"))


def rsub(cx: Context, input: Any, other: Any, alpha: Any = 1) -> Value:
    # aten.rsub(x, c, alpha) = c - alpha * x
    return _combine(cx, other, input, 1.0, -cx.number(alpha, "alpha"))


def mul(cx: Context, input: Any, other: Any) -> Value:
    _no_moved_batch(cx, input, other)
    if isinstance(input, Value) and isinstance(other, Value):
        cx.unsupported("multiplying two activations has no spiking equivalent; only products with constants are supported")
    x, c = (input, other) if isinstance(input, Value) else (other, input)
    x = cx.tensor(x)
    return emit_affine(cx, x, cx.constant(c, "factor"), torch.tensor(0.0))


def div(cx: Context, input: Any, other: Any, *, rounding_mode: Any = None) -> Value:
    if rounding_mode is not None:
        cx.unsupported(f"division with rounding_mode={rounding_mode!r} is not linear")
    _no_moved_batch(cx, input, other)
    if isinstance(other, Value):
        cx.unsupported("dividing by an activation has no spiking equivalent; only division by constants is supported")
    x = cx.tensor(input)
    return emit_affine(cx, x, 1.0 / cx.constant(other, "divisor"), torch.tensor(0.0))


def neg(cx: Context, input: Any) -> Value:
    return emit_affine(cx, cx.tensor(input), torch.tensor(-1.0), torch.tensor(0.0))
