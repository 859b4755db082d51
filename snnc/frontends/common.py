"""What the ONNX and torch frontends share: node emission, unsupported-op hints, and the
per-sample algebra both need (constants aligned to an activation, SAME pads, ``-1`` sizes).

Both frontends name a failure after *their* op (``Conv`` / ``call_module nn.Conv2d``) and
node, but map the same failure to the same error class:

* :func:`emit_node` adds an IR node and infers its per-sample shape with
  :func:`snnc.ir.shapes.infer_node_shape`. An op configuration the IR cannot represent is an
  :class:`~snnc.errors.UnsupportedOpError`; inputs whose shapes do not fit the op are a
  :class:`~snnc.errors.DataError` (the model does not fit its per-sample input shape).
* A model with more than one input, or an output that does not depend on the input, is a
  :class:`~snnc.errors.DataError` (:func:`too_many_inputs`, :func:`constant_output`).
* :func:`unsupported_hint` says why an op without a converter cannot be converted, from one
  table of op kinds that serves ONNX op types and torch call targets alike.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from snnc.errors import DataError, UnsupportedOpError, VerificationError
from snnc.ir.graph import Graph, Shape, Value
from snnc.ir.ops import shapes_only
from snnc.ir.shapes import ShapeMismatch, infer_node_shape

log = logging.getLogger(__name__)

# No tensor an ONNX file declares or folding computes may have more elements than this
# (2**28 float32 values are 1 GiB), and no per-sample activation of an imported network
# more than MAX_ACTIVATION (256 MiB of float32; a 1024x1024 image with 64 channels).
MAX_ELEMENTS = 2**28
MAX_ACTIVATION = 2**26


# ===================================================================== emission
def emit_node(
    graph: Graph,
    op: str,
    inputs: Sequence[Value],
    *,
    attrs: dict[str, Any] | None,
    params: dict[str, np.ndarray] | None,
    name: str,
    op_type: str,
    node: str,
) -> Value:
    """Add IR node ``name`` for the frontend's op ``op_type`` at node ``node`` and give its
    output its per-sample shape right away.

    Shapes are needed while importing (shape queries, reshapes and flattens read them), and
    inferring them with the op's own shape rule makes every IR restriction (e.g. pooling
    pads) surface here, as an error naming the model's op and node rather than a later
    verifier error naming an IR node the user never wrote.
    """
    ir = graph.add_node(op, list(inputs), attrs, params, name)
    try:
        # On torch's meta device: nothing is allocated before the size is known to be sane.
        with shapes_only():
            ir.output.shape = infer_node_shape(ir)
    except VerificationError as exc:
        # infer_node_shape prefixes the IR node; the op's own message already names it.
        detail = str(exc).strip().splitlines()[0].removeprefix(f"node {ir.name!r} ({ir.op}): ")
        raise UnsupportedOpError(op_type, node, f"snnc's {op!r} op cannot represent this configuration ({detail})") from exc
    except ShapeMismatch as exc:
        got = ", ".join(str(list(s)) for s in exc.shapes)
        model_input = ", ".join(str(list(v.shape)) for v in graph.inputs)
        raise DataError(
            f"{op_type} at node {node!r} cannot take input(s) of per-sample shape {got}: {exc.detail.rstrip('.')}. "
            f"Check that the model's per-sample input shape (input_shape, without the batch dimension; here {model_input}) "
            "is the one its layers expect"
        ) from None
    size = math.prod(ir.output.shape)
    if size > MAX_ACTIVATION:
        raise DataError(
            f"{op_type} at node {node!r} would produce a per-sample tensor of {size:,} elements (shape {list(ir.output.shape)}), "
            f"more than snnc's limit of {MAX_ACTIVATION:,}; check the layer's attributes (the model is malformed or far too large)"
        )
    log.debug("%s %r -> %r %s", op_type, node, ir, list(ir.output.shape))
    return ir.output


# ====================================================== the model's interface
# How many inputs a model takes and what it returns are the user's to change, like an input
# shape the layers do not fit: both frontends report them as a DataError, not as an op.
def too_many_inputs(model: str, names: Sequence[str]) -> DataError:
    """The error for a ``model`` (``"ONNX"``, ``"torch"``) whose tensor inputs are ``names``."""
    listed = ", ".join(repr(n) for n in names) or "none"
    return DataError(f"the {model} model has {len(names)} inputs ({listed}); snnc imports models with exactly one input tensor")


def constant_output(output: str) -> DataError:
    """The error for a model output (described by ``output``) computed without the input."""
    return DataError(f"model output {output} does not depend on the model input; snnc cannot import a constant output")


# ================================================================== hints
# What kind of op an unsupported op type is, from its lower-cased name tokens, so that one
# table serves ONNX op types ("LeakyRelu", "com.microsoft::Gelu") and torch call targets
# ("call_function torch.sigmoid", "call_module nn.LSTM", "call_function aten.gelu.default").
_ACTIVATIONS = frozenset(
    {
        "sigmoid", "tanh", "gelu", "silu", "elu", "selu", "celu", "leaky_relu", "leakyrelu", "prelu", "rrelu",
        "hardswish", "hardsigmoid", "mish", "softplus", "softsign", "logsigmoid", "tanhshrink", "thresholdedrelu",
        "exp", "log", "erf",
    }
)  # fmt: skip
_RECURRENT = frozenset({"lstm", "gru", "rnn", "lstmcell", "grucell", "rnncell", "loop", "scan", "if"})
_PRODUCTS = frozenset({"matmul", "bmm", "einsum", "multiheadattention", "scaled_dot_product_attention"})


def unsupported_hint(op_type: str, *, relu: str, supported: str) -> str:
    """What the user can do about ``op_type``, which no converter handles.

    ``relu`` is how the frontend spells the ReLU to use instead of another activation;
    ``supported`` summarises what the frontend converts.
    """
    tokens = {t.lower() for t in re.split(r"[^A-Za-z0-9_]+", op_type)}
    # The op itself, without the torch frontend's node kind ("call_function torch.sigmoid").
    subject = op_type.split(" ")[-1]
    if tokens & _ACTIVATIONS:
        why = (
            f"{subject} is a non-linearity snnc has no spiking form for: neurons approximate ReLU ({relu}), and GELU, SiLU, "
            "softmax and LayerNorm convert as temporal ops (docs/transformers.md). Replace it by one of those and fine-tune "
            "the network"
        )
    elif tokens & _RECURRENT:
        why = f"{subject} is a recurrent layer or control flow (recurrence), which has no counterpart in snnc's feed-forward IR"
    elif tokens & _PRODUCTS:
        why = (
            f"{subject}: snnc converts products of two activations written as matrix products (matmul, bmm, @: attention's "
            "Q K^T and A V), not in this form"
        )
    elif any("norm" in t for t in tokens):
        why = (
            "only BatchNorm with running statistics (it folds into the preceding layer) and LayerNorm over the last axis "
            "are supported"
        )
    else:
        why = f"snnc has no converter for {subject}; replace it by supported ops or move it out of the model"
    return f"{why}, or open an issue with the model attached. snnc supports: {supported}"


# ======================================================== per-sample algebra
def per_sample_constant(c: np.ndarray, shape: Shape) -> np.ndarray | None:
    """Constant ``c`` (broadcast against a full ``[batch, *shape]`` tensor) as a float32
    array that broadcasts element-wise over the per-sample ``shape``, or None if it cannot.

    A leading batch axis of size 1 (a ``[1, C, 1, 1]`` normalisation buffer) is dropped; a
    constant that varies over the batch, or would broadcast the activation to a bigger
    shape, is not element-wise. The result keeps its own rank (at most ``len(shape)``).
    """
    c = np.asarray(c)
    if c.ndim > len(shape) + 1:
        return None
    if c.ndim == len(shape) + 1:
        if c.shape[0] != 1:
            return None  # varies over the batch dimension
        c = c[0]
    aligned = c.shape[::-1], tuple(shape)[::-1]
    if any(cd not in (1, sd) for cd, sd in zip(*aligned)):
        return None
    return c.astype(np.float32)


def same_pads(
    in_spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], *, odd_at_end: bool
) -> list[int]:
    """Explicit pads ``[begin..., end...]`` giving output size ``ceil(input / stride)``.

    ONNX's SAME_UPPER and torch's ``padding='same'`` (stride 1) put the odd padding element
    at the end, ONNX's SAME_LOWER at the beginning.
    """
    begin, end = [], []
    for size, k, s, d in zip(in_spatial, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        b, e = (small, large) if odd_at_end else (large, small)
        begin.append(b)
        end.append(e)
    return begin + end


def resolve_sizes(sizes: Sequence[int], numel: int) -> list[int] | None:
    """A reshape's per-sample ``sizes`` (at most one ``-1``, standing for what is left) as
    positive sizes whose product is ``numel``, or None when they cannot be: a reshape that
    does not keep each sample's elements together would move them between samples."""
    out = [int(d) for d in sizes]
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known <= 0 or numel % known:
            return None
        out[out.index(-1)] = numel // known
    if math.prod(out) != numel or any(d <= 0 for d in out):
        return None
    return out


def adaptive_pool_windows(in_sizes: Sequence[int], out_sizes: Sequence[int]) -> tuple[list[int], list[int]] | None:
    """Adaptive average pooling from ``in_sizes`` to ``out_sizes`` as an average pool of
    kernel = stride ``k`` followed by a nearest upsampling by ``s`` per spatial axis, returned
    as ``(k, s)``; None when some axis has windows of different lengths. Window ``o`` of an
    axis covers inputs ``floor(o * i / n)`` to ``ceil((o + 1) * i / n)`` (exclusive) for input
    size ``i`` and output size ``n``: when ``n`` divides ``i`` these are the ``i / n`` inputs
    from ``o * i / n`` on (k = i / n, s = 1); when ``i`` divides ``n`` it is the single input
    ``o // (n / i)`` (k = 1, s = n / i)."""
    kernel, scales = [], []
    for i, n in zip(in_sizes, out_sizes):
        if i % n == 0:
            kernel.append(i // n)
            scales.append(1)
        elif n % i == 0:
            kernel.append(1)
            scales.append(n // i)
        else:
            return None
    return kernel, scales
