"""The ONNX file is untrusted input: everything the importer reads is checked before use.

:func:`check_tensors` runs before any tensor is turned into an array (so before any
allocation): every initializer, ``Constant`` value and tensor attribute has a supported
element type, non-negative dims whose element count is bounded (:data:`MAX_ELEMENTS`), and
stored data whose length matches its dims in whichever field holds it (``raw_data``, the
typed fields, or an external file). External data is allowed only in regular files inside
the model's own directory (a relative ``location`` with no ``..``, no absolute path, no
symlink leading out), with ``offset + length`` inside the file — the layout
``torch.onnx.export`` and ``onnx.save(..., save_as_external_data=True)`` write for large
models. A ``ModelProto`` whose tensors still point at external files is refused (its
directory is unknown).

:func:`check_graph` runs onnx's own checker node by node (arity, required attributes,
attribute types, against each op's schema; nodes of unregistered ops are left to the
converters, which name what is unsupported), checks that every graph output is produced
by a node, an initializer or the input. ONNX's strict shape inference is *not* a gate: it
rejects inference graphs snnc imports (a BatchNormalization declaring unused training
outputs) and would pre-empt the converters' more specific messages; instead every
converted node's shape is inferred by snnc's own rules as it is emitted, and per-sample
activations are bounded by :data:`MAX_ELEMENTS`.

Every failure is a :class:`~snnc.errors.DataError` naming the tensor or node and saying
what to do. Values are checked where they are used: :func:`non_finite` finds NaN / inf in
weights (the importer refuses a layer whose parameters are not finite, naming the
initializer).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, checker

from snnc.errors import DataError
from snnc.frontends.common import MAX_ELEMENTS
from snnc.frontends.onnx.helpers import DEFAULT_DOMAINS, node_label

# element type -> (bytes per element in raw_data, the typed field holding one value per element)
_STORAGE: dict[int, tuple[int, str]] = {
    TensorProto.FLOAT: (4, "float_data"),
    TensorProto.DOUBLE: (8, "double_data"),
    TensorProto.FLOAT16: (2, "int32_data"),
    TensorProto.BFLOAT16: (2, "int32_data"),
    TensorProto.INT8: (1, "int32_data"),
    TensorProto.UINT8: (1, "int32_data"),
    TensorProto.INT16: (2, "int32_data"),
    TensorProto.UINT16: (2, "int32_data"),
    TensorProto.INT32: (4, "int32_data"),
    TensorProto.UINT32: (4, "uint64_data"),
    TensorProto.INT64: (8, "int64_data"),
    TensorProto.UINT64: (8, "uint64_data"),
    TensorProto.BOOL: (1, "int32_data"),
}
_TYPED_FIELDS = ("float_data", "double_data", "int32_data", "int64_data", "uint64_data", "string_data")


def type_name(elem_type: int) -> str:
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"unknown type {elem_type}"


def too_big(what: str, count: int, shape: object = None, limit: int = MAX_ELEMENTS) -> DataError:
    """The error for a tensor of ``count`` elements (above ``limit``)."""
    dims = f" (shape {list(shape)})" if shape is not None else ""
    return DataError(
        f"{what} would have {count:,} elements{dims}, more than snnc's limit of {limit:,}; "
        "the model is malformed or far larger than snnc converts"
    )


def element_count(dims: object, what: str) -> int:
    """The number of elements of ``dims`` (all >= 0), bounded by :data:`MAX_ELEMENTS`,
    computed without allocating anything."""
    dims = [int(d) for d in dims]  # type: ignore[union-attr]
    if any(d < 0 for d in dims):
        raise DataError(f"{what} has negative dims {dims}; the model is malformed (re-export it)")
    count = math.prod(dims)
    if count > MAX_ELEMENTS:
        raise too_big(what, count, dims)
    return count


# ================================================================== tensors
def _all_tensors(graph: onnx.GraphProto, where: str = ""):
    """(description, TensorProto) of every tensor stored in the graph (and subgraphs)."""
    for t in graph.initializer:
        yield f"initializer {t.name!r}{where}", t
    for sp in graph.sparse_initializer:
        yield f"sparse initializer {sp.values.name!r} (values){where}", sp.values
        yield f"sparse initializer {sp.values.name!r} (indices){where}", sp.indices
    for node in graph.node:
        for a in node.attribute:
            label = f"attribute {a.name!r} of {node.op_type} node {node_label(node)!r}{where}"
            if a.HasField("t"):
                yield label, a.t
            for i, t in enumerate(a.tensors):
                yield f"{label} (tensor {i})", t
            if a.HasField("sparse_tensor"):
                yield f"{label} (values)", a.sparse_tensor.values
                yield f"{label} (indices)", a.sparse_tensor.indices
            if a.HasField("g"):
                yield from _all_tensors(a.g, f" in the subgraph of node {node_label(node)!r}")
            for g in a.graphs:
                yield from _all_tensors(g, f" in a subgraph of node {node_label(node)!r}")


def check_tensors(model: onnx.ModelProto, base_dir: Path | None) -> bool:
    """Check every stored tensor's type, dims and data length (see the module docstring).
    Returns whether some tensor keeps its data in an external file (already checked)."""
    external = False
    for what, t in _all_tensors(model.graph):
        external |= check_tensor(t, what, base_dir)
    return external


def check_tensor(t: TensorProto, what: str, base_dir: Path | None) -> bool:
    """Check one stored tensor; returns whether its data is external."""
    if t.data_type not in _STORAGE:
        raise DataError(
            f"{what} has element type {type_name(t.data_type)}; snnc reads float, integer and bool tensors only "
            "(the model is malformed, or uses a type snnc does not support)"
        )
    count = element_count(t.dims, what)
    itemsize, field = _STORAGE[t.data_type]
    if t.data_location == TensorProto.EXTERNAL:
        _check_external(t, what, base_dir, count * itemsize)
        return True
    filled = [f for f in _TYPED_FIELDS if len(getattr(t, f))]
    if t.raw_data:
        if filled:
            raise DataError(f"{what} stores its data twice (raw_data and {filled[0]}); the model is malformed")
        stored, need, unit = len(t.raw_data), count * itemsize, "bytes"
    elif filled:
        if filled != [field]:
            raise DataError(
                f"{what} of type {type_name(t.data_type)} keeps its values in {', '.join(filled)} instead of {field}; "
                "the model is malformed"
            )
        stored, need, unit = len(getattr(t, field)), count, "values"
    else:
        stored, need, unit = 0, count, "values"
    if stored != need:
        raise DataError(
            f"{what} declares dims {list(t.dims)} ({need:,} {unit} of {type_name(t.data_type)}) but stores {stored:,} {unit}; "
            "the model file is corrupt or was modified (re-export it)"
        )
    return False


def _check_external(t: TensorProto, what: str, base_dir: Path | None, nbytes: int) -> None:
    info = {e.key: e.value for e in t.external_data}
    if base_dir is None:
        raise DataError(
            f"{what} keeps its data in an external file ({info.get('location', '?')!r}) that was not loaded; "
            "give snnc the model's file path so the data is read from beside it"
        )
    location = info.get("location", "")
    parts = Path(location).parts
    if not location or Path(location).is_absolute() or ".." in parts or "\x00" in location or os.path.splitdrive(location)[0]:
        raise DataError(
            f"{what} keeps its data at {location!r}; snnc reads external data only from files in the model's own "
            "directory (a relative path without '..'). Move the data beside the model and re-save it"
        )
    root = base_dir.resolve()
    path = (root / location).resolve()
    if root not in path.parents:
        raise DataError(f"{what}: its external data file {location!r} leads outside the model's directory (a symlink?); snnc refuses it")
    if not path.is_file():
        raise DataError(f"{what} keeps its data in {location!r}, which is not a file beside the model; copy it there")
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise DataError(f"{what}: its external data offset/length {info.get('offset')!r}/{info.get('length')!r} are not integers") from None
    size = path.stat().st_size
    if length is None:
        length = size - offset
    if offset < 0 or length < 0 or offset + length > size:
        raise DataError(
            f"{what}: its external data (offset {offset}, length {length}) lies outside {location!r} ({size} bytes); "
            "the data file is truncated or does not belong to this model"
        )
    if length != nbytes:
        raise DataError(
            f"{what} declares dims {list(t.dims)} ({nbytes:,} bytes) but its external data holds {length:,} bytes; "
            "the data file does not belong to this model"
        )


# ================================================================ folded sizes
def _shape_of(a: Any) -> tuple[int, ...]:
    return tuple(np.shape(a)) if a is not None else ()


def _dims(a: Any) -> list[int]:
    return [int(d) for d in np.asarray(a).reshape(-1)]


def output_size(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> int | None:
    """The number of elements the folded ``node`` would allocate, computed from its inputs'
    shapes and values without allocating (None when it is not larger than its inputs).
    Ill-formed inputs raise ValueError / IndexError / ZeroDivisionError, which the
    importer reports as a malformed node."""
    op = node.op_type
    if op == "ConstantOfShape":
        return math.prod(_dims(inputs[0]))
    if op == "Expand":
        return math.prod(np.broadcast_shapes(_shape_of(inputs[0]), tuple(_dims(inputs[1]))))
    if op == "Tile":
        reps = _dims(inputs[1])
        shape = _shape_of(inputs[0])
        if len(reps) != len(shape) or any(r < 0 for r in reps):
            raise ValueError(f"{len(reps)} repeats for a tensor of rank {len(shape)}")
        return math.prod(d * r for d, r in zip(shape, reps))
    if op == "Range":
        start, limit, delta = (float(np.asarray(i).reshape(-1)[0]) for i in inputs[:3])
        if delta == 0 or not all(math.isfinite(v) for v in (start, limit, delta)):
            raise ValueError(f"Range({start}, {limit}, {delta}) is not finite")
        return max(0, math.ceil((limit - start) / delta))
    if op in ("Add", "Sub", "Mul", "Div", "Where", "Equal", "Pow", "Max", "Min", "Mod", "And", "Or", "Greater", "Less"):
        return math.prod(np.broadcast_shapes(*(_shape_of(i) for i in inputs if i is not None)))
    if op == "Gather":
        data, idx = inputs[:2]
        axis = int(attrs.get("axis", 0))
        shape = _shape_of(data)
        axis = axis + len(shape) if axis < 0 else axis
        if not 0 <= axis < len(shape):
            raise ValueError(f"axis {attrs.get('axis', 0)} is out of range for rank {len(shape)}")
        return math.prod(shape) // max(shape[axis], 1) * int(np.size(idx))
    if op == "Pad" and len(inputs) > 1 and inputs[1] is not None:
        pads = _dims(inputs[1])
        shape = _shape_of(inputs[0])
        half = len(pads) // 2
        if half != len(shape):
            return None  # with axes: left to the evaluation
        return math.prod(max(0, d + pads[i] + pads[half + i]) for i, d in enumerate(shape))
    if op in ("Resize", "Upsample"):
        shape = _shape_of(inputs[0])
        scales = inputs[2] if op == "Resize" and len(inputs) > 2 else (inputs[1] if len(inputs) > 1 else None)
        sizes = inputs[3] if op == "Resize" and len(inputs) > 3 else None
        if sizes is not None and np.size(sizes):
            return math.prod(_dims(sizes))
        if scales is not None and np.size(scales):
            f = [float(v) for v in np.asarray(scales).reshape(-1)]
            if not all(math.isfinite(v) for v in f):
                raise ValueError("non-finite scales")
            return math.prod(max(0, math.floor(d * v)) for d, v in zip(shape, f))
        return None
    if op == "OneHot":
        return int(np.size(inputs[0])) * int(np.asarray(inputs[1]).reshape(-1)[0])
    return None


def non_finite(arr: np.ndarray) -> int:
    """How many elements of a float array are NaN or infinite (0 for other dtypes)."""
    a = np.asarray(arr)
    if a.dtype.kind not in "fc":
        return 0
    return int(a.size - np.count_nonzero(np.isfinite(a)))


# ==================================================================== graph
def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.HasField("g") or len(a.graphs) for a in node.attribute)


def check_graph(model: onnx.ModelProto) -> None:
    """onnx's checker node by node and graph outputs produced (see the module docstring)."""
    graph = model.graph
    opsets = {o.domain: o.version for o in model.opset_import}
    ctx = checker.C.CheckerContext()
    ctx.ir_version = model.ir_version
    ctx.opset_imports = opsets
    _check_names(model)
    for node in graph.node:
        label = f"{node.op_type} node {node_label(node)!r}"
        if not node.output or not any(node.output):
            raise DataError(f"{label} has no outputs; the model is malformed (re-export it)")
        domain = "" if node.domain in DEFAULT_DOMAINS else node.domain
        version = opsets.get(domain, opsets.get("ai.onnx")) if domain == "" else opsets.get(domain)
        try:
            schema = onnx.defs.get_schema(node.op_type, version, domain) if version is not None else None
        except (onnx.defs.SchemaError, TypeError, OverflowError):
            schema = None
        if schema is None or schema.deprecated or _has_subgraph(node):
            # An op onnx does not know (or no longer checks): the converters say whether
            # snnc supports it.
            continue
        try:
            checker.check_node(node, ctx)
        except (checker.ValidationError, onnx.defs.SchemaError) as exc:
            detail = _first_line(exc)
            how = "re-export the model"
            if node.op_type == "Split" and "num_outputs" in detail:
                # torch's dynamo exporter writes opset 18+ and converts down when asked for
                # less, keeping Split's num_outputs (an opset 18 attribute).
                how = "re-export the model with opset_version 18 or newer (torch's dynamo exporter keeps num_outputs when converting down)"
            raise DataError(f"{label} is malformed: {detail} (checked with onnx.checker); {how}") from None
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output if o}
    for out in graph.output:
        if out.name not in defined:
            raise DataError(
                f"graph output {out.name!r} is not produced by any node, initializer or input; the model is malformed (re-export it)"
            )


def _check_names(model: onnx.ModelProto) -> None:
    """Every name snnc reads is text (protobuf hands invalid UTF-8 back as bytes)."""
    graph = model.graph
    fields = [("graph name", graph.name)]
    fields += [("opset domain", o.domain) for o in model.opset_import]
    fields += [("graph input name", v.name) for v in graph.input]
    fields += [("graph output name", v.name) for v in graph.output]
    fields += [("initializer name", t.name) for t in graph.initializer]
    for i, node in enumerate(graph.node):
        fields += [(f"node {i}'s {what}", v) for what, v in (("name", node.name), ("op type", node.op_type), ("domain", node.domain))]
        fields += [(f"node {i}'s input", v) for v in node.input]
        fields += [(f"node {i}'s output", v) for v in node.output]
        fields += [(f"node {i}'s attribute name", a.name) for a in node.attribute]
    for what, value in fields:
        if not isinstance(value, str):
            raise DataError(f"the ONNX model's {what} is not valid UTF-8 text ({bytes(value)[:40]!r}); the file is corrupt")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:1])
    return text.rstrip(".") or type(exc).__name__
