"""Import torch models into the snnc IR.

``import_torch(model, input_shape)`` deep-copies the model (the caller's module, its
``training`` flags, parameters and buffers are never touched), switches the copy to eval
mode, traces it and translates the traced graph node by node into an ANN-stage
:class:`~snnc.ir.Graph` through per-target converter tables:

* ``torch.fx.symbolic_trace`` is tried first; its ``call_module`` nodes go through
  ``_MODULE_CONVERTERS`` (keyed by the exact module class, because a subclass may
  override ``forward``), ``call_function`` nodes through ``_FUNCTION_CONVERTERS`` and
  ``call_method`` nodes through ``_METHOD_CONVERTERS``. A ``GraphModule`` given by the
  user is translated as is.
* When symbolic tracing fails (Python control flow on traced values), the model is
  exported with ``torch.export.export`` (dynamic batch dimension) and functionalised with
  ``run_decompositions({})``, which turns in-place ops into pure ones without decomposing
  anything else; its ATen ops go through ``_ATEN_CONVERTERS``.

Every converter's signature mirrors the torch signature it translates (``F.max_pool2d``
and ``aten.max_pool2d`` share one), so Python itself binds positional and keyword
arguments; arguments a converter does not know make the op unsupported.

While translating, each traced node stands for one of: an IR :class:`Value` (a tensor
computed from the input; its per-sample shape is known as soon as it is emitted), a
constant ``torch.Tensor`` (parameter, buffer or folded expression), :data:`BATCH` (the
symbolic batch size that ``x.size(0)`` / ``x.shape[0]`` evaluate to) or plain Python
data. Size queries are answered from the propagated shapes, so
``x.view(x.size(0), -1)`` becomes a per-sample reshape. Expressions over constants only
(``self.mean.view(1, -1, 1, 1)``, ``x.size(1) * x.size(2)``) are evaluated on the spot.

In-place ops (``torch.relu_``, ``F.relu(x, inplace=True)``, ``nn.ReLU(inplace=True)``,
``x.add_(y)``, ``operator.iadd``) are recorded by fx as ordinary calls, yet at run time
every later reader of the mutated tensor sees the mutated value. The translator therefore
rebinds the mutated node to the op's result. Mutation through views (writing into
``x.view(...)`` changes ``x``) is not tracked; the import check
(:func:`snnc.frontends.check.check_import` with :func:`torch_reference`) catches it.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import operator
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from snnc.errors import DataError, UnsupportedOpError
from snnc.ir.graph import Graph, Shape, Value
from snnc.ir.shapes import ShapeMismatch, infer_node_shape, infer_shapes
from snnc.ir.verify import verify

__all__ = ["import_torch", "torch_reference"]

log = logging.getLogger(__name__)

Reference = Callable[[np.ndarray], list[np.ndarray]]


class _BatchSize:
    """The symbolic batch size: what ``x.size(0)`` and ``x.shape[0]`` evaluate to."""

    def __repr__(self) -> str:
        return "<batch size>"


BATCH = _BatchSize()


# =========================================================================== context
class _Context:
    """What converters see: the IR graph under construction and the traced node being
    translated (its op type, IR name and whether it feeds only graph outputs)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.op_type = ""
        self.name = ""
        self.feeds_output_only = False

    def at(self, op_type: str, name: str, feeds_output_only: bool) -> None:
        self.op_type, self.name, self.feeds_output_only = op_type, name, feeds_output_only

    def unsupported(self, hint: str) -> NoReturn:
        raise UnsupportedOpError(self.op_type, self.name, hint)

    def emit(self, op: str, inputs: Sequence[Value], attrs: dict[str, Any] | None = None, params: dict[str, np.ndarray] | None = None) -> Value:
        """Append an IR node named after the traced node and compute its per-sample shape."""
        node = self.graph.add_node(op, list(inputs), attrs, params, self.name)
        try:
            node.output.shape = infer_node_shape(node)
        except ShapeMismatch as e:
            shapes = ", ".join(str(list(v.shape)) for v in inputs)
            raise DataError(
                f"{self.op_type} at node {self.name!r} cannot take input(s) of per-sample shape {shapes}: "
                f"{e.detail}. Check that input_shape is the per-sample shape the model expects "
                "(without the batch dimension)."
            ) from None
        return node.output

    def tensor(self, x: Any, what: str = "input") -> Value:
        """``x`` as an IR value, or an error when it is not computed from the model input."""
        if isinstance(x, Value):
            return x
        self.unsupported(f"its {what} must be a tensor computed from the model input, got {_describe(x)}")

    def constant(self, x: Any, what: str) -> torch.Tensor:
        """``x`` as a float32 CPU tensor, or an error when it depends on the model input."""
        if isinstance(x, torch.Tensor):
            return x.detach().to("cpu", torch.float32)
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            return torch.tensor(float(x))
        self.unsupported(f"its {what} must be a constant (a parameter, buffer or number), got {_describe(x)}")

    def number(self, x: Any, what: str) -> float:
        """``x`` as a Python float (a number or a one-element constant tensor)."""
        if isinstance(x, torch.Tensor) and x.numel() == 1:
            return float(x.item())
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            return float(x)
        self.unsupported(f"its {what} must be a number, got {_describe(x)}")


def _describe(x: Any) -> str:
    if isinstance(x, Value):
        return f"a tensor computed from the input (per-sample shape {list(x.shape)})"
    if isinstance(x, torch.Tensor):
        return f"a constant tensor of shape {list(x.shape)}"
    if x is BATCH:
        return "the batch size"
    return repr(x)


# =========================================================================== helpers
def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy().copy()


def _rank(v: Value) -> int:
    """Rank of the full tensor, batch dimension included (what torch dims count)."""
    return len(v.shape) + 1


def _full_shape(v: Value) -> tuple[Any, ...]:
    return (BATCH, *v.shape)


def _axis(cx: _Context, dim: Any, rank: int, what: str = "dim") -> int:
    """Normalise a (possibly negative) torch dim against a full-tensor ``rank``."""
    if isinstance(dim, bool) or not isinstance(dim, int) or not -rank <= dim < rank:
        cx.unsupported(f"{what} {dim!r} is not a valid axis of a rank-{rank} tensor")
    return dim % rank


def _ints(cx: _Context, v: Any, n: int, what: str) -> list[int]:
    """A torch int-or-tuple argument (``kernel_size=3``, ``stride=(2, 1)``) as ``n`` ints."""
    if isinstance(v, int) and not isinstance(v, bool):
        return [v] * n
    if isinstance(v, (tuple, list)) and all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        if len(v) == n:
            return [int(i) for i in v]
        if len(v) == 1:
            return [int(v[0])] * n
    cx.unsupported(f"{what} {v!r} is not an int or a sequence of {n} ints")


def _spatial_rank(cx: _Context, x: Value, what: str) -> int:
    """Number of spatial axes of a channel-first activation; the IR handles 1 and 2."""
    nd = len(x.shape) - 1
    if nd not in (1, 2):
        cx.unsupported(f"{what} needs an input of shape [N, C, L] or [N, C, H, W]; got per-sample shape {list(x.shape)}")
    return nd


