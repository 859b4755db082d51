"""Constant folding: nodes whose inputs are all constants are evaluated while importing.

``FOLDERS`` evaluates the ops exporters use to compute shapes with numpy, keeping the
:data:`~snnc.frontends.onnx.helpers.BATCH` sentinel intact through index ops and turning
arithmetic on it into :data:`~snnc.frontends.onnx.helpers.UNKNOWN`;
:func:`fold_with_reference` evaluates anything else with ``onnx.reference``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from snnc.errors import UnsupportedOpError
from snnc.frontends.onnx.converters import unsupported_hint
from snnc.frontends.onnx.helpers import BATCH, UNKNOWN, BatchConstant, node_label, reject, slice_shape, symbolic_reject
from snnc.frontends.onnx.trust import MAX_ELEMENTS, too_big

# Each folder evaluates one node on constant inputs (numpy arrays, None for absent
# optional inputs) and returns its outputs. Shape tensors may hold the BATCH sentinel.
Folder = Callable[[onnx.NodeProto, list[Any], dict[str, Any]], list[np.ndarray]]


def _symbolic(a: np.ndarray) -> np.ndarray:
    """Boolean mask of the elements that stand for (or were computed from) the batch size."""
    a = np.asarray(a)
    if a.dtype.kind not in "iuf":
        return np.zeros(a.shape, bool)
    return (a == BATCH) | (a == UNKNOWN)


def _require_static(node: onnx.NodeProto, *arrays: Any) -> None:
    for arr in arrays:
        if arr is not None and np.any(_symbolic(arr)):
            raise symbolic_reject(node, "this tensor's size depends on the batch size; snnc needs per-sample shapes known at import")


def _fold_constant(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    if len(node.attribute) != 1:
        raise reject(node, "a Constant needs exactly one value attribute")
    a = node.attribute[0]
    if a.name == "value":
        return [numpy_helper.to_array(a.t)]
    if a.name == "sparse_value":
        return [fold_with_reference(node, inputs)[0]]
    v = attrs[a.name]
    dtype = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}.get(a.name)
    if dtype is None:
        raise reject(node, f"Constant with {a.name} is not a numeric tensor")
    return [np.array(v, dtype=dtype)]


def _fold_shape(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [slice_shape(np.array(np.shape(inputs[0]), np.int64), attrs)]


def _fold_gather(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    data, idx = inputs
    return [np.take(data, idx.astype(np.int64), axis=attrs.get("axis", 0))]


def _fold_unsqueeze(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    data, axes = inputs
    out_rank = data.ndim + axes.size
    norm = sorted(int(a) + out_rank if a < 0 else int(a) for a in axes.reshape(-1))
    return [np.expand_dims(data, tuple(norm))]


def _fold_squeeze(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    data = inputs[0]
    axes = inputs[1] if len(inputs) > 1 else None
    if axes is None:
        return [np.squeeze(data)]
    return [np.squeeze(data, tuple(int(a) for a in axes.reshape(-1)))]


def _fold_concat(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [np.concatenate([i for i in inputs if i is not None], axis=attrs["axis"])]


def _fold_slice(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    data, starts, ends = inputs[:3]
    axes = inputs[3] if len(inputs) > 3 and inputs[3] is not None else np.arange(starts.size)
    steps = inputs[4] if len(inputs) > 4 and inputs[4] is not None else np.ones(starts.size, np.int64)
    _require_static(node, starts, ends)
    index = [slice(None)] * data.ndim
    # Python slices clamp out-of-range bounds the way ONNX does (INT64_MAX means "to the end").
    for s, e, ax, st in zip(starts.reshape(-1), ends.reshape(-1), axes.reshape(-1), steps.reshape(-1)):
        index[int(ax)] = slice(int(s), int(e), int(st))
    return [data[tuple(index)]]


def _fold_cast(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(attrs["to"])
    if np.any(_symbolic(x)):
        # Keep the sentinels intact: a narrower type could not hold them.
        dtype = np.int64 if np.dtype(dtype).kind in "iu" else (np.float64 if np.dtype(dtype).kind == "f" else dtype)
    return [np.asarray(x).astype(dtype)]


def _fold_cast_like(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [np.asarray(inputs[0]).astype(np.asarray(inputs[1]).dtype)]


def _arith(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Folder:
    def fold(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
        a, b = np.asarray(inputs[0]), np.asarray(inputs[1])
        out = np.asarray(fn(a, b)).astype(np.result_type(a, b), copy=False)
        mask = np.broadcast_to(_symbolic(a), out.shape) | np.broadcast_to(_symbolic(b), out.shape)
        if mask.any():
            # batch * 16 and the like: a value that no longer is the batch size itself.
            out = out.astype(np.int64 if out.dtype.kind in "iu" else np.float64)
            out[mask] = UNKNOWN
        return [out]

    return fold


def _onnx_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        # ONNX integer division truncates toward zero (numpy's // floors).
        q = np.floor_divide(a, np.where(b == 0, 1, b))
        return q + ((q < 0) & (q * b != a))
    return a / b


def _fold_range(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    _require_static(node, *inputs)
    start, limit, delta = (np.asarray(i).reshape(()) for i in inputs)
    return [np.arange(start, limit, delta, dtype=np.result_type(start, limit, delta))]


def _fold_equal(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    a, b = np.asarray(inputs[0]), np.asarray(inputs[1])
    # The batch size is >= 1: comparing it with 0 or negative numbers (exporters check for
    # "-1"/"0" placeholders) is decidable; comparing it with a positive size is not.
    shape = np.broadcast_shapes(a.shape, b.shape)
    for s, o in ((a, b), (b, a)):
        if np.any(np.broadcast_to(_symbolic(s), shape) & np.broadcast_to((o > 0) & ~_symbolic(o), shape)):
            raise symbolic_reject(node, "compares the batch size with a number; the result is not known at import")
    return [np.equal(a, b)]


def _fold_where(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [np.where(*inputs)]


def _fold_constant_of_shape(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    _require_static(node, inputs[0])
    value = numpy_helper.to_array(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
    return [np.full(tuple(int(d) for d in inputs[0].reshape(-1)), value.reshape(-1)[0], dtype=value.dtype)]


def _fold_expand(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[Any]:
    x, shape = inputs
    dims = [int(d) for d in np.asarray(shape).reshape(-1)]
    x = np.asarray(x)
    rank = max(x.ndim, len(dims))
    batch_first = len(dims) == rank and dims[0] == BATCH and (x.ndim < rank or x.shape[0] == 1)
    if batch_first and not np.any(_symbolic(np.array(dims[1:]))):
        # A constant broadcast to the batch (cls.expand(B, -1, -1)): one sample, repeated.
        sample = np.broadcast_shapes(x.shape, (1, *dims[1:]))
        if math.prod(sample) > MAX_ELEMENTS:
            what = f"the output of Expand node {node_label(node)!r} (computed while folding constants), per sample"
            raise too_big(what, math.prod(sample), sample)
        return [BatchConstant(np.broadcast_to(x, sample)[0].copy())]
    _require_static(node, shape)
    return [np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(dims))).copy()]


def _fold_reshape(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, shape = inputs
    _require_static(node, shape)
    target = [int(d) for d in shape.reshape(-1)]
    if not attrs.get("allowzero", 0):
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return [np.reshape(x, target)]


def _fold_flatten(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    axis = attrs.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return [x.reshape(math.prod(x.shape[:axis]), -1)]


def _fold_transpose(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [np.transpose(inputs[0], attrs.get("perm"))]


def _fold_identity(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [inputs[0]]


def _fold_dropout(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [inputs[0], np.ones(np.shape(inputs[0]), bool)]


FOLDERS: dict[str, Folder] = {
    "Add": _arith(np.add),
    "Cast": _fold_cast,
    "CastLike": _fold_cast_like,
    "Concat": _fold_concat,
    "Constant": _fold_constant,
    "ConstantOfShape": _fold_constant_of_shape,
    "Div": _arith(_onnx_div),
    "Dropout": _fold_dropout,
    "Equal": _fold_equal,
    "Expand": _fold_expand,
    "Flatten": _fold_flatten,
    "Gather": _fold_gather,
    "Identity": _fold_identity,
    "Mul": _arith(np.multiply),
    "Range": _fold_range,
    "Reshape": _fold_reshape,
    "Shape": _fold_shape,
    "Slice": _fold_slice,
    "Squeeze": _fold_squeeze,
    "Sub": _arith(np.subtract),
    "Transpose": _fold_transpose,
    "Unsqueeze": _fold_unsqueeze,
    "Where": _fold_where,
}


def fold_with_reference(node: onnx.NodeProto, inputs: list[Any]) -> list[np.ndarray]:
    """Evaluate a node on constants with onnx's reference implementation (the fallback for
    ops not in ``FOLDERS``)."""
    from onnx.reference import ReferenceEvaluator

    if any(i is not None and np.any(_symbolic(i)) for i in inputs):
        raise symbolic_reject(node, "this op computes on the batch size; snnc cannot fold it")
    feeds = {name: arr for name, arr in zip(node.input, inputs) if name}
    try:
        outputs = ReferenceEvaluator(node).run(None, feeds)
    except Exception as exc:  # the reference implementation raises arbitrary types
        raise UnsupportedOpError(
            node.op_type,
            node_label(node),
            f"all its inputs are constant but snnc could not evaluate it ({type(exc).__name__}: {exc}); {unsupported_hint(node.op_type)}",
        ) from exc
    return [np.asarray(o) for o in outputs]
