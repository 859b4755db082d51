"""Converters for ``call_module`` nodes: each reads the layer's configuration and parameters
and calls the same emitter as the functional form."""

from __future__ import annotations

from typing import Any

from torch import nn

from snnc.frontends.torch_fx.context import Context
# Sibling modules imported by their full names (not from the package, whose table imports
# this module): no import cycle.
import snnc.frontends.torch_fx.converters.activation as activation
import snnc.frontends.torch_fx.converters.attention as attention
import snnc.frontends.torch_fx.converters.conv as conv_layers
import snnc.frontends.torch_fx.converters.pooling as pooling
import snnc.frontends.torch_fx.converters.resize as resize
import snnc.frontends.torch_fx.converters.shape as shape
from snnc.ir.graph import Value


def conv(cx: Context, m: nn.Conv1d | nn.Conv2d, input: Any) -> Value:
    if m.padding_mode != "zeros":
        cx.unsupported(f"padding_mode={m.padding_mode!r} is not supported; use padding_mode='zeros'")
    return conv_layers.emit_conv(cx, input, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)


def conv_transpose(cx: Context, m: nn.ConvTranspose1d | nn.ConvTranspose2d, input: Any, output_size: Any = None) -> Value:
    if output_size is not None:
        cx.unsupported("calling a transposed convolution with output_size is not supported; set output_padding on the layer")
    if m.padding_mode != "zeros":
        cx.unsupported(f"padding_mode={m.padding_mode!r} is not supported; use padding_mode='zeros'")
    return conv_layers.emit_conv_transpose(cx, input, m.weight, m.bias, m.stride, m.padding, m.output_padding, m.groups, m.dilation)


def linear(cx: Context, m: nn.Linear, input: Any) -> Value:
    return conv_layers.emit_linear(cx, input, m.weight, m.bias)


def batch_norm(cx: Context, m: nn.BatchNorm1d | nn.BatchNorm2d, input: Any) -> Value:
    # With track_running_stats=False torch uses batch statistics even in eval mode.
    stats = (m.running_mean, m.running_var) if m.track_running_stats else (None, None)
    return conv_layers.emit_batch_norm(cx, input, stats[0], stats[1], m.weight, m.bias, m.eps)


def relu(cx: Context, m: nn.ReLU, input: Any) -> Value:
    return activation.emit_relu(cx, input)


def hardtanh(cx: Context, m: nn.Hardtanh, input: Any) -> Value:
    # nn.ReLU6 is a Hardtanh(0, 6).
    return activation.emit_clip(cx, input, m.min_val, m.max_val)


def avg_pool(cx: Context, m: nn.AvgPool1d | nn.AvgPool2d, input: Any) -> Value:
    return pooling.emit_avg_pool(
        cx, input, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, getattr(m, "divisor_override", None)
    )


def max_pool(cx: Context, m: nn.MaxPool1d | nn.MaxPool2d, input: Any) -> Value:
    return pooling.emit_max_pool(cx, input, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)


def adaptive_avg_pool(cx: Context, m: nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d, input: Any) -> Value:
    return pooling.emit_adaptive_avg_pool(cx, input, m.output_size)


def flatten(cx: Context, m: nn.Flatten, input: Any) -> Value:
    return shape.flatten(cx, input, m.start_dim, m.end_dim)


def upsample(cx: Context, m: nn.Upsample, input: Any) -> Value:
    return resize.interpolate(cx, input, m.size, m.scale_factor, m.mode, m.align_corners)


def identity(cx: Context, m: nn.Identity, input: Any, *args: Any, **kwargs: Any) -> Value:
    return cx.emit("identity", [cx.tensor(input)])


def dropout(cx: Context, m: nn.Module, input: Any) -> Value:
    # The module is in eval mode here, where every dropout flavour is the identity.
    return cx.emit("dropout", [cx.tensor(input)])


def softmax(cx: Context, m: nn.Softmax, input: Any) -> Value:
    return activation.softmax(cx, input, m.dim)


def zero_pad(cx: Context, m: nn.ZeroPad1d | nn.ZeroPad2d | nn.ConstantPad1d | nn.ConstantPad2d, input: Any) -> Value:
    return shape.zero_pad(cx, input, list(m.padding), "constant", m.value)


def layer_norm(cx: Context, m: nn.LayerNorm, input: Any) -> Value:
    return attention.emit_layer_norm(cx, input, m.normalized_shape, m.weight, m.bias, m.eps)


def gelu(cx: Context, m: nn.GELU, input: Any) -> Value:
    return attention.emit_gelu(cx, input, m.approximate)


def silu(cx: Context, m: nn.SiLU, input: Any) -> Value:
    return cx.emit("silu", [cx.tensor(input)])


multihead_attention = attention.multihead_attention
transformer_encoder_layer = attention.transformer_encoder_layer
transformer_encoder = attention.transformer_encoder