def _same_pads(kernel: Sequence[int], dilation: Sequence[int]) -> list[int]:
    """ONNX pads for ``padding='same'`` (stride 1): like torch, the odd pixel goes at the end."""
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    begin = [t // 2 for t in total]
    return begin + [t - b for t, b in zip(total, begin)]


# ====================================================================== linear layers
def _emit_conv(cx: _Context, x: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any, groups: Any) -> Value:
    x = cx.tensor(x)
    w = cx.constant(weight, "weight")
    nd = w.dim() - 2
    if nd not in (1, 2):
        cx.unsupported("only 1-D and 2-D convolutions are supported")
    dil = _ints(cx, dilation, nd, "dilation")
    if isinstance(padding, str):
        if padding == "same":
            pads = _same_pads(list(w.shape[2:]), dil)
        elif padding == "valid":
            pads = [0] * (2 * nd)
        else:
            cx.unsupported(f"padding {padding!r} is not 'same', 'valid' or a number")
    else:
        pads = _ints(cx, padding, nd, "padding") * 2
    b = torch.zeros(w.shape[0]) if bias is None else cx.constant(bias, "bias")
    attrs = {"strides": _ints(cx, stride, nd, "stride"), "pads": pads, "dilations": dil, "groups": int(groups)}
    return cx.emit("conv", [x], attrs, {"weight": _np(w), "bias": _np(b)})


def _emit_conv_transpose(
    cx: _Context, x: Any, weight: Any, bias: Any, stride: Any, padding: Any, output_padding: Any, groups: Any, dilation: Any
) -> Value:
    x = cx.tensor(x)
    w = cx.constant(weight, "weight")
    nd = w.dim() - 2
    if nd not in (1, 2):
        cx.unsupported("only 1-D and 2-D transposed convolutions are supported")
    groups = int(groups)
    # weight is [C_in, C_out / groups, *kernel]; torch's padding crops both ends of the
    # full output, which is exactly what the IR's ONNX-style pads mean.
    b = torch.zeros(w.shape[1] * groups) if bias is None else cx.constant(bias, "bias")
    attrs = {
        "strides": _ints(cx, stride, nd, "stride"),
        "pads": _ints(cx, padding, nd, "padding") * 2,
        "dilations": _ints(cx, dilation, nd, "dilation"),
        "output_padding": _ints(cx, output_padding, nd, "output_padding"),
        "groups": groups,
    }
    return cx.emit("conv_transpose", [x], attrs, {"weight": _np(w), "bias": _np(b)})


def _emit_linear(cx: _Context, x: Any, weight: Any, bias: Any) -> Value:
    x = cx.tensor(x)
    w = cx.constant(weight, "weight")
    if w.dim() != 2:
        cx.unsupported(f"linear weight must be 2-D, got shape {list(w.shape)}")
    b = torch.zeros(w.shape[0]) if bias is None else cx.constant(bias, "bias")
    return cx.emit("linear", [x], None, {"weight": _np(w), "bias": _np(b)})


def _emit_batch_norm(cx: _Context, x: Any, mean: Any, var: Any, weight: Any, bias: Any, eps: Any) -> Value:
    x = cx.tensor(x)
    if mean is None or var is None:
        cx.unsupported(
            "BatchNorm without running statistics (track_running_stats=False) normalises with the "
            "statistics of each batch even in eval mode, which has no fixed inference form; retrain "
            "with track_running_stats=True"
        )
    m, v = cx.constant(mean, "running_mean"), cx.constant(var, "running_var")
    scale = torch.ones_like(m) if weight is None else cx.constant(weight, "weight")
    shift = torch.zeros_like(m) if bias is None else cx.constant(bias, "bias")
    params = {"scale": _np(scale), "bias": _np(shift), "mean": _np(m), "var": _np(v)}
    return cx.emit("batch_norm", [x], {"epsilon": cx.number(eps, "eps")}, params)


def _conv(cx: _Context, input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: Any = 1) -> Value:
    return _emit_conv(cx, input, weight, bias, stride, padding, dilation, groups)


def _conv_transpose(
    cx: _Context, input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, output_padding: Any = 0, groups: Any = 1, dilation: Any = 1
) -> Value:
    return _emit_conv_transpose(cx, input, weight, bias, stride, padding, output_padding, groups, dilation)


def _aten_convolution(
    cx: _Context, input: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any, transposed: bool, output_padding: Any, groups: Any
) -> Value:
    if transposed:
        return _emit_conv_transpose(cx, input, weight, bias, stride, padding, output_padding, groups, dilation)
    return _emit_conv(cx, input, weight, bias, stride, padding, dilation, groups)


def _linear(cx: _Context, input: Any, weight: Any, bias: Any = None) -> Value:
    return _emit_linear(cx, input, weight, bias)


def _batch_norm(
    cx: _Context, input: Any, running_mean: Any, running_var: Any, weight: Any = None, bias: Any = None, training: bool = False, momentum: Any = 0.1, eps: Any = 1e-5
) -> Value:
    if training:
        cx.unsupported("batch_norm with training=True normalises with batch statistics; call it with training=False")
    return _emit_batch_norm(cx, input, running_mean, running_var, weight, bias, eps)


def _aten_batch_norm(
    cx: _Context, input: Any, weight: Any, bias: Any, running_mean: Any, running_var: Any, training: bool, momentum: Any, eps: Any, cudnn_enabled: bool = True
) -> Value:
    return _batch_norm(cx, input, running_mean, running_var, weight, bias, training, momentum, eps)


def _aten_batch_norm_no_training(cx: _Context, input: Any, weight: Any, bias: Any, running_mean: Any, running_var: Any, momentum: Any, eps: Any) -> tuple:
    # The ATen op returns (output, save_mean, save_invstd); only element 0 is ever read.
    return (_emit_batch_norm(cx, input, running_mean, running_var, weight, bias, eps), None, None)


# ========================================================================= activations
def _emit_relu(cx: _Context, x: Any, max_value: float | None = None) -> Value:
    attrs = {} if max_value is None else {"max": float(max_value)}
    return cx.emit("relu", [cx.tensor(x)], attrs)


def _emit_clip(cx: _Context, x: Any, low: Any, high: Any) -> Value:
    """``clamp(x, low, high)`` is a (bounded) ReLU only when ``low`` is exactly 0."""
    if low is None or cx.number(low, "min") != 0.0:
        cx.unsupported(f"clamping with min={low!r} is not a ReLU; only min=0 (optionally with a positive max) is supported")
    if high is None:
        return _emit_relu(cx, x)
    hi = cx.number(high, "max")
    if not hi > 0:
        cx.unsupported(f"clamping with max={hi} <= min=0 is constant, not a ReLU")
    return _emit_relu(cx, x, hi)


def _relu(cx: _Context, input: Any, inplace: bool = False) -> Value:
    return _emit_relu(cx, input)


def _relu6(cx: _Context, input: Any, inplace: bool = False) -> Value:
    return _emit_relu(cx, input, 6.0)


def _hardtanh(cx: _Context, input: Any, min_val: Any = -1.0, max_val: Any = 1.0, inplace: bool = False) -> Value:
    return _emit_clip(cx, input, min_val, max_val)


def _clamp(cx: _Context, input: Any, min: Any = None, max: Any = None) -> Value:
    return _emit_clip(cx, input, min, max)


def _clamp_min(cx: _Context, input: Any, min: Any) -> Value:
    return _emit_clip(cx, input, min, None)


# ============================================================================ pooling
def _pool_window(cx: _Context, nd: int, kernel_size: Any, stride: Any, padding: Any) -> dict[str, list[int]]:
    """Kernel, strides and (symmetric, ONNX-ordered) pads of a pooling call."""
    kernel = _ints(cx, kernel_size, nd, "kernel_size")
    # ATen spells "stride defaults to the kernel" as an empty list.
    strides = _ints(cx, stride, nd, "stride") if stride not in (None, [], ()) else list(kernel)
    return {"kernel": kernel, "strides": strides, "pads": _ints(cx, padding, nd, "padding") * 2}


def _emit_avg_pool(cx: _Context, x: Any, kernel_size: Any, stride: Any, padding: Any, ceil_mode: Any, count_include_pad: Any, divisor_override: Any) -> Value:
    x = cx.tensor(x)
    nd = _spatial_rank(cx, x, "average pooling")
    if divisor_override is not None:
        cx.unsupported("divisor_override is not supported; scale the result with a multiplication instead")
    attrs = {
        **_pool_window(cx, nd, kernel_size, stride, padding),
        "count_include_pad": bool(count_include_pad),
        "ceil_mode": bool(ceil_mode),
    }
    return cx.emit("avg_pool", [x], attrs)


def _emit_max_pool(cx: _Context, x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any, return_indices: Any) -> Value:
    x = cx.tensor(x)
    nd = _spatial_rank(cx, x, "max pooling")
    if return_indices:
        cx.unsupported("max pooling with return_indices=True is not supported (indices have no spiking form)")
    attrs = {
        **_pool_window(cx, nd, kernel_size, stride, padding),
        "dilations": _ints(cx, dilation, nd, "dilation"),
        "ceil_mode": bool(ceil_mode),
    }
    return cx.emit("max_pool", [x], attrs)


def _emit_adaptive_avg_pool(cx: _Context, x: Any, output_size: Any) -> Value:
    """Adaptive average pooling to size 1 is a global average; when every input size is a
    multiple of its output size the windows are regular and it is a plain average pool."""
    x = cx.tensor(x)
    nd = _spatial_rank(cx, x, "adaptive average pooling")
    in_sizes = list(x.shape[1:])
    sizes = [output_size] * nd if not isinstance(output_size, (tuple, list)) else list(output_size)
    if len(sizes) == 1 and nd > 1:
        sizes = sizes * nd
    if len(sizes) != nd:
        cx.unsupported(f"output_size {output_size!r} does not match the {nd} spatial axes")
    sizes = [i if o is None else o for i, o in zip(in_sizes, sizes)]  # None keeps the input size
    if all(o == 1 for o in sizes):
        return cx.emit("global_avg_pool", [x], {"keepdims": True})
    if all(isinstance(o, int) and o > 0 and i % o == 0 for i, o in zip(in_sizes, sizes)):
        kernel = [i // o for i, o in zip(in_sizes, sizes)]
        return cx.emit("avg_pool", [x], {"kernel": kernel, "strides": kernel, "pads": [0] * (2 * nd)})
    cx.unsupported(
        f"adaptive pooling from {in_sizes} to {sizes} has irregular windows; only output sizes that divide "
        "the input size (e.g. 1) are supported"
    )


def _avg_pool(
    cx: _Context, input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: Any = False, count_include_pad: Any = True, divisor_override: Any = None
) -> Value:
    return _emit_avg_pool(cx, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def _max_pool(
    cx: _Context, input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, ceil_mode: Any = False, return_indices: Any = False
) -> Value:
    return _emit_max_pool(cx, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def _adaptive_avg_pool(cx: _Context, input: Any, output_size: Any) -> Value:
    return _emit_adaptive_avg_pool(cx, input, output_size)


def _mean(cx: _Context, input: Any, dim: Any = None, keepdim: Any = False, *, dtype: Any = None) -> Value:
    """A mean over exactly the spatial axes is a global average pool."""
    x = cx.tensor(input)
    rank = _rank(x)
    if dim is None or (isinstance(dim, (tuple, list)) and not dim):
        cx.unsupported("a mean over every axis includes the batch axis; use x.mean((2, 3)) for a global average")
    dims = {_axis(cx, d, rank) for d in (dim if isinstance(dim, (tuple, list)) else [dim])}
    if rank < 3 or dims != set(range(2, rank)):
        cx.unsupported(f"only the mean over all spatial axes (x.mean({tuple(range(2, max(rank, 3)))})) is supported; got dims {dim!r}")
    return cx.emit("global_avg_pool", [x], {"keepdims": bool(keepdim)})


# ====================================================================== shape handling
def _emit_reshape(cx: _Context, x: Value, shape: Sequence[int]) -> Value:
    return cx.emit("reshape", [x], {"shape": [int(d) for d in shape]})


def _per_sample_shape(cx: _Context, x: Value, spec: Sequence[Any]) -> list[int]:
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
    if -1 in rest:
        known = math.prod(d for d in rest if d != -1)
        if known <= 0 or numel % known:
            cx.unsupported(f"cannot view a sample of shape {list(x.shape)} as {spec!r}")
        rest = [numel // known if d == -1 else d for d in rest]
    if math.prod(rest) != numel:
        cx.unsupported(
            f"view/reshape {spec!r} of a sample of shape {list(x.shape)} would mix samples of the batch; "
            "keep the batch dimension with x.view(x.size(0), -1)"
        )
    return rest


def _view_method(cx: _Context, input: Any, *shape: Any) -> Value:
    # x.view(a, b) and x.view((a, b)) are both legal.
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    x = cx.tensor(input)
    return _emit_reshape(cx, x, _per_sample_shape(cx, x, shape))


def _reshape(cx: _Context, input: Any, shape: Any) -> Value:
    return _view_method(cx, input, tuple(shape))


def _flatten(cx: _Context, input: Any, start_dim: Any = 0, end_dim: Any = -1) -> Value:
    x = cx.tensor(input)
    rank = _rank(x)
    start, end = _axis(cx, start_dim, rank, "start_dim"), _axis(cx, end_dim, rank, "end_dim")
    if start == 0 and end > 0:
        cx.unsupported("flattening from dim 0 merges the batch; use torch.flatten(x, 1) or nn.Flatten()")
    if start > end:
        cx.unsupported(f"start_dim {start_dim} comes after end_dim {end_dim}")
    shape = list(x.shape)
    if start == 0:  # flatten(x, 0, 0) leaves the tensor as it is
        return _emit_reshape(cx, x, shape)
    # Full-tensor dims start..end are per-sample dims start-1..end-1.
    return _emit_reshape(cx, x, shape[: start - 1] + [math.prod(shape[start - 1 : end])] + shape[end:])


def _size(cx: _Context, input: Any, dim: Any = None) -> Any:
    full = _full_shape(cx.tensor(input))
    return full if dim is None else full[_axis(cx, dim, len(full))]


def _dim(cx: _Context, input: Any) -> int:
    return _rank(cx.tensor(input))


def _getattr(cx: _Context, obj: Any, name: str) -> Any:
    if isinstance(obj, Value):
        if name == "shape":
            return _full_shape(obj)
        if name == "ndim":
            return _rank(obj)
    cx.unsupported(f"attribute {name!r} of {_describe(obj)} is not supported (only .shape and .ndim)")


def _getitem(cx: _Context, obj: Any, index: Any) -> Any:
    if isinstance(obj, (tuple, list)):
        return obj[index]
    if isinstance(obj, Value):
        cx.unsupported("indexing or slicing an activation is not supported; use pooling, a convolution or torch.flatten")
    cx.unsupported(f"cannot index {_describe(obj)} with {index!r}")


def _passthrough(cx: _Context, input: Any, *args: Any, **kwargs: Any) -> Value:
    """Ops that leave values untouched (clone, contiguous, float on float32 data)."""
    return cx.tensor(input)


def _cat(cx: _Context, tensors: Any, dim: Any = 0) -> Value:
    if not isinstance(tensors, (tuple, list)) or not tensors:
        cx.unsupported(f"expected a list of tensors, got {_describe(tensors)}")
    values = [cx.tensor(t, "inputs") for t in tensors]
    axis = _axis(cx, dim, _rank(values[0]))
    if axis == 0:
        cx.unsupported("concatenation along the batch axis (dim 0) is not supported")
    return cx.emit("concat", values, {"axis": axis})


def _interpolate(
    cx: _Context, input: Any, size: Any = None, scale_factor: Any = None, mode: Any = "nearest", align_corners: Any = None, recompute_scale_factor: Any = None, antialias: Any = False
) -> Value:
    x = cx.tensor(input)
    nd = _spatial_rank(cx, x, "upsampling")
    if mode != "nearest":
        cx.unsupported(f"upsampling mode {mode!r} is not supported; only mode='nearest' with an integer scale_factor")
    in_sizes = list(x.shape[1:])
    if scale_factor is not None:
        factors = list(scale_factor) if isinstance(scale_factor, (tuple, list)) else [scale_factor] * nd
        if len(factors) != nd or not all(isinstance(f, (int, float)) and f >= 1 and float(f).is_integer() for f in factors):
            cx.unsupported(f"scale_factor {scale_factor!r} is not a positive integer per spatial axis")
        scales = [int(f) for f in factors]
    elif size is not None:
        out = _ints(cx, size, nd, "size")
        if any(o % i for o, i in zip(out, in_sizes)):
            cx.unsupported(f"upsampling {in_sizes} to {out} is not by an integer factor")
        scales = [o // i for o, i in zip(out, in_sizes)]
    else:
        cx.unsupported("upsampling needs a size or a scale_factor")
    return cx.emit("upsample", [x], {"scales": scales, "mode": "nearest"})


def _aten_upsample_vec(cx: _Context, input: Any, output_size: Any, scale_factors: Any) -> Value:
    return _interpolate(cx, input, size=output_size, scale_factor=scale_factors)


def _aten_upsample(cx: _Context, input: Any, output_size: Any, *scales: Any) -> Value:
    return _interpolate(cx, input, size=output_size)


# ======================================================================== arithmetic
def _emit_affine(cx: _Context, x: Value, scale: torch.Tensor, shift: torch.Tensor) -> Value:
    params = {"scale": _align_constant(cx, x, scale), "shift": _align_constant(cx, x, shift)}
    for key, arr in params.items():
        if not np.all(np.isfinite(arr)):
            cx.unsupported(f"the constant {key} has non-finite values (division by zero?)")
    return cx.emit("affine", [x], None, params)


def _align_constant(cx: _Context, x: Value, c: torch.Tensor) -> np.ndarray:
    """A constant operand as an array broadcasting over ``x``'s per-sample shape.

    Buffers such as a ``[1, C, 1, 1]`` normalisation mean carry a leading batch axis of 1,
    dropped here; a constant that would broadcast the activation to a bigger shape is not
    element-wise and is rejected.
    """
    shape = tuple(x.shape)
    if c.dim() == len(shape) + 1:
        if c.shape[0] != 1:
            cx.unsupported(f"a constant of shape {list(c.shape)} differs across the batch")
        c = c[0]
    try:
        if c.dim() > len(shape) or tuple(torch.broadcast_shapes(c.shape, shape)) != shape:
            raise ValueError
    except (RuntimeError, ValueError):
        cx.unsupported(f"a constant of shape {list(c.shape)} does not broadcast element-wise over per-sample shape {list(shape)}")
    return _np(c)


def _combine(cx: _Context, a: Any, b: Any, ca: float, cb: float) -> Value:
    """``ca * a + cb * b``: an add node for two activations, an affine node for an
    activation and a constant."""
    if isinstance(a, Value) and isinstance(b, Value):
        if a.shape != b.shape:
            cx.unsupported(f"adding activations of different shapes {list(a.shape)} and {list(b.shape)} (broadcasting) is not supported")
        coeffs = None if (ca, cb) == (1.0, 1.0) else [ca, cb]
        return cx.emit("add", [a, b], {} if coeffs is None else {"coeffs": coeffs})
    if isinstance(a, Value):
        return _emit_affine(cx, a, torch.tensor(ca), cb * cx.constant(b, "operand"))
    if isinstance(b, Value):
        return _emit_affine(cx, b, torch.tensor(cb), ca * cx.constant(a, "operand"))
    cx.unsupported(f"arithmetic on {_describe(a)} and {_describe(b)} is not supported")


def _add(cx: _Context, input: Any, other: Any, *, alpha: Any = 1) -> Value:
    return _combine(cx, input, other, 1.0, cx.number(alpha, "alpha"))


def _sub(cx: _Context, input: Any, other: Any, *, alpha: Any = 1) -> Value:
    return _combine(cx, input, other, 1.0, -cx.number(alpha, "alpha"))


def _rsub(cx: _Context, input: Any, other: Any, alpha: Any = 1) -> Value:
    # aten.rsub(x, c, alpha) = c - alpha * x
    return _combine(cx, other, input, 1.0, -cx.number(alpha, "alpha"))


def _mul(cx: _Context, input: Any, other: Any) -> Value:
    if isinstance(input, Value) and isinstance(other, Value):
        cx.unsupported("multiplying two activations has no spiking equivalent; only products with constants are supported")
    x, c = (input, other) if isinstance(input, Value) else (other, input)
    x = cx.tensor(x)
    return _emit_affine(cx, x, cx.constant(c, "factor"), torch.tensor(0.0))


def _div(cx: _Context, input: Any, other: Any, *, rounding_mode: Any = None) -> Value:
    if rounding_mode is not None:
        cx.unsupported(f"division with rounding_mode={rounding_mode!r} is not linear")
    if isinstance(other, Value):
        cx.unsupported("dividing by an activation has no spiking equivalent; only division by constants is supported")
    x = cx.tensor(input)
    return _emit_affine(cx, x, 1.0 / cx.constant(other, "divisor"), torch.tensor(0.0))


def _neg(cx: _Context, input: Any) -> Value:
    return _emit_affine(cx, cx.tensor(input), torch.tensor(-1.0), torch.tensor(0.0))


# ============================================================= structural and output ops
def _dropout(cx: _Context, input: Any, p: Any = 0.5, training: Any = True, inplace: bool = False) -> Value:
    # F.dropout defaults to training=True: called without training=self.training it keeps
    # dropping units in eval mode, so the model is stochastic and cannot be imported.
    if training:
        cx.unsupported("dropout is active at inference (training=True); pass training=self.training or use nn.Dropout")
    return cx.emit("dropout", [cx.tensor(input)])


def _softmax(cx: _Context, input: Any, dim: Any = None, _stacklevel: Any = 3, dtype: Any = None) -> Value:
    x = cx.tensor(input)
    rank = _rank(x)
    if dim is None:
        dim = 0 if rank in (0, 1, 3) else 1  # torch's legacy implicit-dim rule
    axis = _axis(cx, dim, rank)
    if axis == 0:
        cx.unsupported("softmax over the batch axis is not supported")
    if not cx.feeds_output_only:
        # Softmax is output post-processing that canonicalize strips; inside the network
        # stripping it would change the result.
        cx.unsupported("softmax is only supported as the final output post-processing; it feeds other ops here")
    return cx.emit("softmax", [x], {"axis": axis})


def _aten_softmax(cx: _Context, input: Any, dim: Any, half_to_float: Any = False) -> Value:
    return _softmax(cx, input, dim)


# ================================================================== module converters
def _m_conv(cx: _Context, m: nn.Conv1d | nn.Conv2d, input: Any) -> Value:
    if m.padding_mode != "zeros":
        cx.unsupported(f"padding_mode={m.padding_mode!r} is not supported; use padding_mode='zeros'")
    return _emit_conv(cx, input, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)


def _m_conv_transpose(cx: _Context, m: nn.ConvTranspose1d | nn.ConvTranspose2d, input: Any, output_size: Any = None) -> Value:
    if output_size is not None:
        cx.unsupported("calling a transposed convolution with output_size is not supported; set output_padding on the layer")
    if m.padding_mode != "zeros":
        cx.unsupported(f"padding_mode={m.padding_mode!r} is not supported; use padding_mode='zeros'")
    return _emit_conv_transpose(cx, input, m.weight, m.bias, m.stride, m.padding, m.output_padding, m.groups, m.dilation)


def _m_linear(cx: _Context, m: nn.Linear, input: Any) -> Value:
    return _emit_linear(cx, input, m.weight, m.bias)


def _m_batch_norm(cx: _Context, m: nn.BatchNorm1d | nn.BatchNorm2d, input: Any) -> Value:
    # With track_running_stats=False torch uses batch statistics even in eval mode.
    stats = (m.running_mean, m.running_var) if m.track_running_stats else (None, None)
    return _emit_batch_norm(cx, input, stats[0], stats[1], m.weight, m.bias, m.eps)


def _m_relu(cx: _Context, m: nn.ReLU, input: Any) -> Value:
    return _emit_relu(cx, input)


def _m_hardtanh(cx: _Context, m: nn.Hardtanh, input: Any) -> Value:
    # nn.ReLU6 is a Hardtanh(0, 6).
    return _emit_clip(cx, input, m.min_val, m.max_val)


def _m_avg_pool(cx: _Context, m: nn.AvgPool1d | nn.AvgPool2d, input: Any) -> Value:
    return _emit_avg_pool(cx, input, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, getattr(m, "divisor_override", None))


def _m_max_pool(cx: _Context, m: nn.MaxPool1d | nn.MaxPool2d, input: Any) -> Value:
    return _emit_max_pool(cx, input, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)


def _m_adaptive_avg_pool(cx: _Context, m: nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d, input: Any) -> Value:
    return _emit_adaptive_avg_pool(cx, input, m.output_size)


def _m_flatten(cx: _Context, m: nn.Flatten, input: Any) -> Value:
    return _flatten(cx, input, m.start_dim, m.end_dim)


def _m_upsample(cx: _Context, m: nn.Upsample, input: Any) -> Value:
    return _interpolate(cx, input, m.size, m.scale_factor, m.mode, m.align_corners)


def _m_identity(cx: _Context, m: nn.Identity, input: Any, *args: Any, **kwargs: Any) -> Value:
    return cx.emit("identity", [cx.tensor(input)])


def _m_dropout(cx: _Context, m: nn.Module, input: Any) -> Value:
    # The module is in eval mode here, where every dropout flavour is the identity.
    return cx.emit("dropout", [cx.tensor(input)])


def _m_softmax(cx: _Context, m: nn.Softmax, input: Any) -> Value:
    return _softmax(cx, input, m.dim)


# ===================================================================== converter tables
Converter = Callable[..., Any]

_MODULE_CONVERTERS: dict[type[nn.Module], Converter] = {
    nn.Conv1d: _m_conv,
    nn.Conv2d: _m_conv,
    nn.ConvTranspose1d: _m_conv_transpose,
    nn.ConvTranspose2d: _m_conv_transpose,
    nn.Linear: _m_linear,
    nn.BatchNorm1d: _m_batch_norm,
    nn.BatchNorm2d: _m_batch_norm,
    nn.ReLU: _m_relu,
    nn.ReLU6: _m_hardtanh,
    nn.Hardtanh: _m_hardtanh,
    nn.AvgPool1d: _m_avg_pool,
    nn.AvgPool2d: _m_avg_pool,
    nn.MaxPool1d: _m_max_pool,
    nn.MaxPool2d: _m_max_pool,
    nn.AdaptiveAvgPool1d: _m_adaptive_avg_pool,
    nn.AdaptiveAvgPool2d: _m_adaptive_avg_pool,
    nn.Flatten: _m_flatten,
    nn.Upsample: _m_upsample,
    nn.UpsamplingNearest2d: _m_upsample,
    nn.Identity: _m_identity,
    nn.Dropout: _m_dropout,
    nn.Dropout1d: _m_dropout,
    nn.Dropout2d: _m_dropout,
    nn.Softmax: _m_softmax,
}

_FUNCTION_CONVERTERS: dict[Callable[..., Any], Converter] = {
    F.conv1d: _conv,
    F.conv2d: _conv,
    F.conv_transpose1d: _conv_transpose,
    F.conv_transpose2d: _conv_transpose,
    F.linear: _linear,
    F.batch_norm: _batch_norm,
    F.relu: _relu,
    torch.relu: _relu,
    torch.relu_: _relu,  # F.relu_ is the same function
    F.relu6: _relu6,
    F.hardtanh: _hardtanh,
    F.hardtanh_: _hardtanh,
    torch.clamp: _clamp,
    torch.clip: _clamp,
    torch.clamp_: _clamp,
    torch.clamp_min: _clamp_min,
    F.avg_pool1d: _avg_pool,
    F.avg_pool2d: _avg_pool,
    F.max_pool1d: _max_pool,
    F.max_pool2d: _max_pool,
    F.adaptive_avg_pool1d: _adaptive_avg_pool,
    F.adaptive_avg_pool2d: _adaptive_avg_pool,
    torch.mean: _mean,
    torch.flatten: _flatten,
    torch.reshape: _reshape,
    torch.cat: _cat,
    torch.concat: _cat,
    F.interpolate: _interpolate,
    F.dropout: _dropout,
    F.softmax: _softmax,
    torch.softmax: _softmax,
    operator.add: _add,
    operator.iadd: _add,
    torch.add: _add,
    operator.sub: _sub,
    operator.isub: _sub,
    torch.sub: _sub,
    operator.mul: _mul,
    operator.imul: _mul,
    torch.mul: _mul,
    operator.truediv: _div,
    operator.itruediv: _div,
    torch.div: _div,
    operator.neg: _neg,
    torch.neg: _neg,
    operator.getitem: _getitem,
    getattr: _getattr,
}

# Functions that write their result into their first argument.
_INPLACE_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(
    {torch.relu_, F.hardtanh_, torch.clamp_, operator.iadd, operator.isub, operator.imul, operator.itruediv}
)

_METHOD_CONVERTERS: dict[str, Converter] = {
    "relu": _relu,
    "relu_": _relu,
    "clamp": _clamp,
    "clamp_": _clamp,
    "clip": _clamp,
    "clamp_min": _clamp_min,
    "clamp_min_": _clamp_min,
    "mean": _mean,
    "flatten": _flatten,
    "view": _view_method,
    "reshape": _view_method,
    "size": _size,
    "dim": _dim,
    "add": _add,
    "add_": _add,
    "sub": _sub,
    "sub_": _sub,
    "mul": _mul,
    "mul_": _mul,
    "div": _div,
    "div_": _div,
    "neg": _neg,
    "softmax": _softmax,
    "contiguous": _passthrough,
    "clone": _passthrough,
    "detach": _passthrough,
    "float": _passthrough,
}

# Pure functions and methods evaluated directly when no argument depends on the input
# (shape arithmetic, reshaping a normalisation buffer). Random functions are left out on
# purpose: folding them would freeze one sample of the noise into the graph.
_FOLDABLE_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(
    {
        operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod,
        operator.pow, operator.neg, operator.pos, operator.getitem, getattr,
        torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.sqrt, torch.rsqrt, torch.reciprocal,
        torch.exp, torch.log, torch.abs, torch.sum, torch.mean, torch.clamp,
        torch.reshape, torch.flatten, torch.unsqueeze, torch.squeeze, torch.cat, torch.stack, torch.tensor,
    }
)  # fmt: skip
_FOLDABLE_METHODS: frozenset[str] = frozenset(
    {
        "view", "reshape", "unsqueeze", "squeeze", "flatten", "expand", "permute", "transpose", "t",
        "contiguous", "clone", "detach", "float", "to", "size", "dim", "numel", "item",
        "add", "sub", "mul", "div", "neg", "sqrt", "rsqrt", "reciprocal", "pow", "exp", "log", "abs",
        "sum", "mean", "clamp",
    }
)  # fmt: skip


def _build_aten_table() -> dict[Any, Converter]:
    aten = torch.ops.aten
    return {
        aten.conv1d.default: _conv,
        aten.conv2d.default: _conv,
        aten.conv1d.padding: _conv,
        aten.conv2d.padding: _conv,
        aten.conv_transpose1d.default: _conv_transpose,
        aten.conv_transpose2d.input: _conv_transpose,
        aten.convolution.default: _aten_convolution,
        aten.linear.default: _linear,
        aten.batch_norm.default: _aten_batch_norm,
        aten._native_batch_norm_legit_no_training.default: _aten_batch_norm_no_training,
        aten.relu.default: _relu,
        aten.relu6.default: _relu6,
        aten.hardtanh.default: _hardtanh,
        aten.clamp.default: _clamp,
        aten.clamp_min.default: _clamp_min,
        aten.avg_pool1d.default: _avg_pool,
        aten.avg_pool2d.default: _avg_pool,
        aten.max_pool1d.default: _max_pool,
        aten.max_pool2d.default: _max_pool,
        aten.adaptive_avg_pool1d.default: _adaptive_avg_pool,
        aten.adaptive_avg_pool2d.default: _adaptive_avg_pool,
        aten.mean.dim: _mean,
        aten.view.default: _reshape,
        aten.reshape.default: _reshape,
        aten._unsafe_view.default: _reshape,
        aten.flatten.using_ints: _flatten,
        aten.cat.default: _cat,
        aten.upsample_nearest1d.vec: _aten_upsample_vec,
        aten.upsample_nearest2d.vec: _aten_upsample_vec,
        aten.upsample_nearest1d.default: _aten_upsample,
        aten.upsample_nearest2d.default: _aten_upsample,
        aten.add.Tensor: _add,
        aten.add.Scalar: _add,
        aten.sub.Tensor: _sub,
        aten.sub.Scalar: _sub,
        aten.rsub.Scalar: _rsub,
        aten.rsub.Tensor: _rsub,
        aten.mul.Tensor: _mul,
        aten.mul.Scalar: _mul,
        aten.div.Tensor: _div,
        aten.div.Scalar: _div,
        aten.neg.default: _neg,
        aten.dropout.default: _dropout,
        aten.clone.default: _passthrough,
        aten.alias.default: _passthrough,
        aten.detach.default: _passthrough,
        aten.softmax.int: _softmax,
        aten._softmax.default: _aten_softmax,
        aten.sym_size.int: _size,
        operator.getitem: _getitem,
    }


_ATEN_CONVERTERS: dict[Any, Converter] = _build_aten_table()

_SUPPORTED_SUMMARY = (
    "Conv1d/2d, ConvTranspose1d/2d, Linear, BatchNorm1d/2d, ReLU/ReLU6/clamp(min=0), Avg/Max/AdaptiveAvgPool, "
    "mean over spatial axes, Flatten/view/reshape, add, arithmetic with constants, cat, nearest Upsample, "
    "Identity, Dropout and a final Softmax"
)
_ACTIVATIONS = {
    "sigmoid", "tanh", "gelu", "silu", "elu", "selu", "celu", "leaky_relu", "leakyrelu", "prelu", "rrelu",
    "hardswish", "hardsigmoid", "mish", "softplus", "softsign", "logsigmoid", "tanhshrink",
}  # fmt: skip


def _default_hint(op_type: str) -> str:
    """What the user can do about an op no converter handles."""
    tokens = {t.lower() for t in re.split(r"[^A-Za-z0-9_]+", op_type)}
    if tokens & _ACTIVATIONS:
        return "spiking neurons implement ReLU only; retrain the model with nn.ReLU (ReLU6 or clamp(min=0) also work)"
    if tokens & {"lstm", "gru", "rnn", "lstmcell", "grucell", "rnncell"}:
        return "recurrent layers cannot be converted; snnc converts feed-forward networks"
    if tokens & {"matmul", "bmm", "einsum", "multiheadattention", "scaled_dot_product_attention"}:
        return "products of two activations have no spiking equivalent; snnc converts feed-forward CNNs and MLPs"
    if any("norm" in t for t in tokens):
        return "only BatchNorm with running statistics is supported (it folds into the preceding layer)"
    return f"snnc has no converter for it (supported: {_SUPPORTED_SUMMARY}); replace it or move it out of the model"


# ========================================================================= translation
_SIGNATURES: dict[Converter, inspect.Signature] = {}


def _bind(cx: _Context, converter: Converter, args: Sequence[Any], kwargs: dict[str, Any]) -> inspect.BoundArguments:
    """Bind traced arguments to a converter whose signature mirrors the torch one."""
    sig = _SIGNATURES.get(converter)
    if sig is None:
        sig = _SIGNATURES[converter] = inspect.signature(converter)
    try:
        return sig.bind(cx, *args, **kwargs)
    except TypeError as e:
        cx.unsupported(f"arguments not supported ({e})")


def _leaves(obj: Any) -> Iterator[Any]:
    """The leaves of nested tuples, lists, dicts and slices."""
    if isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _leaves(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _leaves(item)
    elif isinstance(obj, slice):
        yield from (obj.start, obj.stop, obj.step)
    else:
        yield obj


def _depends_on_input(args: Any) -> bool:
    return any(isinstance(a, Value) or a is BATCH for a in _leaves(args))


def _feeds_output_only(node: fx.Node) -> bool:
    return bool(node.users) and all(user.op == "output" for user in node.users)


def _callable_name(fn: Any) -> str:
    """A readable name for a call_function target: torch.sigmoid, F.gelu, operator.add, aten.x.y."""
    if isinstance(fn, torch._ops.OpOverload):
        return str(fn)
    name = getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None) or ""
    if module in ("torch.nn.functional", "torch._C._nn"):
        return f"F.{name}"
    if module.startswith("torch") or module in ("", "torch._C._VariableFunctions"):
        return f"torch.{name}" if getattr(torch, name, None) is fn else f"{module or 'torch'}.{name}"
    if module == "_operator":
        return f"operator.{name}"
    return f"{module}.{name}" if module != "builtins" else name


def _module_type_name(cls: type) -> str:
    if cls.__module__.startswith("torch.nn.modules"):
        return f"nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _fetch_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj.detach() if isinstance(obj, torch.Tensor) else obj


class _Translator:
    """Walks a traced graph in order, dispatching each node to its converter.

    Subclasses say how placeholders, constants, targets, names and outputs are found in
    their kind of traced program (symbolic fx trace or exported ATen program).
    """

    def __init__(self, graph: Graph, fx_graph: fx.Graph, input_shape: Shape):
        self.cx = _Context(graph)
        self.fx_graph = fx_graph
        self.input_shape = input_shape
        self.env: dict[fx.Node, Any] = {}

    # -- hooks
    def placeholder(self, node: fx.Node) -> Any:
        raise NotImplementedError

    def get_attr(self, node: fx.Node) -> Any:
        raise NotImplementedError

    def lookup(self, node: fx.Node) -> tuple[Converter, tuple[Any, ...]]:
        """The converter and the arguments it takes before the traced ones (the module)."""
        raise NotImplementedError

    def foldable(self, node: fx.Node) -> bool:
        raise NotImplementedError

    def mutates_first_arg(self, node: fx.Node, bound: inspect.BoundArguments, prefix: tuple[Any, ...]) -> bool:
        return False

    def ir_name(self, node: fx.Node) -> str:
        return node.name

    def output_structure(self, node: fx.Node) -> Any:
        return node.args[0]

    def op_type(self, node: fx.Node) -> str:
        if node.op == "call_function":
            return f"call_function {_callable_name(node.target)}"
        if node.op == "call_method":
            return f"call_method Tensor.{node.target}"
        return node.op

    # -- driver
    def run(self) -> None:
        for node in self.fx_graph.nodes:
            self.cx.at(self.op_type(node), self.ir_name(node), _feeds_output_only(node))
            if node.op == "placeholder":
                self.env[node] = self.placeholder(node)
            elif node.op == "get_attr":
                self.env[node] = self.get_attr(node)
            elif node.op == "output":
                self.set_outputs(fx.node.map_arg(self.output_structure(node), self.env.__getitem__))
            else:
                self.env[node] = self.call(node)

    def call(self, node: fx.Node) -> Any:
        args = fx.node.map_arg(node.args, self.env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, self.env.__getitem__)
        if not _depends_on_input((args, kwargs)) and self.foldable(node):
            return self.fold(node, args, kwargs)
        converter, prefix = self.lookup(node)
        bound = _bind(self.cx, converter, (*prefix, *args), kwargs)
        result = converter(*bound.args, **bound.kwargs)
        if self.mutates_first_arg(node, bound, prefix):
            self.rebind(node, result)
        return result

    def fold(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with torch.no_grad():
            if node.op == "call_method":
                return getattr(args[0], node.target)(*args[1:], **kwargs)
            return node.target(*args, **kwargs)

    def rebind(self, node: fx.Node, result: Any) -> None:
        """After an in-place op, readers of the mutated tensor must see the result."""
        target = node.args[0] if node.args else node.kwargs.get("input")
        if isinstance(target, fx.Node) and isinstance(self.env.get(target), Value) and isinstance(result, Value):
            self.env[target] = result

    def add_input(self, node: fx.Node) -> Value:
        graph = self.cx.graph
        if graph.inputs:
            self.cx.unsupported("the model takes more than one tensor input; snnc handles single-input models")
        return graph.add_input(node.name, self.input_shape)

    def set_outputs(self, structure: Any) -> None:
        outputs: list[Value] = []
        for leaf in _leaves(structure):
            value = self.cx.tensor(leaf, "output")
            # Graph outputs are distinct node outputs: a returned input, or a tensor returned
            # twice, gets an identity node so the outputs line up with the model's.
            if value.producer is None or any(value is o for o in outputs):
                self.cx.at("output", f"{value.name}_out", False)
                value = self.cx.emit("identity", [value])
            outputs.append(value)
        self.cx.graph.set_outputs(outputs)


class _FxTranslator(_Translator):
    """Translates a ``torch.fx`` symbolic trace (call_module / call_function / call_method)."""

    def __init__(self, graph: Graph, gm: fx.GraphModule, input_shape: Shape):
        super().__init__(graph, gm.graph, input_shape)
        self.root = gm
        self.modules = dict(gm.named_modules())

    def placeholder(self, node: fx.Node) -> Any:
        # The first argument is the model input; later ones with defaults keep them.
        if node.args and self.cx.graph.inputs:
            return node.args[0]
        return self.add_input(node)

    def get_attr(self, node: fx.Node) -> Any:
        return _fetch_attr(self.root, str(node.target))

    def op_type(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return f"call_module {_module_type_name(type(self.modules[str(node.target)]))}"
        return super().op_type(node)

    def ir_name(self, node: fx.Node) -> str:
        # Modules keep their qualified names ("features.0"), which users recognise.
        return str(node.target) if node.op == "call_module" else node.name

    def lookup(self, node: fx.Node) -> tuple[Converter, tuple[Any, ...]]:
        if node.op == "call_module":
            module = self.modules[str(node.target)]
            converter = _MODULE_CONVERTERS.get(type(module))
            prefix: tuple[Any, ...] = (module,)
        elif node.op == "call_method":
            converter, prefix = _METHOD_CONVERTERS.get(str(node.target)), ()
        else:
            converter, prefix = _FUNCTION_CONVERTERS.get(node.target), ()
        if converter is None:
            self.cx.unsupported(_default_hint(self.cx.op_type))
        return converter, prefix

    def foldable(self, node: fx.Node) -> bool:
        if node.op == "call_method":
            return node.target in _FOLDABLE_METHODS
        return node.op == "call_function" and node.target in _FOLDABLE_FUNCTIONS

    def mutates_first_arg(self, node: fx.Node, bound: inspect.BoundArguments, prefix: tuple[Any, ...]) -> bool:
        if node.op == "call_method":
            name = str(node.target)
            return name.endswith("_") and not name.startswith("_")
        if node.op == "call_module":
            return bool(getattr(prefix[0], "inplace", False))
        return node.target in _INPLACE_FUNCTIONS or bound.arguments.get("inplace") is True


class _ExportTranslator(_Translator):
    """Translates a functionalised ``torch.export`` program (ATen call_function nodes)."""

    def __init__(self, graph: Graph, program: Any, input_shape: Shape):
        super().__init__(graph, program.graph_module.graph, input_shape)
        self.program = program
        self.root = program.graph_module
        self.input_specs = {spec.arg.name: spec for spec in program.graph_signature.input_specs}

    def placeholder(self, node: fx.Node) -> Any:
        from torch.export.graph_signature import InputKind

        spec = self.input_specs[node.name]
        if spec.kind == InputKind.USER_INPUT:
            return self.add_input(node)
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            # Non-persistent buffers and lifted constants live in .constants, not .state_dict.
            tensor = self.program.state_dict.get(spec.target)
            if tensor is None:
                tensor = self.program.constants[spec.target]
            return tensor.detach()
        self.cx.unsupported(f"exported programs with {spec.kind.name} inputs are not supported")

    def get_attr(self, node: fx.Node) -> Any:
        return _fetch_attr(self.root, str(node.target))

    def ir_name(self, node: fx.Node) -> str:
        # Name ops inside a torch.nn layer after the layer ("features.0"), like the fx path.
        stack = node.meta.get("nn_module_stack") or {}
        if node.op == "call_function" and stack:
            fqn, cls = list(stack.values())[-1]
            module = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
            if fqn and module.startswith("torch.nn.modules."):
                return str(fqn)
        return node.name

    def lookup(self, node: fx.Node) -> tuple[Converter, tuple[Any, ...]]:
        converter = _ATEN_CONVERTERS.get(node.target) if node.op == "call_function" else None
        if converter is None:
            self.cx.unsupported(_default_hint(self.cx.op_type))
        return converter, ()

    def foldable(self, node: fx.Node) -> bool:
        target = node.target
        if target is operator.getitem:
            return True
        return isinstance(target, torch._ops.OpOverload) and torch.Tag.nondeterministic_seeded not in target.tags

    def output_structure(self, node: fx.Node) -> Any:
        # Mutated buffers and inputs are outputs of a functional program too; keep only
        # what forward() returns.
        from torch.export.graph_signature import OutputKind

        specs = self.program.graph_signature.output_specs
        return [value for value, spec in zip(node.args[0], specs) if spec.kind == OutputKind.USER_OUTPUT]


# ============================================================================= tracing
def _float_dtype(model: nn.Module) -> torch.dtype:
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _export(model: nn.Module, input_shape: Shape) -> Any:
    """Export with a dynamic batch dimension, so ``x.size(0)`` stays symbolic."""
    # Dynamic dimensions need an example size of at least 2 (0 and 1 get specialised).
    example = torch.zeros((2, *input_shape), dtype=_float_dtype(model), device=_device(model))
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    # An empty decomposition table only functionalises: in-place ops become pure ones.
    return program.run_decompositions({})


def _translate(model: nn.Module, graph: Graph, input_shape: Shape, notices: list[str]) -> str:
    """Trace ``model`` (an eval-mode copy) and translate it into ``graph``; returns the tracer."""
    if isinstance(model, fx.GraphModule):
        notices.append("used the given torch.fx.GraphModule as is (not re-traced)")
        _FxTranslator(graph, model, input_shape).run()
        return "torch.fx"
    try:
        gm = fx.symbolic_trace(model)
    except Exception as fx_error:  # any tracing failure sends us to torch.export
        log.info("torch.fx.symbolic_trace failed (%s); trying torch.export", _first_line(fx_error))
        try:
            program = _export(model, input_shape)
        except Exception as export_error:
            raise UnsupportedOpError(
                "untraceable Python code",
                f"{type(model).__name__}.forward",
                f"torch.fx.symbolic_trace failed ({_first_line(fx_error)}) and torch.export.export failed "
                f"({_first_line(export_error)}). Control flow that depends on tensor values cannot be "
                "converted: make branches depend only on shapes or module attributes, or trace the model "
                "yourself and pass the torch.fx.GraphModule",
            ) from export_error
        notices.append(
            f"traced with torch.export.export because torch.fx.symbolic_trace failed ({_first_line(fx_error)}); "
            "Python control flow was specialised to the input shape"
        )
        _ExportTranslator(graph, program, input_shape).run()
        return "torch.export"
    notices.append("traced with torch.fx.symbolic_trace")
    _FxTranslator(graph, gm, input_shape).run()
    return "torch.fx"


# ============================================================================ public API
def import_torch(model: nn.Module | fx.GraphModule, input_shape: Sequence[int]) -> Graph:
    """Import a torch model as an ANN-stage IR graph.

    ``input_shape`` is the per-sample input shape (no batch dimension), e.g. ``(3, 32, 32)``.
    The model is deep-copied and the copy put in eval mode, so the caller's module is left
    exactly as it was. The graph's shapes are inferred and it is verified; ``meta`` gets
    ``source`` (format, class, tracer) and ``notices``.

    Raises UnsupportedOpError naming the first op without a converter, and DataError when
    ``input_shape`` does not fit the model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"import_torch expects a torch.nn.Module, got {type(model).__name__}")
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise DataError(f"input_shape must be the per-sample shape as positive integers (no batch dimension), got {list(input_shape)}")
    shape = tuple(int(d) for d in shape)

    notices: list[str] = []
    if model.training:
        notices.append(
            "the model is in training mode; it was imported with inference semantics "
            "(BatchNorm running statistics, dropout off) without switching the model itself"
        )
    work = copy.deepcopy(model).eval()
    graph = Graph(type(model).__name__, stage="ann")
    tracer = _translate(work, graph, shape, notices)

    removed = graph.remove_dead_nodes()
    if removed:
        log.info("dropped %d node(s) whose results the model never uses", removed)
    infer_shapes(graph)
    verify(graph)
    graph.meta["source"] = {"format": "torch", "class": type(model).__name__, "tracer": tracer}
    graph.meta["notices"] = notices
    log.info("imported %s with %s: %d nodes, %d parameters", type(model).__name__, tracer, len(graph.nodes), graph.num_params())
    return graph


def torch_reference(model: nn.Module) -> Reference:
    """A reference evaluator for :func:`snnc.frontends.check.check_import`.

    It runs a deep copy of ``model`` (taken now) in eval mode under ``torch.no_grad`` and
    returns the model's output tensors, flattened in order, as float32 numpy arrays.
    """
    ref = copy.deepcopy(model).eval()
    dtype, device = _float_dtype(ref), _device(ref)

    def run(x: np.ndarray) -> list[np.ndarray]:
        # torch.tensor copies: a forward pass with in-place ops on its input must not write
        # into the caller's array.
        batch = torch.tensor(np.asarray(x), dtype=dtype, device=device)
        with torch.no_grad():
            out = ref(batch)
        return [t.detach().to("cpu", torch.float32).numpy() for t in _leaves(out) if isinstance(t, torch.Tensor)]

    return run
