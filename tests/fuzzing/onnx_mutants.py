"""Seeded one-change mutants of an ONNX model, and how snnc takes each of them.

    from fuzzing.onnx_mutants import base_model, mutants, classify

    for desc, data in mutants(seed=0, n=200, base=base_model()):
        path.write_bytes(data)
        outcome = classify(path)   # "converted" | "imported" | "refused:<ErrorClass>" | "crash:<ExceptionClass>"

Each mutant changes one thing: an attribute value (negative, zero, huge, NaN, a wrong
string, removed), an initializer's dims, data type or values (NaN/inf, truncated data), a
node's op type, a dropped node, swapped / duplicated / removed / rewired inputs, a renamed
output, the input's declared shape, the opset, or the serialized bytes (bit flips,
truncation). The mutants are a pure function of ``(seed, n, base)``.

:func:`classify` runs a file through :func:`snnc.frontends.import_model` and, when it
imports, through :func:`snnc.convert` (4 calibration samples, T=4, no layer-wise
calibration). ``"imported"`` means it imported but its per-sample input is too large to
convert within a fuzz budget. Anything but ``crash:`` is an acceptable outcome.
"""

from __future__ import annotations

import copy
import math
import os
import random
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["base_model", "classify", "mutants", "KINDS"]


# ================================================================ base model
def base_model(seed: int = 0) -> onnx.ModelProto:
    """A small CNN in the shape exporters write, built with onnx.helper (no torch needed):
    input normalisation (Sub/Div), Conv + BatchNormalization + Relu, MaxPool, a residual
    Conv + Add, AveragePool, Clip (ReLU6), a Shape/Gather/Unsqueeze/Concat/Reshape flatten,
    Gemm, MatMul + Add, Softmax. Input ``x`` is ``[N, 1, 8, 8]``; output ``y`` ``[N, 3]``."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.5) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    inits = {
        "mean": np.array([[[[0.5]]]], np.float32),
        "std": np.array([[[[0.25]]]], np.float32),
        "c1.w": w(4, 1, 3, 3),
        "c1.b": w(4),
        "bn.s": (1 + w(4, scale=0.1)),
        "bn.b": w(4, scale=0.1),
        "bn.m": w(4, scale=0.1),
        "bn.v": np.abs(1 + w(4, scale=0.1)),
        "c2.w": w(4, 4, 3, 3, scale=0.3),
        "c2.b": w(4),
        "zero": np.array(0.0, np.float32),
        "six": np.array(6.0, np.float32),
        "idx0": np.array(0, np.int64),
        "ax0": np.array([0], np.int64),
        "minus1": np.array([-1], np.int64),
        "fc.w": w(8, 16, scale=0.3),
        "fc.b": w(8),
        "out.w": w(8, 3, scale=0.3),
        "out.b": w(3),
    }
    N = helper.make_node
    nodes = [
        N("Sub", ["x", "mean"], ["xs"], name="norm_sub"),
        N("Div", ["xs", "std"], ["xn"], name="norm_div"),
        N("Conv", ["xn", "c1.w", "c1.b"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        N("BatchNormalization", ["c1", "bn.s", "bn.b", "bn.m", "bn.v"], ["bn"], name="bn1", epsilon=1e-5),
        N("Relu", ["bn"], ["r1"], name="relu1"),
        N("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        N("Conv", ["p1", "c2.w", "c2.b"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1], dilations=[1, 1], group=1),
        N("Relu", ["c2"], ["r2"], name="relu2"),
        N("Add", ["r2", "p1"], ["res"], name="residual"),
        N("AveragePool", ["res"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2], count_include_pad=0),
        N("Clip", ["p2", "zero", "six"], ["r3"], name="relu6"),
        N("Shape", ["r3"], ["shp"], name="shape"),
        N("Gather", ["shp", "idx0"], ["batch"], name="gather", axis=0),
        N("Unsqueeze", ["batch", "ax0"], ["batch1"], name="unsqueeze"),
        N("Concat", ["batch1", "minus1"], ["target"], name="concat", axis=0),
        N("Reshape", ["r3", "target"], ["flat"], name="flatten"),
        N("Gemm", ["flat", "fc.w", "fc.b"], ["fc"], name="fc", transB=1, alpha=1.0, beta=1.0),
        N("Relu", ["fc"], ["r4"], name="relu4"),
        N("MatMul", ["r4", "out.w"], ["mm"], name="out_matmul"),
        N("Add", ["mm", "out.b"], ["logits"], name="out_bias"),
        N("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "fuzz_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8, producer_name="snnc-fuzz")
    onnx.checker.check_model(model, full_check=True)
    return model


# ================================================================= mutations
_INTS = [-(2**40), -(2**31), -3, -1, 0, 1, 2, 3, 5, 7, 64, 2**31 - 1, 2**40, 10**12]
_FLOATS = [float("nan"), float("inf"), float("-inf"), -1.0, 0.0, 1e-30, 0.5, 2.0, 1e30]
_STRINGS = ["", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "garbage", "linear", "nearest", "\xff"]
_DTYPES = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 21, 99]
_OPS = [
    "Relu", "Conv", "Add", "Sub", "Mul", "Div", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape",
    "Gemm", "MatMul", "Softmax", "Identity", "Sigmoid", "Transpose", "Concat", "Gather", "Clip", "BatchNormalization",
    "ConvTranspose", "Resize", "Pad", "ReduceMean", "Squeeze", "Unsqueeze", "Shape", "Expand", "Tile",
    "ConstantOfShape", "Range", "Cast", "Dropout", "ArgMax", "Upsample", "Foo",
]  # fmt: skip


def _attr_mutation(m: onnx.ModelProto, r: random.Random) -> str:
    nodes = [n for n in m.graph.node if n.attribute]
    node = r.choice(nodes)
    a = r.choice(list(node.attribute))
    what = f"attr {node.name}.{a.name}"
    choice = r.random()
    if choice < 0.12:
        node.attribute.remove(a)
        return f"{what}: removed"
    if a.type == onnx.AttributeProto.INTS:
        if a.ints and choice < 0.8:
            i = r.randrange(len(a.ints))
            v = r.choice(_INTS)
            a.ints[i] = v
            return f"{what}[{i}] = {v}"
        if choice < 0.9 and a.ints:
            a.ints.pop()
            return f"{what}: one element fewer"
        a.ints.append(r.choice(_INTS))
        return f"{what}: one element more"
    if a.type == onnx.AttributeProto.INT:
        a.i = r.choice(_INTS)
        return f"{what} = {a.i}"
    if a.type == onnx.AttributeProto.FLOAT:
        a.f = r.choice(_FLOATS)
        return f"{what} = {a.f}"
    if a.type == onnx.AttributeProto.STRING:
        a.s = r.choice(_STRINGS).encode("utf-8", "surrogateescape")
        return f"{what} = {a.s!r}"
    # Another type: make it a wrong-typed one.
    node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(a.name, "text"))
    return f"{what}: made a string"


def _add_attr(m: onnx.ModelProto, r: random.Random) -> str:
    node = r.choice(list(m.graph.node))
    name = r.choice(["auto_pad", "group", "axis", "kernel_shape", "strides", "pads", "dilations", "transA", "allowzero", "bogus"])
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    value = r.choice([r.choice(_INTS), [r.choice(_INTS)] * r.randint(1, 4), r.choice(_STRINGS), r.choice(_FLOATS)])
    node.attribute.append(helper.make_attribute(name, value))
    return f"attr {node.name}.{name} set to {value!r}"


def _init_dims(m: onnx.ModelProto, r: random.Random) -> str:
    t = r.choice(list(m.graph.initializer))
    choice = r.random()
    if choice < 0.5 and t.dims:
        i = r.randrange(len(t.dims))
        t.dims[i] = r.choice([0, 1, t.dims[i] + 1, max(t.dims[i] - 1, 0), 10**6, 10**12, -1, -(2**40)])
        return f"init {t.name}.dims[{i}] = {t.dims[i]}"
    if choice < 0.75:
        t.dims.append(r.choice([1, 2, 10**12]))
        return f"init {t.name}: dim appended -> {list(t.dims)}"
    if t.dims:
        t.dims.pop()
        return f"init {t.name}: last dim removed -> {list(t.dims)}"
    t.dims.extend([10**6, 10**6])
    return f"init {t.name}: dims [10^6, 10^6]"


def _init_dtype(m: onnx.ModelProto, r: random.Random) -> str:
    t = r.choice(list(m.graph.initializer))
    t.data_type = r.choice(_DTYPES)
    return f"init {t.name}.data_type = {t.data_type}"


def _init_data(m: onnx.ModelProto, r: random.Random) -> str:
    t = r.choice(list(m.graph.initializer))
    arr = numpy_helper.to_array(t).copy()
    choice = r.random()
    if choice < 0.4 and arr.size and arr.dtype.kind == "f":
        flat = arr.reshape(-1)
        flat[r.randrange(flat.size)] = r.choice([np.nan, np.inf, -np.inf])
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
        return f"init {t.name}: a non-finite value"
    if choice < 0.6 and arr.size:
        flat = arr.reshape(-1)
        flat[r.randrange(flat.size)] = r.choice([0, -1, 10**6, 2**30]) if arr.dtype.kind in "iu" else r.choice([0.0, -1e30, 1e30])
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
        return f"init {t.name}: an extreme value"
    if choice < 0.8 and t.raw_data:
        cut = r.randrange(len(t.raw_data))
        t.raw_data = t.raw_data[:cut]
        return f"init {t.name}: raw_data cut to {cut} bytes"
    if choice < 0.9:
        ext = onnx.StringStringEntryProto(key="location", value=r.choice(["../../etc/passwd", "/etc/passwd", "missing.bin"]))
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.append(ext)
        return f"init {t.name}: external data at {ext.value}"
    t.float_data.extend([1.0, 2.0])
    return f"init {t.name}: float_data added beside raw_data"


def _op_type(m: onnx.ModelProto, r: random.Random) -> str:
    node = r.choice(list(m.graph.node))
    old, node.op_type = node.op_type, r.choice(_OPS)
    return f"node {node.name}: op {old} -> {node.op_type}"


def _drop_node(m: onnx.ModelProto, r: random.Random) -> str:
    node = r.choice(list(m.graph.node))
    m.graph.node.remove(node)
    return f"node {node.name} dropped"


def _swap_inputs(m: onnx.ModelProto, r: random.Random) -> str:
    nodes = [n for n in m.graph.node if len(n.input) >= 2]
    node = r.choice(nodes)
    i, j = r.sample(range(len(node.input)), 2)
    node.input[i], node.input[j] = node.input[j], node.input[i]
    return f"node {node.name}: inputs {i} and {j} swapped"


def _dup_input(m: onnx.ModelProto, r: random.Random) -> str:
    node = r.choice(list(m.graph.node))
    if r.random() < 0.5 or len(node.input) < 2:
        node.input.append(node.input[0] if node.input else "x")
        return f"node {node.name}: input 0 duplicated at the end"
    i, j = r.sample(range(len(node.input)), 2)
    node.input[i] = node.input[j]
    return f"node {node.name}: input {i} replaced by input {j}"


def _remove_input(m: onnx.ModelProto, r: random.Random) -> str:
    nodes = [n for n in m.graph.node if n.input]
    node = r.choice(nodes)
    i = r.randrange(len(node.input))
    if r.random() < 0.5:
        del node.input[i]
        return f"node {node.name}: input {i} removed"
    node.input[i] = ""
    return f"node {node.name}: input {i} made empty"


def _rewire(m: onnx.ModelProto, r: random.Random) -> str:
    names = ["x"] + [t.name for t in m.graph.initializer] + [o for n in m.graph.node for o in n.output]
    nodes = [n for n in m.graph.node if n.input]
    node = r.choice(nodes)
    i = r.randrange(len(node.input))
    node.input[i] = r.choice(names)
    return f"node {node.name}: input {i} -> {node.input[i]}"


def _rename_output(m: onnx.ModelProto, r: random.Random) -> str:
    if r.random() < 0.3:
        m.graph.output[0].name = r.choice(["logits", "x", "nope", ""])
        return f"graph output renamed {m.graph.output[0].name!r}"
    node = r.choice(list(m.graph.node))
    i = r.randrange(len(node.output))
    node.output[i] = r.choice(["", "y", "x", "renamed", node.output[i] + "_2"])
    return f"node {node.name}: output {i} -> {node.output[i]!r}"


def _input_shape(m: onnx.ModelProto, r: random.Random) -> str:
    dims = m.graph.input[0].type.tensor_type.shape.dim
    choice = r.random()
    if choice < 0.7:
        i = r.randrange(len(dims))
        dims[i].dim_value = r.choice([0, 1, 2, 3, 7, 16, 10**6, 10**12])
        return f"input dim {i} = {dims[i].dim_value}"
    if choice < 0.85:
        dims.add().dim_value = 1
        return "input: a dim appended"
    del dims[-1]
    return "input: last dim removed"


def _opset(m: onnx.ModelProto, r: random.Random) -> str:
    m.opset_import[0].version = r.choice([1, 7, 11, 12, 13, 18, 21, 99])
    return f"opset {m.opset_import[0].version}"


def _elem_type(m: onnx.ModelProto, r: random.Random) -> str:
    t = r.choice([m.graph.input[0], m.graph.output[0]])
    t.type.tensor_type.elem_type = r.choice(_DTYPES)
    return f"{t.name} elem_type = {t.type.tensor_type.elem_type}"


def _constant_node(m: onnx.ModelProto, r: random.Random) -> str:
    """Replace a shape initializer by a Constant / ConstantOfShape / Expand / Tile / Range
    producing a declared size that is small, wrong or huge."""
    size = r.choice([1, 16, 10**6, 10**12])
    kind = r.choice(["Constant", "ConstantOfShape", "Expand", "Tile", "Range"])
    N = helper.make_node
    if kind == "Constant":
        t = TensorProto(name="cval", data_type=TensorProto.FLOAT, dims=[size])  # declared size, no data
        new = [N("Constant", [], ["six"], value=t)]
    elif kind == "ConstantOfShape":
        new = [N("Constant", [], ["cshape"], value=numpy_helper.from_array(np.array([size, size], np.int64))),
               N("ConstantOfShape", ["cshape"], ["six"])]  # fmt: skip
    elif kind == "Expand":
        new = [N("Constant", [], ["cshape"], value=numpy_helper.from_array(np.array([size, size], np.int64))),
               N("Expand", ["zero", "cshape"], ["six"])]  # fmt: skip
    elif kind == "Tile":
        new = [N("Constant", [], ["reps"], value=numpy_helper.from_array(np.array([size], np.int64))),
               N("Constant", [], ["vec"], value=numpy_helper.from_array(np.array([6.0], np.float32))),
               N("Tile", ["vec", "reps"], ["six"])]  # fmt: skip
    else:
        new = [N("Constant", [], ["lim"], value=numpy_helper.from_array(np.array(float(size), np.float32))),
               N("Range", ["zero", "lim", "six_step"], ["six"])]  # fmt: skip
        m.graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), "six_step"))
    for t in list(m.graph.initializer):
        if t.name == "six":
            m.graph.initializer.remove(t)
    for n in reversed(new):
        m.graph.node.insert(0, n)
    return f"Clip max from a {kind} of size {size}"


_PROTO_KINDS = {
    "attr": _attr_mutation,
    "add_attr": _add_attr,
    "init_dims": _init_dims,
    "init_dtype": _init_dtype,
    "init_data": _init_data,
    "op_type": _op_type,
    "drop_node": _drop_node,
    "swap_inputs": _swap_inputs,
    "dup_input": _dup_input,
    "remove_input": _remove_input,
    "rewire": _rewire,
    "rename_output": _rename_output,
    "input_shape": _input_shape,
    "opset": _opset,
    "elem_type": _elem_type,
    "constant_node": _constant_node,
}
_BYTE_KINDS = ("bit_flip", "truncate")
KINDS = (*_PROTO_KINDS, *_BYTE_KINDS)
# How often each kind is drawn (the structural kinds most often).
_WEIGHTS = {"attr": 4, "init_dims": 3, "init_dtype": 2, "init_data": 3, "op_type": 3, "bit_flip": 3, "add_attr": 2}


def _bytes_mutation(data: bytes, kind: str, r: random.Random) -> tuple[str, bytes]:
    buf = bytearray(data)
    if kind == "truncate":
        cut = r.randrange(len(buf))
        return f"truncated to {cut} of {len(buf)} bytes", bytes(buf[:cut])
    flips = r.randint(1, 8)
    for _ in range(flips):
        pos = r.randrange(len(buf))
        buf[pos] ^= 1 << r.randrange(8)
    return f"{flips} bit flip(s)", bytes(buf)


def mutants(seed: int, n: int, base: onnx.ModelProto) -> Iterator[tuple[str, bytes]]:
    """``n`` one-change mutants of ``base`` as ``(description, serialized model)``; the same
    ``(seed, n, base)`` always gives the same mutants (mutant ``i`` depends on ``seed`` and
    ``i`` only, so a failing one is reproduced by its index)."""
    kinds = list(KINDS)
    weights = [_WEIGHTS.get(k, 1) for k in kinds]
    data = base.SerializeToString()
    for i in range(n):
        r = random.Random(f"{seed}:{i}")
        kind = r.choices(kinds, weights)[0]
        if kind in _BYTE_KINDS:
            desc, out = _bytes_mutation(data, kind, r)
        else:
            m = copy.deepcopy(base)
            try:
                desc = _PROTO_KINDS[kind](m, r)
            except (IndexError, ValueError):  # nothing of that kind to mutate: another pick
                desc = _bytes_mutation(data, "bit_flip", r)[0]
                out = _bytes_mutation(data, "bit_flip", r)[1]
                yield f"#{i} bit_flip: {desc}", out
                continue
            out = m.SerializeToString()
        yield f"#{i} {kind}: {desc}", out


# ================================================================= classify
_MAX_FUZZ_INPUT = 2**16  # per-sample input elements converted during fuzzing


def classify(path: str | os.PathLike) -> str:
    """How snnc takes the ONNX file at ``path``: ``"converted"``, ``"imported"`` (imported;
    input too large to convert in a fuzz budget), ``"refused:<SnncError subclass>"`` or
    ``"crash:<exception class>"`` (a bug: any exception that is not an SnncError)."""
    import snnc
    from snnc.errors import SnncError
    from snnc.frontends import import_model

    try:
        imported = import_model(path)
        shape = tuple(imported.graph.inputs[0].shape)
        if math.prod(shape) > _MAX_FUZZ_INPUT:
            return "imported"
        calib = np.random.default_rng(0).random((4, *shape), dtype=np.float32)
        snnc.convert(str(path), calib=calib, timesteps=4, calibration="none", batch_size=4)
        return "converted"
    except SnncError as exc:
        return f"refused:{type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - the point is to classify everything
        return f"crash:{type(exc).__name__}"
