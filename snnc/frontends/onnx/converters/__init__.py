"""ONNX op converters, grouped by family, and the table ``CONVERTERS`` that maps an ONNX
op type to its converter.

Each converter maps one ONNX node (whose inputs are not all constant) onto IR nodes through
:meth:`Importer.emit <snnc.frontends.onnx.importer.Importer.emit>` and returns the IR value
(or, for Shape, the folded constant) of the node's first output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import onnx

from snnc.frontends.common import unsupported_hint as _common_hint
from snnc.frontends.onnx.converters import activation, arithmetic, conv, pooling, resize, shape
from snnc.frontends.onnx.helpers import Tensor

if TYPE_CHECKING:
    from snnc.frontends.onnx.importer import Importer

Converter = Callable[["Importer", onnx.NodeProto], Tensor]

CONVERTERS: dict[str, Converter] = {
    "Add": arithmetic.convert_binary,
    "ArgMax": activation.convert_argmax,
    "AveragePool": pooling.convert_avg_pool,
    "BatchNormalization": conv.convert_batch_norm,
    "Cast": activation.convert_cast,
    "CastLike": activation.convert_cast_like,
    "Clip": activation.convert_clip,
    "Concat": shape.convert_concat,
    "Conv": conv.convert_conv,
    "ConvTranspose": conv.convert_conv_transpose,
    "Div": arithmetic.convert_binary,
    "Dropout": activation.convert_dropout,
    "Flatten": shape.convert_flatten,
    "Gelu": activation.convert_gelu,
    "Gemm": conv.convert_gemm,
    "Gather": shape.convert_gather,
    "GlobalAveragePool": pooling.convert_global_avg_pool,
    "Identity": activation.convert_identity,
    "LayerNormalization": activation.convert_layer_norm,
    "MatMul": conv.convert_matmul,
    "MaxPool": pooling.convert_max_pool,
    "Mul": arithmetic.convert_binary,
    "Pad": shape.convert_pad,
    "ReduceMean": pooling.convert_reduce_mean,
    "Relu": activation.convert_relu,
    "Reshape": shape.convert_reshape,
    "Resize": resize.convert_resize,
    "Shape": shape.convert_shape,
    "Slice": shape.convert_slice,
    "Softmax": activation.convert_softmax,
    "Split": shape.convert_split,
    "Squeeze": shape.convert_squeeze,
    "Sub": arithmetic.convert_binary,
    "Transpose": shape.convert_transpose,
    "Unsqueeze": shape.convert_unsqueeze,
    "Upsample": resize.convert_upsample,
}


# Ops imported only inside a pattern (snnc.frontends.onnx.patterns): what to do when one
# stands alone.
_PATTERN_ONLY = {
    "Erf": "Erf is imported only inside GELU, x * 0.5 * (1 + erf(x / sqrt(2))) (nn.GELU, or the Gelu op of opset 20)",
    "Tanh": "Tanh is imported only inside tanh-approximated GELU, x * 0.5 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))",
    "Sigmoid": "Sigmoid is imported only inside SiLU, x * sigmoid(x) (nn.SiLU)",
    "Pow": "Pow of a computed tensor is imported only inside a decomposed LayerNormalization (Pow 2) or tanh GELU (Pow 3)",
    "Sqrt": "Sqrt of a computed tensor is imported only inside a decomposed LayerNormalization over the last axis",
    "Reciprocal": "Reciprocal of a computed tensor is imported only inside a decomposed LayerNormalization over the last axis",
}


def unsupported_hint(op_type: str) -> str:
    """What the user can do about an ONNX op no converter handles."""
    hint = _common_hint(
        op_type,
        relu="Relu, or Clip with min 0",
        supported=f"{', '.join(sorted(CONVERTERS))} (and any op on constants, which is folded)",
    )
    pattern = _PATTERN_ONLY.get(op_type)
    return f"{pattern}. {hint}" if pattern else hint
