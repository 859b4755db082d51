"""The ATen converter table of the ``torch.export`` path: functionalised ATen ops mapped to
the same converters as their ``torch.fx`` counterparts."""

from __future__ import annotations

import operator
from typing import Any

import torch

from snnc.frontends.torch_fx.converters import Converter, activation, arithmetic, attention, conv, layout, pooling, resize, shape


def _build_aten_table() -> dict[Any, Converter]:
    aten = torch.ops.aten
    return {
        aten.conv1d.default: conv.conv,
        aten.conv2d.default: conv.conv,
        aten.conv1d.padding: conv.conv,
        aten.conv2d.padding: conv.conv,
        aten.conv_transpose1d.default: conv.conv_transpose,
        aten.conv_transpose2d.input: conv.conv_transpose,
        aten.convolution.default: conv.aten_convolution,
        aten.linear.default: conv.linear,
        aten.batch_norm.default: conv.aten_batch_norm,
        aten._native_batch_norm_legit_no_training.default: conv.aten_batch_norm_no_training,
        aten.relu.default: activation.relu,
        aten.relu6.default: activation.relu6,
        aten.hardtanh.default: activation.hardtanh,
        aten.clamp.default: activation.clamp,
        aten.clamp_min.default: activation.clamp_min,
        aten.avg_pool1d.default: pooling.avg_pool,
        aten.avg_pool2d.default: pooling.avg_pool,
        aten.max_pool1d.default: pooling.max_pool,
        aten.max_pool2d.default: pooling.max_pool,
        aten.adaptive_avg_pool1d.default: pooling.adaptive_avg_pool,
        aten.adaptive_avg_pool2d.default: pooling.adaptive_avg_pool,
        aten.mean.dim: pooling.mean,
        aten.view.default: shape.reshape,
        aten.reshape.default: shape.reshape,
        aten._unsafe_view.default: shape.reshape,
        aten.flatten.using_ints: shape.flatten,
        aten.cat.default: shape.cat,
        aten.constant_pad_nd.default: shape.constant_pad_nd,
        aten.pad.default: shape.zero_pad,
        aten.upsample_nearest1d.vec: resize.aten_upsample_vec,
        aten.upsample_nearest2d.vec: resize.aten_upsample_vec,
        aten.upsample_nearest1d.default: resize.aten_upsample,
        aten.upsample_nearest2d.default: resize.aten_upsample,
        aten.add.Tensor: arithmetic.add,
        aten.add.Scalar: arithmetic.add,
        aten.sub.Tensor: arithmetic.sub,
        aten.sub.Scalar: arithmetic.sub,
        aten.rsub.Scalar: arithmetic.rsub,
        aten.rsub.Tensor: arithmetic.rsub,
        aten.mul.Tensor: arithmetic.mul,
        aten.mul.Scalar: arithmetic.mul,
        aten.div.Tensor: arithmetic.div,
        aten.div.Scalar: arithmetic.div,
        aten.neg.default: arithmetic.neg,
        aten.dropout.default: activation.dropout,
        aten.clone.default: shape.passthrough,
        aten.alias.default: shape.passthrough,
        aten.detach.default: shape.passthrough,
        aten.softmax.int: activation.softmax,
        aten._softmax.default: activation.aten_softmax,
        aten.sym_size.int: shape.tensor_size,
        operator.getitem: shape.getitem,
        # transformers
        aten.layer_norm.default: attention.aten_layer_norm,
        aten.gelu.default: attention.gelu,
        aten.silu.default: attention.silu,
        aten.matmul.default: attention.matmul,
        aten.bmm.default: attention.bmm,
        aten.scaled_dot_product_attention.default: attention.aten_sdpa,
        aten.transpose.int: layout.transpose,
        aten.permute.default: layout.permute,
        aten.t.default: layout.t,
        aten.select.int: layout.select,
        aten.slice.Tensor: layout.aten_slice,
        aten.narrow.default: layout.narrow,
        aten.unbind.int: layout.unbind,
        aten.chunk.default: layout.chunk,
        aten.split.Tensor: layout.split,
        aten.split_with_sizes.default: layout.aten_split_with_sizes,
        aten.unsqueeze.default: layout.unsqueeze,
        aten.squeeze.default: layout.squeeze,
        aten.squeeze.dim: layout.squeeze,
        aten.squeeze.dims: layout.squeeze,
        aten.unflatten.int: layout.unflatten,
        aten.expand.default: layout.aten_expand,
        aten.contiguous.default: shape.passthrough,
    }


ATEN_CONVERTERS: dict[Any, Converter] = _build_aten_table()
