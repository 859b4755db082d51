"""Activations and output ops: ReLU in its spellings (ReLU6, hardtanh and clamp with min 0
are bounded ReLUs), dropout, and softmax (final output post-processing, which canonicalize
strips, or inside the network: attention weights, which insert-if makes temporal)."""

from __future__ import annotations

from typing import Any

from snnc.frontends.torch_fx.context import Context, full_rank, norm_axis
from snnc.ir.graph import Value


def emit_relu(cx: Context, x: Any, max_value: float | None = None) -> Value:
    attrs = {} if max_value is None else {"max": float(max_value)}
    return cx.emit("relu", [cx.tensor(x)], attrs)


def emit_clip(cx: Context, x: Any, low: Any, high: Any) -> Value:
    """``clamp(x, low, high)`` is a (bounded) ReLU only when ``low`` is exactly 0."""
    if low is None or cx.number(low, "min") != 0.0:
        cx.unsupported(f"clamping with min={low!r} is not a ReLU; only min=0 (optionally with a positive max) is supported")
    if high is None:
        return emit_relu(cx, x)
    hi = cx.number(high, "max")
    if not hi > 0:
        cx.unsupported(f"clamping with max={hi} <= min=0 is constant, not a ReLU")
    return emit_relu(cx, x, hi)


def relu(cx: Context, input: Any, inplace: bool = False) -> Value:
    return emit_relu(cx, input)


def relu6(cx: Context, input: Any, inplace: bool = False) -> Value:
    return emit_relu(cx, input, 6.0)


def hardtanh(cx: Context, input: Any, min_val: Any = -1.0, max_val: Any = 1.0, inplace: bool = False) -> Value:
    return emit_clip(cx, input, min_val, max_val)


def clamp(cx: Context, input: Any, min: Any = None, max: Any = None) -> Value:
    return emit_clip(cx, input, min, max)


def clamp_min(cx: Context, input: Any, min: Any) -> Value:
    return emit_clip(cx, input, min, None)


def dropout(cx: Context, input: Any, p: Any = 0.5, training: Any = True, inplace: bool = False) -> Value:
    # F.dropout defaults to training=True: called without training=self.training it keeps
    # dropping units in eval mode, so the model is stochastic and cannot be imported.
    if training:
        cx.unsupported("dropout is active at inference (training=True); pass training=self.training or use nn.Dropout")
    return cx.emit("dropout", [cx.tensor(input)])


def softmax(cx: Context, input: Any, dim: Any = None, _stacklevel: Any = 3, dtype: Any = None) -> Value:
    x = cx.tensor(input)
    rank = full_rank(x)
    if dim is None:
        dim = 0 if rank in (0, 1, 3) else 1  # torch's legacy implicit-dim rule
    axis = norm_axis(cx, dim, rank)
    if axis == 0:
        cx.unsupported("softmax over the batch axis is not supported")
    return cx.emit("softmax", [x], {"axis": axis})


def aten_softmax(cx: Context, input: Any, dim: Any, half_to_float: Any = False) -> Value:
    return softmax(cx, input, dim)
