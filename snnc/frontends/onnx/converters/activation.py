"""Activations and value-preserving ops: Relu, Clip (a bounded ReLU), Gelu (opset 20),
Softmax (over one axis, inside the network or at an output), LayerNormalization (over the
last axis), ArgMax (output post-processing canonicalize strips), Dropout, Identity, Cast and
CastLike. Element-wise ops keep a layout view's layout (:mod:`snnc.frontends.onnx.layout`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx

from snnc.errors import DataError
import snnc.frontends.onnx.layout as layout
from snnc.frontends.onnx.helpers import FLOAT_TYPES, Tensor, node_attrs, node_label, normalize_axis, reject
from snnc.frontends.onnx.layout import Laid
from snnc.frontends.onnx.patterns import elementwise, layer_norm
from snnc.frontends.onnx.trust import type_name
from snnc.ir.graph import Value

if TYPE_CHECKING:
    from snnc.frontends.onnx.importer import Importer


def convert_relu(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    return elementwise(ctx, node, ctx.laid(node), "relu")


def convert_gelu(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    """Gelu (opset 20): ``gelu`` with its ``approximate`` ("none" or "tanh")."""
    approximate = node_attrs(node).get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise reject(node, f"approximate={approximate!r}; ONNX Gelu has 'none' and 'tanh'")
    return elementwise(ctx, node, ctx.laid(node), "gelu", {"approximate": approximate})


def convert_layer_norm(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    """LayerNormalization (opset 17) over the last axis: ``layer_norm``."""
    a = node_attrs(node)
    eps = float(a.get("epsilon", 1e-5))
    if not math.isfinite(eps) or eps < 0:
        raise DataError(
            f"LayerNormalization node {node_label(node)!r} has epsilon {eps}; it must be a finite number >= 0 (re-export the model)"
        )
    x = ctx.laid(node)
    rank = x.rank if isinstance(x, Laid) else len(x.shape) + 1
    axis = normalize_axis(int(a.get("axis", -1)), rank, node)
    scale = ctx.const(node, 1, "scale")
    bias = ctx.optional_const(node, 2, "bias")
    return layer_norm(ctx, node, x, eps, scale, bias, axes=list(range(axis, rank)))


def convert_clip(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    x = ctx.laid(node)
    lo = ctx.optional_const(node, 1, "min")
    hi = ctx.optional_const(node, 2, "max")
    if lo is None or lo.size != 1 or float(lo.reshape(-1)[0]) != 0.0:
        got = "absent (no lower bound)" if lo is None else f"{lo.reshape(-1)[:4].tolist()}"
        raise reject(node, f"only Clip with min 0 (a bounded ReLU) is supported; min is {got}")
    mx = None
    if hi is not None:
        if hi.size != 1:
            raise reject(node, "max must be a scalar")
        m = float(hi.reshape(-1)[0])
        if math.isnan(m):
            raise DataError(f"Clip node {node_label(node)!r}: its max ({node.input[2]!r}) is NaN; the model's constants are corrupt")
        if m <= 0:
            raise reject(node, f"max {m} <= min 0 makes the output constant")
        mx = None if math.isinf(m) else m
    attrs = {} if mx is None else {"max": mx}
    return elementwise(ctx, node, x, "relu", attrs)


def _identity(ctx: Importer, node: onnx.NodeProto, op: str = "identity") -> Value | Laid:
    x = ctx.laid(node)
    return x if isinstance(x, Laid) else ctx.emit(op, [x], node)


def convert_identity(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    return _identity(ctx, node)


def convert_cast(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    to = node_attrs(node).get("to")
    if to not in FLOAT_TYPES:
        name = type_name(to) if isinstance(to, int) else "?"
        raise reject(node, f"Cast to {name} of a tensor computed from the input is not supported (snnc computes in float32)")
    # snnc computes in float32 throughout, so a cast between float types is the identity.
    return _identity(ctx, node)


def convert_cast_like(ctx: Importer, node: onnx.NodeProto) -> Tensor:
    """CastLike(data, target): only ``target``'s element type matters, and tensors computed
    from the input are float32 in snnc. The dynamo exporter casts constants like
    activations this way (e.g. the zero bias of a bias-free conv)."""
    data, target = ctx.lookup(node.input[0], laid=True), ctx.lookup(node.input[1], laid=True)
    dtype = np.dtype(np.float32) if isinstance(target, (Value, Laid)) else np.asarray(getattr(target, "value", target)).dtype
    if isinstance(data, np.ndarray):
        return data.astype(dtype)
    if dtype.kind != "f":
        raise reject(node, f"CastLike to {dtype} of a tensor computed from the input is not supported (snnc computes in float32)")
    return data if isinstance(data, Laid) else ctx.emit("identity", [data], node)


def convert_dropout(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    training = ctx.optional_const(node, 2, "training_mode")
    if training is not None and bool(training.reshape(-1)[0]):
        raise reject(node, "Dropout in training mode is random; export the model in eval mode")
    return _identity(ctx, node, "dropout")


# What may read a Softmax / ArgMax output that canonicalize strips: nothing but ops that
# pass a value through on its way to a graph output.
_PASS_THROUGH = {"Identity", "Dropout", "ArgMax", "Softmax"}


def _postproc_only(ctx: Importer, node: onnx.NodeProto) -> onnx.NodeProto | None:
    """None when ``node``'s output reaches graph outputs only through pass-through ops (so
    it is output post-processing), else the first node it feeds that does compute."""
    stack, seen = [node.output[0]], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for reader in ctx.consumers.get(name, []):
            passes = reader.op_type in _PASS_THROUGH or (reader.op_type == "Cast" and node_attrs(reader).get("to") in FLOAT_TYPES)
            if not passes or not reader.output:
                return reader
            stack.append(reader.output[0])
    return None


def _require_final(ctx: Importer, node: onnx.NodeProto, what: str) -> None:
    reader = _postproc_only(ctx, node)
    if reader is not None:
        raise reject(
            node,
            f"{what} is only supported as the final output post-processing (snnc removes it: the spiking network's readout "
            f"gives the same argmax), but here it feeds {reader.op_type} node {node_label(reader)!r} inside the network. "
            f"Remove the {what} from inside the model, or move it after the last layer",
        )


def convert_softmax(ctx: Importer, node: onnx.NodeProto) -> Value | Laid:
    """Softmax over one axis (opset >= 13: that axis alone), at an output (post-processing)
    or inside the network (attention weights)."""
    x = ctx.laid(node)
    view = layout.of(x, f"Softmax node {node_label(node)!r}")
    axis = normalize_axis(int(node_attrs(node).get("axis", -1)), view.rank, node)
    group = view.axes()[axis]
    if view.holds_batch(group):
        raise reject(node, f"Softmax over axis {axis} of a tensor of shape {view.describe()}, which holds the batch axis")
    if isinstance(x, Value):
        return ctx.emit("softmax", [x], node, attrs={"axis": axis})
    if axis == view.rank - 1:
        view = layout.prepare_last(ctx, node, view, "Softmax")
        v_axis = len(view.value.shape)
    elif len([a for a in group if a != 0]) == 1:
        v_axis = next(a for a in group if a != 0)  # (a floating batch of 1 aside)
    else:
        view = layout.front_form(ctx, node, view)
        v_axis = view.axes()[axis][-1]
    y = ctx.emit("softmax", [view.value], node, attrs={"axis": v_axis})
    return layout.finish(Laid(y, view.order, view.groups, view.origin))


def convert_argmax(ctx: Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    a = node_attrs(node)
    if a.get("select_last_index", 0):
        raise reject(node, "select_last_index=1 is not supported")
    axis = normalize_axis(int(a.get("axis", 0)), len(x.shape) + 1, node)
    if axis == 0:
        raise reject(node, "ArgMax over the batch axis")
    _require_final(ctx, node, "argmax")
    return ctx.emit("argmax", [x], node, attrs={"axis": axis, "keepdims": bool(a.get("keepdims", 1))})
