"""Linear layers: convolutions (1-D and 2-D, transposed too), linear and batch norm, as the
functional / ATen calls and the shared emitters the module converters use."""

from __future__ import annotations

from typing import Any

import torch

from snnc.frontends.common import same_pads
from snnc.frontends.torch_fx.context import Context, int_list, to_numpy
from snnc.ir.graph import Value


def emit_conv(cx: Context, x: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any, groups: Any) -> Value:
    x = cx.tensor(x)
    w = cx.constant(weight, "weight")
    nd = w.dim() - 2
    if nd not in (1, 2):
        cx.unsupported("only 1-D and 2-D convolutions are supported")
    dil = int_list(cx, dilation, nd, "dilation")
    if isinstance(padding, str):
        if padding == "same":
            # torch allows padding='same' with stride 1 only: the output keeps the input size.
            pads = same_pads(x.shape[1:], list(w.shape[2:]), [1] * nd, dil, odd_at_end=True)
        elif padding == "valid":
            pads = [0] * (2 * nd)
        else:
            cx.unsupported(f"padding {padding!r} is not 'same', 'valid' or a number")
    else:
        pads = int_list(cx, padding, nd, "padding") * 2
    b = torch.zeros(w.shape[0]) if bias is None else cx.constant(bias, "bias")
    attrs = {"strides": int_list(cx, stride, nd, "stride"), "pads": pads, "dilations": dil, "groups": int(groups)}
    return cx.emit("conv", [x], attrs, {"weight": to_numpy(w), "bias": to_numpy(b)})


def emit_conv_transpose(
    cx: Context, x: Any, weight: Any, bias: Any, stride: Any, padding: Any, output_padding: Any, groups: Any, dilation: Any
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
        "strides": int_list(cx, stride, nd, "stride"),
        "pads": int_list(cx, padding, nd, "padding") * 2,
        "dilations": int_list(cx, dilation, nd, "dilation"),
        "output_padding": int_list(cx, output_padding, nd, "output_padding"),
        "groups": groups,
    }
    return cx.emit("conv_transpose", [x], attrs, {"weight": to_numpy(w), "bias": to_numpy(b)})


def emit_linear(cx: Context, x: Any, weight: Any, bias: Any) -> Value:
    x = cx.tensor(x)
    w = cx.constant(weight, "weight")
    if w.dim() != 2:
        cx.unsupported(f"linear weight must be 2-D, got shape {list(w.shape)}")
    b = torch.zeros(w.shape[0]) if bias is None else cx.constant(bias, "bias")
    return cx.emit("linear", [x], None, {"weight": to_numpy(w), "bias": to_numpy(b)})


def emit_batch_norm(cx: Context, x: Any, mean: Any, var: Any, weight: Any, bias: Any, eps: Any) -> Value:
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
    params = {"scale": to_numpy(scale), "bias": to_numpy(shift), "mean": to_numpy(m), "var": to_numpy(v)}
    return cx.emit("batch_norm", [x], {"epsilon": cx.number(eps, "eps")}, params)


def conv(
    cx: Context, input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: Any = 1
) -> Value:
    return emit_conv(cx, input, weight, bias, stride, padding, dilation, groups)


def conv_transpose(
    cx: Context,
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: Any = 1,
    dilation: Any = 1,
) -> Value:
    return emit_conv_transpose(cx, input, weight, bias, stride, padding, output_padding, groups, dilation)


def aten_convolution(
    cx: Context,
    input: Any,
    weight: Any,
    bias: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    transposed: bool,
    output_padding: Any,
    groups: Any,
) -> Value:
    if transposed:
        return emit_conv_transpose(cx, input, weight, bias, stride, padding, output_padding, groups, dilation)
    return emit_conv(cx, input, weight, bias, stride, padding, dilation, groups)


def linear(cx: Context, input: Any, weight: Any, bias: Any = None) -> Value:
    return emit_linear(cx, input, weight, bias)


def batch_norm(
    cx: Context,
    input: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: Any = 0.1,
    eps: Any = 1e-5,
) -> Value:
    if training:
        cx.unsupported("batch_norm with training=True normalises with batch statistics; call it with training=False")
    return emit_batch_norm(cx, input, running_mean, running_var, weight, bias, eps)


def aten_batch_norm(
    cx: Context,
    input: Any,
    weight: Any,
    bias: Any,
    running_mean: Any,
    running_var: Any,
    training: bool,
    momentum: Any,
    eps: Any,
    cudnn_enabled: bool = True,
) -> Value:
    return batch_norm(cx, input, running_mean, running_var, weight, bias, training, momentum, eps)


def aten_batch_norm_no_training(
    cx: Context, input: Any, weight: Any, bias: Any, running_mean: Any, running_var: Any, momentum: Any, eps: Any
) -> tuple:
    # The ATen op returns (output, save_mean, save_invstd); only element 0 is ever read.
    return (emit_batch_norm(cx, input, running_mean, running_var, weight, bias, eps), None, None)
