"""Shape and view ops: view / reshape / flatten (per-sample ``reshape``), size queries
(answered from the propagated shapes, the batch size symbolic), indexing of shape tuples,
value-preserving methods, and concatenation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from snnc.frontends.common import resolve_sizes
from snnc.frontends.torch_fx.context import BATCH, BatchConstant, Context, Permuted, describe, full_rank, full_shape, norm_axis
import snnc.frontends.torch_fx.converters.layout as layout
from snnc.ir.graph import Value


def emit_reshape(cx: Context, x: Value, shape: Sequence[int]) -> Value:
    return cx.emit("reshape", [x], {"shape": [int(d) for d in shape]})


def _per_sample_shape(cx: Context, x: Value, spec: Sequence[Any]) -> list[int]:
    """Resolve a full-tensor view shape (batch dim first) to a per-sample shape.

    The leading entry must keep the batch: ``x.size(0)`` (the symbolic :data:`BATCH`), or
    ``-1`` when the other entries already account for every element of a sample.
    """
    numel = math.prod(x.shape)
    spec = list(spec)
    if not spec:
        cx.unsupported("reshaping to a scalar would merge the batch")
    head, rest = spec[0], spec[1:]
    if any(d is BATCH for d in rest):
        cx.unsupported("the batch size may only appear as the first dimension of a view/reshape")
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in rest):
        cx.unsupported(f"view/reshape sizes {spec!r} are not all known integers")
    if head is not BATCH and head != -1:
        cx.unsupported(
            f"view/reshape to {spec!r} fixes the batch size to {head!r}; keep the batch dimension "
            "with x.view(x.size(0), -1) or torch.flatten(x, 1)"
        )
    if rest.count(-1) > 1 or (head == -1 and -1 in rest):
        cx.unsupported(f"view/reshape sizes {spec!r} have more than one -1")
    sizes = resolve_sizes(rest, numel)
    if sizes is None:
        cx.unsupported(
            f"view/reshape {spec!r} of a sample of shape {list(x.shape)} would mix samples of the batch; "
            "keep the batch dimension with x.view(x.size(0), -1)"
        )
    return sizes


def view_method(cx: Context, input: Any, *shape: Any) -> Value:
    # x.view(a, b) and x.view((a, b)) are both legal.
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    x = cx.tensor(input)
    return emit_reshape(cx, x, _per_sample_shape(cx, x, shape))


def reshape(cx: Context, input: Any, shape: Any) -> Value:
    return view_method(cx, input, tuple(shape))


def flatten(cx: Context, input: Any, start_dim: Any = 0, end_dim: Any = -1) -> Value:
    x = cx.tensor(input)
    rank = full_rank(x)
    start, end = norm_axis(cx, start_dim, rank, "start_dim"), norm_axis(cx, end_dim, rank, "end_dim")
    if start == 0 and end > 0:
        cx.unsupported("flattening from dim 0 merges the batch; use torch.flatten(x, 1) or nn.Flatten()")
    if start > end:
        cx.unsupported(f"start_dim {start_dim} comes after end_dim {end_dim}")
    shape = list(x.shape)
    if start == 0:  # flatten(x, 0, 0) leaves the tensor as it is
        return emit_reshape(cx, x, shape)
    # Full-tensor dims start..end are per-sample dims start-1..end-1.
    return emit_reshape(cx, x, shape[: start - 1] + [math.prod(shape[start - 1 : end])] + shape[end:])


def _sized(cx: Context, x: Any) -> Value | Permuted:
    return x if isinstance(x, Permuted) else cx.tensor(x)


def tensor_size(cx: Context, input: Any, dim: Any = None) -> Any:
    full = full_shape(_sized(cx, input))
    return full if dim is None else full[norm_axis(cx, dim, len(full))]


def tensor_dim(cx: Context, input: Any) -> int:
    return full_rank(_sized(cx, input))


def tensor_attr(cx: Context, obj: Any, name: str) -> Any:
    if isinstance(obj, (Value, Permuted)):
        if name == "shape":
            return full_shape(obj)
        if name == "ndim":
            return full_rank(obj)
        if name == "mT":
            return layout.matrix_transpose(cx, obj)
    if isinstance(obj, BatchConstant):
        if name == "shape":
            return (BATCH, *obj.value.shape)
        if name == "ndim":
            return obj.value.dim() + 1
    cx.unsupported(f"attribute {name!r} of {describe(obj)} is not supported (only .shape, .ndim and .mT)")


def getitem(cx: Context, obj: Any, index: Any) -> Any:
    if isinstance(obj, (tuple, list)):
        return obj[index]
    if isinstance(obj, (Value, Permuted)):
        return layout.index(cx, obj, index)
    cx.unsupported(f"cannot index {describe(obj)} with {index!r}")


def passthrough(cx: Context, input: Any, *args: Any, **kwargs: Any) -> Value:
    """Ops that leave values untouched (clone, contiguous, float on float32 data)."""
    return cx.tensor(input)


def cat(cx: Context, tensors: Any, dim: Any = 0) -> Value:
    return layout.cat(cx, tensors, dim)


def zero_pad(cx: Context, input: Any, pad: Any, mode: Any = "constant", value: Any = None) -> Value:
    """``F.pad`` / ``aten.pad`` / ``aten.constant_pad_nd`` with zeros, on the spatial axes only:
    ``pad`` lists (begin, end) pairs from the last axis backwards."""
    x = cx.tensor(input)
    if mode != "constant":
        cx.unsupported(f"padding mode {mode!r} is not supported; snnc pads with zeros (mode 'constant', value 0)")
    if value not in (None, 0, 0.0):
        cx.unsupported(f"padding with the value {value!r}; snnc pads with zeros only")
    if not isinstance(pad, (tuple, list)) or len(pad) % 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pad):
        cx.unsupported(f"pad {pad!r} is not an even-length sequence of ints")
    nd = len(x.shape) - 1  # spatial axes
    pairs = [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(len(pad) // 2)]  # last axis first
    if any(b or e for b, e in pairs[nd:]):
        cx.unsupported("padding of the channel or batch axis is not supported (only the spatial axes)")
    pairs = (pairs + [(0, 0)] * nd)[:nd]
    if any(b < 0 or e < 0 for b, e in pairs):
        cx.unsupported("negative pads (cropping) are not supported")
    if not any(b or e for b, e in pairs):
        return x
    begin = [pairs[nd - 1 - i][0] for i in range(nd)]
    end = [pairs[nd - 1 - i][1] for i in range(nd)]
    return cx.emit("pad", [x], {"pads": begin + end})


def constant_pad_nd(cx: Context, input: Any, pad: Any, value: Any = 0) -> Value:
    return zero_pad(cx, input, pad, "constant", value)
