"""ONNX node helpers used by the loader, the importer, the converters and the folders:
attribute decoding, node labels and IR names, the batch-size sentinels of folded shape
tensors, axis and spatial-layout checks, and Conv/pool window attributes."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from snnc.errors import DataError, UnsupportedOpError
from snnc.frontends.common import same_pads
from snnc.ir.graph import Shape, Value

# Sentinels for folded shape tensors (see the package docstring). Both are exactly
# representable in int64, float64 and float32, and no real dimension is ever this large.
BATCH = 2**40 + 2**20
UNKNOWN = 2**40 + 2**21



class BatchDependent:
    """A tensor computed from the batch size in a way folding cannot represent (e.g.
    ``Range(0, batch)``). It stays in the importer's environment so that a consumer able to
    evaluate it for concrete batch sizes can prove it per-sample (see
    :meth:`Importer.eval_at_batch <snnc.frontends.onnx.importer.Importer.eval_at_batch>`);
    any other use raises ``error``, the fold's own refusal."""

    def __init__(self, error: Exception):
        self.error = error


class BatchFlat:
    """``Reshape(x, [-1])`` of an IR value ``x``: the whole batch flattened to one axis
    (``[batch * S]``, S the per-sample size). Only a Reshape restoring the batch axis or a
    Gather whose indices pick whole samples may read it; any other use raises ``error``."""

    def __init__(self, value: Value, error: Exception):
        self.value = value
        self.error = error


class BatchConstant:
    """A constant repeated over the batch: ``Expand(c, [batch, ...])`` of an initializer (a
    ViT's class token ``cls.expand(B, -1, -1)``). Every sample equals ``value`` (the
    per-sample shape); Concat with a computed tensor makes it ``concat_constant``, and
    arithmetic treats it as a per-sample constant."""

    def __init__(self, value: np.ndarray):
        self.value = np.asarray(value)

    @property
    def full(self) -> np.ndarray:
        """The tensor as one sample with its batch axis: ``[1, *value.shape]``."""
        return self.value[None]


Tensor = Value | np.ndarray  # what an ONNX tensor name maps to while importing (or a BatchDependent / BatchFlat / BatchConstant / Laid)
Source = str | os.PathLike | onnx.ModelProto

DEFAULT_DOMAINS = ("", "ai.onnx")
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def node_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """Node attributes as Python values (strings decoded)."""
    out: dict[str, Any] = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        out[a.name] = v
    return out


def node_label(node: onnx.NodeProto) -> str:
    """How errors name an ONNX node: its name, else its first output."""
    return node.name or (node.output[0] if node.output else node.op_type)


def sanitize(name: str) -> str:
    """An IR-friendly name: '/' becomes '.', anything but [A-Za-z0-9_.-] becomes '_'."""
    name = name.strip().strip("/").replace("/", ".").replace("::", "_")
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)
    name = re.sub(r"_{2,}", "_", name).strip("._")
    if name and name[0].isdigit():
        name = "v" + name
    return name


def ir_name(node: onnx.NodeProto) -> str:
    """The IR name for a node's value: its output name unless that is machine-made.

    torch's legacy exporter names outputs ``/layer/Conv_output_0`` (→ ``layer.Conv``) or
    plain numbers (→ the node name); the dynamo exporter and skl2onnx use readable output
    names (``conv2d``, ``add_result``).
    """
    out = node.output[0] if node.output else ""
    base = out.removesuffix("_output_0")
    if not base or base.isdigit() or base.startswith("onnx::"):
        base = node.name or node.op_type.lower()
    return sanitize(base) or node.op_type.lower()


def reject(node: onnx.NodeProto, hint: str) -> UnsupportedOpError:
    """The error for a node whose configuration snnc cannot convert (raise it)."""
    return UnsupportedOpError(node.op_type, node_label(node), hint)


def normalize_axis(axis: int, rank: int, node: onnx.NodeProto) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise reject(node, f"axis {axis} is out of range for rank {rank}")
    return a


def full(shape: Shape) -> str:
    """``[batch, 3, 8, 8]``: a per-sample shape written with its batch dimension."""
    return "[" + ", ".join(["batch", *map(str, shape)]) + "]"


def check_spatial(node: onnx.NodeProto, x: Value, nd: int | None = None) -> int:
    """The number of spatial axes of ``x`` (channel-first), which the IR supports for 1 and 2."""
    nd = len(x.shape) - 1 if nd is None else nd
    if len(x.shape) - 1 != nd or nd not in (1, 2):
        raise reject(node, f"snnc supports 1-D and 2-D spatial layouts [batch, C, L] / [batch, C, H, W]; this input is {full(x.shape)}")
    return nd


def window_attrs(node: onnx.NodeProto, x: Value, kernel: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """strides, dilations and explicit pads of a Conv/pool node (auto_pad resolved)."""
    a = node_attrs(node)
    nd = len(kernel)
    strides = list(a.get("strides") or [1] * nd)
    dilations = list(a.get("dilations") or [1] * nd)
    auto_pad = a.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = same_pads(x.shape[1:], kernel, strides, dilations, odd_at_end=auto_pad == "SAME_UPPER")
    elif auto_pad == "VALID":
        pads = [0] * (2 * nd)
    elif auto_pad == "NOTSET":
        pads = list(a.get("pads") or [0] * (2 * nd))
    else:
        raise reject(node, f"unknown auto_pad {auto_pad!r}")
    check_window(node, kernel, strides, dilations, pads)
    return strides, dilations, pads


def check_window(
    node: onnx.NodeProto, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], pads: Sequence[int], **more: Sequence[int]
) -> None:
    """Window attributes in their valid ranges (one entry per spatial axis, two pads per
    axis; kernel, strides and dilations >= 1, pads >= 0): anything else is a malformed node."""
    nd = len(kernel)
    checks = [("kernel_shape", kernel, nd, 1), ("strides", strides, nd, 1), ("dilations", dilations, nd, 1), ("pads", pads, 2 * nd, 0)]
    checks += [(name, values, nd, 0) for name, values in more.items()]
    for name, values, length, low in checks:
        values = list(values)
        if len(values) != length or any(int(v) < low or int(v) > 2**31 - 1 for v in values):
            raise DataError(
                f"{node.op_type} node {node_label(node)!r}: {name} {values} is invalid (expected {length} value(s) >= {low} "
                f"for {nd} spatial axes); the model is malformed (re-export it)"
            )


def slice_shape(shape: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    """Shape's optional start/end attributes (opset 15) slice the shape vector."""
    start, end = attrs.get("start", 0), attrs.get("end")
    return shape[start:end]


# ======================================================= batch-dependent folds
class BatchSymbolic(UnsupportedOpError):
    """A fold that cannot be done because it computes on the batch size. The importer keeps
    the tensor as batch-dependent instead of failing at once: a consumer that can evaluate
    it for concrete batch sizes (a Gather of a whole-batch flatten) may still prove it
    per-sample; any other consumer raises this error."""


def symbolic_reject(node: onnx.NodeProto, hint: str) -> BatchSymbolic:
    return BatchSymbolic(node.op_type, node_label(node), hint)


def is_symbolic(a: Any) -> bool:
    """Whether ``a`` holds the BATCH / UNKNOWN sentinels (a folded shape tensor)."""
    if a is None:
        return False
    a = np.asarray(a)
    return a.dtype.kind in "iuf" and bool(np.any((a == BATCH) | (a == UNKNOWN)))
