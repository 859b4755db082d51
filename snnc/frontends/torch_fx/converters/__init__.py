"""Converters for traced torch calls, grouped by family, and the tables that dispatch
``torch.fx`` nodes to them: ``MODULE_CONVERTERS`` (``call_module``, keyed by the exact module
class, because a subclass may override ``forward``), ``FUNCTION_CONVERTERS``
(``call_function``) and ``METHOD_CONVERTERS`` (``call_method``). The ATen table of the
``torch.export`` path is :mod:`snnc.frontends.torch_fx.aten`.

Every converter's signature mirrors the torch signature it translates (``F.max_pool2d``
and ``aten.max_pool2d`` share one), so Python itself binds positional and keyword
arguments; arguments a converter does not know make the op unsupported.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snnc.frontends.common import unsupported_hint as _common_hint
from snnc.frontends.torch_fx.converters import activation, arithmetic, attention, conv, layout, modules, pooling, resize, shape

Converter = Callable[..., Any]

MODULE_CONVERTERS: dict[type[nn.Module], Converter] = {
    nn.Conv1d: modules.conv,
    nn.Conv2d: modules.conv,
    nn.ConvTranspose1d: modules.conv_transpose,
    nn.ConvTranspose2d: modules.conv_transpose,
    nn.Linear: modules.linear,
    nn.BatchNorm1d: modules.batch_norm,
    nn.BatchNorm2d: modules.batch_norm,
    nn.ReLU: modules.relu,
    nn.ReLU6: modules.hardtanh,
    nn.Hardtanh: modules.hardtanh,
    nn.AvgPool1d: modules.avg_pool,
    nn.AvgPool2d: modules.avg_pool,
    nn.MaxPool1d: modules.max_pool,
    nn.MaxPool2d: modules.max_pool,
    nn.AdaptiveAvgPool1d: modules.adaptive_avg_pool,
    nn.AdaptiveAvgPool2d: modules.adaptive_avg_pool,
    nn.Flatten: modules.flatten,
    nn.Upsample: modules.upsample,
    nn.UpsamplingNearest2d: modules.upsample,
    nn.Identity: modules.identity,
    nn.Dropout: modules.dropout,
    nn.Dropout1d: modules.dropout,
    nn.Dropout2d: modules.dropout,
    nn.Softmax: modules.softmax,
    nn.ZeroPad1d: modules.zero_pad,
    nn.ZeroPad2d: modules.zero_pad,
    nn.ConstantPad1d: modules.zero_pad,
    nn.ConstantPad2d: modules.zero_pad,
    nn.LayerNorm: modules.layer_norm,
    nn.GELU: modules.gelu,
    nn.SiLU: modules.silu,
    nn.MultiheadAttention: modules.multihead_attention,
    nn.TransformerEncoderLayer: modules.transformer_encoder_layer,
    nn.TransformerEncoder: modules.transformer_encoder,
}

# Layers converted as a whole (their forward has fast paths and checks that do not trace):
# torch.fx keeps them as leaf modules; the torch.export path preserves their call
# signatures and translates each call with the module converter instead of its ATen ops.
WHOLE_MODULES: tuple[type[nn.Module], ...] = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder)

FUNCTION_CONVERTERS: dict[Callable[..., Any], Converter] = {
    F.conv1d: conv.conv,
    F.conv2d: conv.conv,
    F.conv_transpose1d: conv.conv_transpose,
    F.conv_transpose2d: conv.conv_transpose,
    F.linear: conv.linear,
    F.batch_norm: conv.batch_norm,
    F.relu: activation.relu,
    torch.relu: activation.relu,
    torch.relu_: activation.relu,  # F.relu_ is the same function
    F.relu6: activation.relu6,
    F.hardtanh: activation.hardtanh,
    F.hardtanh_: activation.hardtanh,
    torch.clamp: activation.clamp,
    torch.clip: activation.clamp,
    torch.clamp_: activation.clamp,
    torch.clamp_min: activation.clamp_min,
    F.avg_pool1d: pooling.avg_pool,
    F.avg_pool2d: pooling.avg_pool,
    F.max_pool1d: pooling.max_pool,
    F.max_pool2d: pooling.max_pool,
    F.adaptive_avg_pool1d: pooling.adaptive_avg_pool,
    F.adaptive_avg_pool2d: pooling.adaptive_avg_pool,
    torch.mean: pooling.mean,
    torch.flatten: shape.flatten,
    torch.reshape: shape.reshape,
    torch.cat: shape.cat,
    torch.concat: shape.cat,
    F.pad: shape.zero_pad,
    F.interpolate: resize.interpolate,
    F.dropout: activation.dropout,
    F.softmax: activation.softmax,
    torch.softmax: activation.softmax,
    operator.add: arithmetic.add,
    operator.iadd: arithmetic.add,
    torch.add: arithmetic.add,
    operator.sub: arithmetic.sub,
    operator.isub: arithmetic.sub,
    torch.sub: arithmetic.sub,
    operator.mul: arithmetic.mul,
    operator.imul: arithmetic.mul,
    torch.mul: arithmetic.mul,
    operator.truediv: arithmetic.div,
    operator.itruediv: arithmetic.div,
    torch.div: arithmetic.div,
    operator.neg: arithmetic.neg,
    torch.neg: arithmetic.neg,
    operator.getitem: shape.getitem,
    getattr: shape.tensor_attr,
    # transformers
    F.layer_norm: attention.layer_norm,
    torch.layer_norm: attention.aten_layer_norm,
    F.gelu: attention.gelu,
    F.silu: attention.silu,
    operator.matmul: attention.matmul,
    torch.matmul: attention.matmul,
    torch.bmm: attention.bmm,
    F.scaled_dot_product_attention: attention.scaled_dot_product_attention,
    torch.transpose: layout.transpose,
    torch.swapaxes: layout.transpose,
    torch.permute: layout.permute,
    torch.t: layout.t,
    torch.select: layout.select,
    torch.narrow: layout.narrow,
    torch.unbind: layout.unbind,
    torch.chunk: layout.chunk,
    torch.split: layout.split,
    torch.unsqueeze: layout.unsqueeze,
    torch.squeeze: layout.squeeze,
    torch.unflatten: layout.unflatten,
}

# Functions that write their result into their first argument.
INPLACE_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(
    {torch.relu_, F.hardtanh_, torch.clamp_, operator.iadd, operator.isub, operator.imul, operator.itruediv}
)

METHOD_CONVERTERS: dict[str, Converter] = {
    "relu": activation.relu,
    "relu_": activation.relu,
    "clamp": activation.clamp,
    "clamp_": activation.clamp,
    "clip": activation.clamp,
    "clamp_min": activation.clamp_min,
    "clamp_min_": activation.clamp_min,
    "mean": pooling.mean,
    "flatten": shape.flatten,
    "view": shape.view_method,
    "reshape": shape.view_method,
    "size": shape.tensor_size,
    "dim": shape.tensor_dim,
    "add": arithmetic.add,
    "add_": arithmetic.add,
    "sub": arithmetic.sub,
    "sub_": arithmetic.sub,
    "mul": arithmetic.mul,
    "mul_": arithmetic.mul,
    "div": arithmetic.div,
    "div_": arithmetic.div,
    "neg": arithmetic.neg,
    "softmax": activation.softmax,
    "contiguous": shape.passthrough,
    "clone": shape.passthrough,
    "detach": shape.passthrough,
    "float": shape.passthrough,
    # transformers
    "gelu": attention.gelu,
    "matmul": attention.matmul,
    "__matmul__": attention.matmul,
    "bmm": attention.bmm,
    "transpose": layout.transpose,
    "swapaxes": layout.transpose,
    "permute": layout.permute,
    "t": layout.t,
    "select": layout.select,
    "narrow": layout.narrow,
    "unbind": layout.unbind,
    "chunk": layout.chunk,
    "split": layout.split,
    "unsqueeze": layout.unsqueeze,
    "squeeze": layout.squeeze,
    "unflatten": layout.unflatten,
    "expand": layout.expand,
    "expand_as": layout.expand_as,
}

# Pure functions and methods evaluated directly when no argument depends on the input
# (shape arithmetic, reshaping a normalisation buffer). Random functions are left out on
# purpose: folding them would freeze one sample of the noise into the graph.
FOLDABLE_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(
    {
        operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod,
        operator.pow, operator.neg, operator.pos, operator.getitem, getattr,
        torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.sqrt, torch.rsqrt, torch.reciprocal,
        torch.exp, torch.log, torch.abs, torch.sum, torch.mean, torch.clamp,
        torch.reshape, torch.flatten, torch.unsqueeze, torch.squeeze, torch.cat, torch.stack, torch.tensor,
    }
)  # fmt: skip
FOLDABLE_METHODS: frozenset[str] = frozenset(
    {
        "view", "reshape", "unsqueeze", "squeeze", "flatten", "expand", "permute", "transpose", "t",
        "contiguous", "clone", "detach", "float", "to", "size", "dim", "numel", "item",
        "add", "sub", "mul", "div", "neg", "sqrt", "rsqrt", "reciprocal", "pow", "exp", "log", "abs",
        "sum", "mean", "clamp",
    }
)  # fmt: skip

SUPPORTED_SUMMARY = (
    "Conv1d/2d, ConvTranspose1d/2d, Linear, BatchNorm1d/2d, ReLU/ReLU6/clamp(min=0), Avg/Max/AdaptiveAvgPool, "
    "mean over spatial axes, Flatten/view/reshape, add, arithmetic with constants, cat, nearest Upsample, "
    "Identity, Dropout, Softmax, and for transformers LayerNorm, GELU/SiLU, matmul of two tensors, "
    "transpose/permute, indexing with ints and slices, MultiheadAttention and TransformerEncoder(Layer)"
)


def unsupported_hint(op_type: str) -> str:
    """What the user can do about a traced call no converter handles."""
    return _common_hint(op_type, relu="nn.ReLU; ReLU6 or clamp(min=0) also work", supported=SUPPORTED_SUMMARY)
