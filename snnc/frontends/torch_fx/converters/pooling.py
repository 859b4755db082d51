"""Pooling: average, max and adaptive average pooling (global, or regular windows), and the
mean over exactly the spatial axes (a global average pool)."""

from __future__ import annotations

from typing import Any

from snnc.frontends.common import adaptive_pool_windows
from snnc.frontends.torch_fx.context import Context, full_rank, int_list, norm_axis, spatial_rank
from snnc.ir.graph import Value


def _pool_window(cx: Context, nd: int, kernel_size: Any, stride: Any, padding: Any) -> dict[str, list[int]]:
    """Kernel, strides and (symmetric, ONNX-ordered) pads of a pooling call."""
    kernel = int_list(cx, kernel_size, nd, "kernel_size")
    # ATen spells "stride defaults to the kernel" as an empty list.
    strides = int_list(cx, stride, nd, "stride") if stride not in (None, [], ()) else list(kernel)
    return {"kernel": kernel, "strides": strides, "pads": int_list(cx, padding, nd, "padding") * 2}


def emit_avg_pool(
    cx: Context, x: Any, kernel_size: Any, stride: Any, padding: Any, ceil_mode: Any, count_include_pad: Any, divisor_override: Any
) -> Value:
    x = cx.tensor(x)
    nd = spatial_rank(cx, x, "average pooling")
    if divisor_override is not None:
        cx.unsupported("divisor_override is not supported; scale the result with a multiplication instead")
    attrs = {
        **_pool_window(cx, nd, kernel_size, stride, padding),
        "count_include_pad": bool(count_include_pad),
        "ceil_mode": bool(ceil_mode),
    }
    return cx.emit("avg_pool", [x], attrs)


def emit_max_pool(
    cx: Context, x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any, return_indices: Any
) -> Value:
    x = cx.tensor(x)
    nd = spatial_rank(cx, x, "max pooling")
    if return_indices:
        cx.unsupported("max pooling with return_indices=True is not supported (indices have no spiking form)")
    attrs = {
        **_pool_window(cx, nd, kernel_size, stride, padding),
        "dilations": int_list(cx, dilation, nd, "dilation"),
        "ceil_mode": bool(ceil_mode),
    }
    return cx.emit("max_pool", [x], attrs)


def emit_adaptive_avg_pool(cx: Context, x: Any, output_size: Any) -> Value:
    """Adaptive average pooling to size 1 is a global average; otherwise, when every axis's
    input size is a multiple of its output size or the other way round, an average pool and /
    or a nearest upsampling (:func:`~snnc.frontends.common.adaptive_pool_windows`), or the
    identity when the sizes are equal. Other sizes give windows of different lengths (refused)."""
    x = cx.tensor(x)
    nd = spatial_rank(cx, x, "adaptive average pooling")
    in_sizes = list(x.shape[1:])
    sizes = [output_size] * nd if not isinstance(output_size, (tuple, list)) else list(output_size)
    if len(sizes) == 1 and nd > 1:
        sizes = sizes * nd
    if len(sizes) != nd:
        cx.unsupported(f"output_size {output_size!r} does not match the {nd} spatial axes")
    sizes = [i if o is None else o for i, o in zip(in_sizes, sizes)]  # None keeps the input size
    if not all(isinstance(o, int) and o > 0 for o in sizes):
        cx.unsupported(f"output_size {output_size!r} is not a positive integer per spatial axis")
    if all(o == 1 for o in sizes):
        return cx.emit("global_avg_pool", [x], {"keepdims": True})
    plan = adaptive_pool_windows(in_sizes, sizes)
    if plan is None:
        cx.unsupported(
            f"adaptive pooling from {in_sizes} to {sizes} has irregular windows (of different lengths); only output sizes that "
            "divide the input size (e.g. 1) or are multiples of it are supported"
        )
    kernel, scales = plan
    if all(k == 1 for k in kernel) and all(s == 1 for s in scales):
        return cx.emit("identity", [x], {})
    if any(k > 1 for k in kernel):
        x = cx.emit("avg_pool", [x], {"kernel": kernel, "strides": kernel, "pads": [0] * (2 * nd)})
    if any(s > 1 for s in scales):
        x = cx.emit("upsample", [x], {"scales": scales, "mode": "nearest"})
    return x


def avg_pool(
    cx: Context,
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: Any = False,
    count_include_pad: Any = True,
    divisor_override: Any = None,
) -> Value:
    return emit_avg_pool(cx, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def max_pool(
    cx: Context,
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: Any = False,
    return_indices: Any = False,
) -> Value:
    return emit_max_pool(cx, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def adaptive_avg_pool(cx: Context, input: Any, output_size: Any) -> Value:
    return emit_adaptive_avg_pool(cx, input, output_size)


def mean(cx: Context, input: Any, dim: Any = None, keepdim: Any = False, *, dtype: Any = None) -> Value:
    """A mean over exactly the spatial axes is a global average pool; so is, after a
    transpose, the mean over the tokens of a ``[B, N, D]`` sequence."""
    x = cx.tensor(input)
    rank = full_rank(x)
    if dim is None or (isinstance(dim, (tuple, list)) and not dim):
        cx.unsupported("a mean over every axis includes the batch axis; use x.mean((2, 3)) for a global average")
    dims = {norm_axis(cx, d, rank) for d in (dim if isinstance(dim, (tuple, list)) else [dim])}
    if rank == 3 and dims == {1}:
        return _token_mean(cx, x, bool(keepdim))
    if rank < 3 or dims != set(range(2, rank)):
        cx.unsupported(f"only the mean over all spatial axes (x.mean({tuple(range(2, max(rank, 3)))})) is supported; got dims {dim!r}")
    return cx.emit("global_avg_pool", [x], {"keepdims": bool(keepdim)})


def _token_mean(cx: Context, x: Value, keepdim: bool) -> Value:
    """``x.mean(1)`` of ``[B, N, D]`` tokens (a ViT's global average pool): the tokens moved
    to the last axis, a global average pool over them, then the layout restored."""
    y = cx.emit("transpose", [x], {"perm": [0, 2, 1]}, sub="tokens_last")
    y = cx.emit("global_avg_pool", [y], {"keepdims": keepdim}, sub="pool" if keepdim else None)
    return cx.emit("transpose", [y], {"perm": [0, 2, 1]}) if keepdim else y
