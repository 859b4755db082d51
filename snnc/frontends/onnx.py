"""Import ONNX models into the snnc IR (ANN stage).

The import runs in four steps, each a small function or method below:

1. **Load and check** the model: a readable ONNX file, default-domain opset >= 13, exactly
   one tensor input whose dimensions after the first (the batch) are static.
2. **Select outputs**: graph outputs that are label / probability post-processing (skl2onnx's
   ``ArgMax -> ArrayFeatureExtractor -> Cast`` label, ``ZipMap`` dictionaries, ...) are
   dropped with a notice; when a dropped output hangs off a float tensor that is not already
   an output, that tensor becomes an output instead. ``graph.meta["output_sources"]`` lists
   the ONNX tensor each IR output stands for, so :func:`onnx_reference` can evaluate exactly
   those tensors.
3. **Convert** the nodes the kept outputs depend on, in the model's (topological) order:

   * a node whose inputs are all constants is *folded*: evaluated with numpy (a small table
     of the ops exporters use to compute shapes), or by ``onnx.reference`` for anything else;
   * every other node goes through the per-op converter table ``CONVERTERS``, which maps it
     onto IR ops. An op missing from the table raises :class:`UnsupportedOpError`.
4. **Finish**: set the outputs, infer shapes, verify the ANN stage.

**The batch dimension in folded shapes.** IR shapes are per sample; ONNX tensors carry the
batch dimension first. ``Shape`` of a tensor computed from the input folds to
``[BATCH, *per_sample_shape]`` where ``BATCH`` is a sentinel integer standing for the
(symbolic) batch size. Index ops (Gather, Slice, Concat, Unsqueeze, Where, ...) move it
around unchanged, so a ``Reshape`` target built from it is recognised as keeping the batch
dimension first. Arithmetic on the sentinel (``batch * 16``) yields ``UNKNOWN``, which no
consumer accepts: such models really do mix samples of a batch.

**Algebra of the folds done while converting** (everything else maps one ONNX node to one
IR node):

* ``Gemm``: ``Y = alpha * A @ op(B) + beta * C`` with ``transA = 0`` is ``linear`` with
  ``weight = alpha * op(B).T`` and ``bias = beta * C`` (zeros when C is absent).
* ``MatMul(x, W)`` is ``linear`` with ``weight = W.T``; when its only reader is
  ``Add(·, b)`` with a constant ``b`` varying along the last axis only, ``b`` becomes the bias.
* ``x + c``, ``x - c``, ``c - x``, ``x * c``, ``x / c`` with a constant ``c`` are ``affine``
  with (scale, shift) = (1, c), (1, -c), (-1, c), (c, 0), (1/c, 0); ``x - y`` of two tensors is
  ``add`` with ``coeffs = [1, -1]``.
* ``Clip(x, 0, m)`` is ``relu`` with ``max = m`` (None when m is absent or infinite).
* ``ReduceMean`` over exactly the spatial axes is ``global_avg_pool``; ``Flatten`` (axis 1),
  ``Squeeze`` and ``Unsqueeze`` of non-batch axes are ``reshape``.
* ``Resize``/``Upsample`` is ``upsample`` only when, for every spatial axis, its coordinate
  transformation and rounding pick input index ``o // s`` for output index ``o`` (checked
  numerically, so every mode combination that is an integer nearest upsample is accepted).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.inliner
import torch
from onnx import numpy_helper

from snnc.errors import DataError, UnsupportedOpError, VerificationError
from snnc.ir.graph import Graph, Shape, Value
from snnc.ir.shapes import ShapeMismatch, infer_node_shape, infer_shapes
from snnc.ir.verify import verify

log = logging.getLogger(__name__)

__all__ = ["CONVERTERS", "MIN_OPSET", "import_onnx", "onnx_reference"]

MIN_OPSET = 13

# Sentinels for folded shape tensors (see the module docstring). Both are exactly
# representable in int64, float64 and float32, and no real dimension is ever this large.
BATCH = 2**40 + 2**20
UNKNOWN = 2**40 + 2**21

Tensor = Value | np.ndarray  # what an ONNX tensor name maps to while importing
Source = str | os.PathLike | onnx.ModelProto

_DEFAULT_DOMAINS = ("", "ai.onnx")
_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)

# Ops that only post-process a classifier's output into labels or dictionaries. Output
# chains made of these (plus the shape/cast glue in _LABEL_GLUE) are stripped on import.
_POSTPROC_OPS = {"ArgMax", "ArgMin", "ArrayFeatureExtractor", "ZipMap", "LabelEncoder", "CastMap", "TopK"}
_LABEL_GLUE = {"Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Concat"}

# What the extra outputs of multi-output ops are; used in "is used" errors.
_EXTRA_OUTPUTS = {
    "BatchNormalization": "the running mean/variance of training mode",
    "MaxPool": "the argmax indices",
    "Dropout": "the dropout mask",
}


# ===================================================================== public API
def import_onnx(source: Source) -> Graph:
    """Import an ONNX model as an ANN-stage IR graph (shapes inferred, verified).

    ``source`` is a path (external data next to the file is resolved) or a ``ModelProto``.
    ``graph.meta`` receives ``source`` (format, producer, opset), ``notices`` (what was
    stripped, folded or fused, human-readable) and ``output_sources`` (the ONNX tensor each
    graph output stands for; pass it to :func:`onnx_reference`).

    Raises :class:`DataError` for unreadable or unusable models and
    :class:`UnsupportedOpError` for ops snnc cannot represent.
    """
    model = _load(source)
    opset = _check_opset(model)
    if model.functions:
        # Local functions (emitted by some exporters) are expanded so each op is visible.
        model = onnx.inliner.inline_local_functions(model)
    importer = _Importer(model, opset)
    graph = importer.run()
    graph.meta["source"] = {
        "format": "onnx",
        "producer": model.producer_name,
        "producer_version": model.producer_version,
        "opset": opset,
    }
    graph.meta["notices"] = list(importer.notices)
    graph.meta["output_sources"] = list(importer.output_sources)
    for msg in importer.notices:
        log.info("import notice: %s", msg)
    infer_shapes(graph)
    verify(graph, "ann")
    log.info("imported ONNX model: %d IR nodes, %d parameters", len(graph.nodes), graph.num_params())
    return graph


def onnx_reference(
    source: Source,
    output_names: Sequence[str] | None = None,
    *,
    num_threads: int | None = None,
) -> Callable[[np.ndarray], list[np.ndarray]]:
    """An onnxruntime (CPU) evaluation of the model's tensors ``output_names``.

    ``output_names`` defaults to the graph outputs; pass ``graph.meta["output_sources"]`` of
    the imported graph to compare it with :func:`snnc.frontends.check.check_import`.
    Intermediate tensors are exposed as extra outputs on a copy of the model. Models whose
    batch dimension is fixed are run in chunks of that size (the last chunk zero-padded).
    """
    import onnxruntime as ort

    loaded = _load(source)
    names = [o.name for o in loaded.graph.output] if output_names is None else list(output_names)
    model = _with_outputs(loaded, names)
    # An unmodified file is given to onnxruntime by path: no 2 GB protobuf limit, and its
    # external data is found next to it.
    session_source = str(source) if model is loaded and not isinstance(source, onnx.ModelProto) else model.SerializeToString()
    opts = ort.SessionOptions()
    if num_threads:
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(session_source, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise DataError(f"onnxruntime cannot load the model: {exc}") from exc
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in session.get_inputs() if i.name not in initializers]
    if len(inputs) != 1:
        raise DataError(f"the model has {len(inputs)} inputs; snnc handles single-input models")
    inp = inputs[0]
    dtype = {"tensor(double)": np.float64, "tensor(float16)": np.float16}.get(inp.type, np.float32)
    fixed = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None

    def run(x: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(x, dtype=dtype)
        if fixed is None:
            return session.run(names, {inp.name: x})
        chunks: list[list[np.ndarray]] = [[] for _ in names]
        for start in range(0, len(x), fixed):
            xb = x[start : start + fixed]
            n = len(xb)
            if n < fixed:
                xb = np.concatenate([xb, np.zeros((fixed - n, *xb.shape[1:]), dtype)], axis=0)
            for acc, y in zip(chunks, session.run(names, {inp.name: xb})):
                acc.append(y[:n])
        return [np.concatenate(c, axis=0) for c in chunks]

    return run


# ============================================================ loading and checks
def _load(source: Source) -> onnx.ModelProto:
    """Read the model (resolving external data) and check it is an ONNX model at all."""
    if isinstance(source, onnx.ModelProto):
        model, where = source, "the given ModelProto"
    else:
        path = Path(source)
        where = repr(str(path))
        if not path.is_file():
            raise DataError(f"ONNX model file {where} does not exist")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # protobuf DecodeError, missing external data, ...
            raise DataError(
                f"{where} is not a readable ONNX model ({type(exc).__name__}: {exc}); "
                "expected a .onnx file written by torch.onnx.export, skl2onnx, tf2onnx or onnx.save"
            ) from exc
    if model.ir_version == 0 or not model.HasField("graph") or not model.graph.output:
        raise DataError(f"{where} is not an ONNX model (no graph or no outputs); expected a .onnx file written by an ONNX exporter")
    return model


def _check_opset(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS]
    if not versions:
        raise DataError("the ONNX model imports no default-domain opset; it cannot be interpreted")
    opset = max(versions)
    if opset < MIN_OPSET:
        raise DataError(
            f"the ONNX model uses opset {opset}; snnc imports opset {MIN_OPSET} or newer. Re-export it "
            f"(e.g. torch.onnx.export(..., opset_version=17)) or convert it with "
            f"onnx.version_converter.convert_version(model, {MIN_OPSET})"
        )
    return opset


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are exactly ``names`` (any tensors)."""
    current = [o.name for o in model.graph.output]
    if current == list(names):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    declared = {o.name: o for o in model.graph.output}
    del copy.graph.output[:]
    for name in names:
        # onnxruntime infers the type of an output declared by name only.
        copy.graph.output.append(declared.get(name) or onnx.ValueInfoProto(name=name))
    return copy


# ============================================================== output selection
def _elem_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Types of graph inputs, outputs and, when some output is not a declared float tensor,
    of the intermediates too (from ONNX shape inference, if it succeeds)."""
    graph = model.graph
    infos = list(graph.input) + list(graph.output) + list(graph.value_info)
    declared = {o.name: o.type for o in graph.output}
    if any(t.WhichOneof("value") != "tensor_type" or t.tensor_type.elem_type not in _FLOAT_TYPES for t in declared.values()):
        try:
            infos += list(onnx.shape_inference.infer_shapes(model).graph.value_info)
        except (onnx.shape_inference.InferenceError, RuntimeError, ValueError) as exc:  # heuristics take over
            log.debug("ONNX shape inference failed (%s); guessing tensor types", exc)
    return {i.name: i.type for i in infos}


def _is_float_tensor(name: str, types: dict[str, onnx.TypeProto], producer: dict[str, onnx.NodeProto]) -> bool:
    t = types.get(name)
    if t is not None and t.WhichOneof("value") is not None:
        if t.WhichOneof("value") != "tensor_type":
            return False
        return t.tensor_type.elem_type in _FLOAT_TYPES
    node = producer.get(name)
    if node is None:
        return True
    if node.op_type in _POSTPROC_OPS:
        return False
    if node.op_type == "Cast":
        return _attrs(node).get("to") in _FLOAT_TYPES
    return True


def _select_outputs(model: onnx.ModelProto) -> tuple[list[str], list[str], set[str]]:
    """The ONNX tensors the IR graph will output, notices about what was dropped, and the
    first output names of the stripped post-processing nodes."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output if o}
    constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    types = _elem_types(model)
    sources: list[str] = []
    notices: list[str] = []
    stripped: set[str] = set()
    kept = {o.name for o in graph.output if _is_float_tensor(o.name, types, producer)}
    for out in graph.output:
        name = out.name
        node = producer.get(name)
        if name in kept or (node is not None and node.op_type == "ArgMax"):
            # Float tensors are the model's outputs; a bare ArgMax stays an IR argmax
            # (canonicalize strips it later).
            if name not in sources:
                sources.append(name)
            continue
        chain, roots, nodes = _postproc_chain(name, types, producer, constants)
        if chain is None:
            # Not recognisable post-processing: convert it and let the converter explain.
            sources.append(name)
            continue
        msg = f"stripped output post-processing: output {name!r} ({' → '.join(chain)}) dropped"
        exposed = [r for r in roots if r not in kept and r not in sources]
        if exposed:
            msg += f"; its input tensor {', '.join(map(repr, exposed))} becomes a graph output"
        elif roots:
            msg += f"; its input tensor {', '.join(map(repr, roots))} is a graph output already"
        sources.extend(exposed)
        stripped.update(nodes)
        notices.append(msg)
    if not sources:
        raise DataError("the ONNX model has no tensor output snnc can import (every output is label post-processing)")
    return sources, notices, stripped


def _postproc_chain(
    name: str,
    types: dict[str, onnx.TypeProto],
    producer: dict[str, onnx.NodeProto],
    constants: set[str],
) -> tuple[list[str] | None, list[str], list[str]]:
    """Walk back from a non-float output through post-processing ops to float tensors.

    Returns the op types on the way (in data-flow order), the float tensors reached and the
    nodes' first output names, or ``(None, [], [])`` when the chain contains anything that is
    not post-processing.
    """
    chain: list[str] = []
    nodes: list[str] = []
    roots: list[str] = []
    stack, seen = [name], set()
    found_postproc = False
    while stack:
        t = stack.pop()
        if t in seen or t in constants:
            continue
        seen.add(t)
        node = producer.get(t)
        if node is None or (t != name and _is_float_tensor(t, types, producer) and node.op_type not in _POSTPROC_OPS):
            roots.append(t)
            continue
        if node.op_type not in _POSTPROC_OPS | _LABEL_GLUE:
            return None, [], []
        found_postproc |= node.op_type in _POSTPROC_OPS
        chain.append(node.op_type)
        nodes.append(node.output[0])
        stack.extend(i for i in node.input if i)
    if not found_postproc:
        return None, [], []
    return chain[::-1], roots[::-1], nodes


def _needed_nodes(graph: onnx.GraphProto, sources: Sequence[str]) -> list[onnx.NodeProto]:
    """The nodes the ``sources`` tensors depend on, in model order."""
    producer = {o: n for n in graph.node for o in n.output if o}
    needed: set[int] = set()
    stack, seen = list(sources), set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        node = producer.get(t)
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(i for i in node.input if i)
    return [n for n in graph.node if id(n) in needed]


# ====================================================================== importer
class _Importer:
    """Converts the needed nodes of one model; holds the name → tensor environment."""

    def __init__(self, model: onnx.ModelProto, opset: int):
        self.model = model
        self.opset = opset
        self.graph = Graph(_sanitize(model.graph.name) or "graph", stage="ann")
        self.env: dict[str, Tensor] = {}
        self.notices: list[str] = []
        self.output_sources: list[str] = []
        self.fixed_batch: int | None = None
        self.absorbed: set[int] = set()  # ids of nodes merged into an earlier converter's IR node
        self.fused: list[str] = []
        self.folded: Counter[str] = Counter()
        self.consumers: dict[str, list[onnx.NodeProto]] = {}

    # ------------------------------------------------------------------ driver
    def run(self) -> Graph:
        g = self.model.graph
        self.output_sources, notices, stripped = _select_outputs(self.model)
        self.notices += notices
        nodes = _needed_nodes(g, self.output_sources)
        needed = {id(n) for n in nodes}
        # Nodes nothing kept depends on (other than the stripped post-processing itself).
        skipped = [n for n in g.node if id(n) not in needed and n.op_type != "Constant" and n.output[0] not in stripped]
        for n in nodes:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        for init in g.initializer:
            self.env[init.name] = numpy_helper.to_array(init)
        self._add_input()
        for node in nodes:
            if id(node) in self.absorbed:
                continue
            if all(self._is_const(i) for i in node.input if i):
                self._fold(node)
            else:
                self._convert(node)
        self._set_outputs()
        self._summarise(skipped)
        return self.graph

    def _add_input(self) -> None:
        init = {t.name for t in self.model.graph.initializer}
        inputs = [i for i in self.model.graph.input if i.name not in init]
        if len(inputs) != 1:
            names = ", ".join(repr(i.name) for i in inputs) or "none"
            raise DataError(f"the ONNX model has {len(inputs)} inputs ({names}); snnc imports models with exactly one input tensor")
        inp = inputs[0]
        ttype = inp.type.tensor_type if inp.type.HasField("tensor_type") else None
        if ttype is None or not ttype.HasField("shape"):
            raise DataError(f"model input {inp.name!r} is not a tensor with a known shape; re-export the model with a fixed input shape")
        if ttype.elem_type not in _FLOAT_TYPES:
            raise DataError(
                f"model input {inp.name!r} has element type {onnx.TensorProto.DataType.Name(ttype.elem_type)}; "
                "snnc imports models with a floating-point input"
            )
        dims = list(ttype.shape.dim)
        if len(dims) < 2:
            raise DataError(f"model input {inp.name!r} has rank {len(dims)}; expected [batch, features...]")
        if dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            self.fixed_batch = int(dims[0].dim_value)
        shape = []
        for axis, d in enumerate(dims[1:], start=1):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                what = f"symbolic ({d.dim_param!r})" if d.dim_param else "unknown"
                raise DataError(
                    f"dimension {axis} of model input {inp.name!r} is {what}; snnc needs every dimension but the "
                    "batch (first) to be static. Re-export with a fixed input size (e.g. no dynamic_axes on it)"
                )
            shape.append(int(d.dim_value))
        self.env[inp.name] = self.graph.add_input(_sanitize(inp.name) or "input", shape)

    def _set_outputs(self) -> None:
        outs: list[Value] = []
        for name in self.output_sources:
            v = self.env.get(name)
            if not isinstance(v, Value):
                raise DataError(f"model output {name!r} does not depend on the model input (it is a constant); snnc cannot import it")
            outs.append(v)  # distinct: sources are distinct and every converter emits a new node
        self.graph.set_outputs(outs)

    def _summarise(self, skipped: list[onnx.NodeProto]) -> None:
        if self.folded:
            ops = ", ".join(f"{op}×{n}" for op, n in sorted(self.folded.items()))
            self.notices.append(f"folded {sum(self.folded.values())} node(s) computing constants ({ops})")
        if self.fused:
            self.notices.append(f"fused MatMul + Add into linear: {', '.join(self.fused)}")
        if skipped:
            ops = ", ".join(f"{op}×{n}" for op, n in sorted(Counter(n.op_type for n in skipped).items()))
            self.notices.append(f"ignored {len(skipped)} node(s) no kept output depends on ({ops})")

    # ------------------------------------------------------------ environment
    def _is_const(self, name: str) -> bool:
        return isinstance(self.lookup(name), np.ndarray)

    def lookup(self, name: str) -> Tensor:
        try:
            return self.env[name]
        except KeyError:
            raise DataError(
                f"tensor {name!r} is read before any node produces it: the ONNX graph is not topologically "
                "sorted or refers to an outer scope (check it with onnx.checker.check_model)"
            ) from None

    def value(self, node: onnx.NodeProto, index: int = 0) -> Value:
        """Input ``index`` of ``node``, which must be computed from the model input."""
        t = self.lookup(node.input[index])
        if not isinstance(t, Value):
            raise UnsupportedOpError(
                node.op_type,
                _node_label(node),
                f"its input {index} ({node.input[index]!r}) is a constant; snnc maps {node.op_type} only with that input "
                "computed from the model input (e.g. MatMul(x, W), not MatMul(W, x))",
            )
        return t

    def const(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
        """Input ``index`` of ``node``, which must be a constant."""
        if index >= len(node.input) or not node.input[index]:
            raise UnsupportedOpError(node.op_type, _node_label(node), f"its {what} (input {index}) is missing")
        t = self.lookup(node.input[index])
        if not isinstance(t, np.ndarray):
            raise UnsupportedOpError(
                node.op_type,
                _node_label(node),
                f"its {what} must be a constant (an initializer, or computed from constants and shapes only); "
                "here it depends on the model input",
            )
        return t

    def optional_const(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray | None:
        if index >= len(node.input) or not node.input[index]:
            return None
        return self.const(node, index, what)

    def is_graph_output(self, name: str) -> bool:
        return name in self.output_sources

    def single_reader(self, name: str) -> onnx.NodeProto | None:
        """The only node reading tensor ``name``, if it has exactly one and is no output."""
        readers = self.consumers.get(name, [])
        if len(readers) != 1 or self.is_graph_output(name):
            return None
        return readers[0]

    # ----------------------------------------------------------------- emission
    def emit(
        self,
        op: str,
        inputs: Sequence[Value],
        node: onnx.NodeProto,
        *,
        attrs: dict[str, Any] | None = None,
        params: dict[str, np.ndarray] | None = None,
        name: str | None = None,
    ) -> Value:
        """Add an IR node for ONNX ``node`` and compute its per-sample shape right away.

        Shapes are needed while importing (Shape, Reshape, Flatten read them); computing
        them with the op's own compute function also makes every IR restriction (e.g.
        pooling pads) surface here, as an error naming the ONNX node.
        """
        ir = self.graph.add_node(op, inputs, attrs, params, name or _ir_name(node))
        try:
            ir.output.shape = infer_node_shape(ir)
        except (VerificationError, ShapeMismatch) as exc:
            detail = getattr(exc, "detail", None) or str(exc)
            raise UnsupportedOpError(
                node.op_type, _node_label(node), f"snnc's {op!r} op cannot represent this configuration ({detail})"
            ) from exc
        log.debug("%s %r -> %r %s", node.op_type, _node_label(node), ir, list(ir.output.shape))
        return ir.output

    # ------------------------------------------------------------------ folding
    def _fold(self, node: onnx.NodeProto) -> None:
        inputs = [self.lookup(i) if i else None for i in node.input]
        folder = FOLDERS.get(node.op_type) if node.domain in _DEFAULT_DOMAINS else None
        if folder is not None:
            outputs = folder(node, inputs, _attrs(node))
        else:
            outputs = _fold_with_reference(node, inputs)
        for name, arr in zip(node.output, outputs):
            if name:
                self.env[name] = np.asarray(arr)
        self.folded[node.op_type] += 1

    # --------------------------------------------------------------- converting
    def _convert(self, node: onnx.NodeProto) -> None:
        if node.domain not in _DEFAULT_DOMAINS:
            op_type = f"{node.domain}::{node.op_type}"
            raise UnsupportedOpError(op_type, _node_label(node), _unsupported_hint(op_type))
        converter = CONVERTERS.get(node.op_type)
        if converter is None:
            raise UnsupportedOpError(node.op_type, _node_label(node), _unsupported_hint(node.op_type))
        for idx, out in enumerate(node.output[1:], start=1):
            if out and (out in self.consumers or self.is_graph_output(out)):
                what = _EXTRA_OUTPUTS.get(node.op_type, f"output {idx}")
                raise UnsupportedOpError(
                    node.op_type, _node_label(node), f"its output {out!r} ({what}) is used; snnc imports inference graphs only"
                )
        result = converter(self, node)
        if isinstance(result, np.ndarray):
            self.folded[node.op_type] += 1  # Shape of an IR value: a constant, too
        self.env[node.output[0]] = result


# ======================================================================= helpers
def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """Node attributes as Python values (strings decoded)."""
    out: dict[str, Any] = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        out[a.name] = v
    return out


def _node_label(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _sanitize(name: str) -> str:
    """An IR-friendly name: '/' becomes '.', anything but [A-Za-z0-9_.-] becomes '_'."""
    name = name.strip().strip("/").replace("/", ".").replace("::", "_")
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)
    name = re.sub(r"_{2,}", "_", name).strip("._")
    if name and name[0].isdigit():
        name = "v" + name
    return name


def _ir_name(node: onnx.NodeProto) -> str:
    """The IR name for a node's value: its output name unless that is machine-made.

    torch's legacy exporter names outputs ``/layer/Conv_output_0`` (→ ``layer.Conv``) or
    plain numbers (→ the node name); the dynamo exporter and skl2onnx use readable output
    names (``conv2d``, ``add_result``).
    """
    out = node.output[0] if node.output else ""
    base = out.removesuffix("_output_0")
    if not base or base.isdigit() or base.startswith("onnx::"):
        base = node.name or node.op_type.lower()
    return _sanitize(base) or node.op_type.lower()


_ACTIVATIONS = {
    "Sigmoid", "Tanh", "LeakyRelu", "PRelu", "Elu", "Selu", "Gelu", "HardSigmoid", "HardSwish",
    "Softplus", "Softsign", "Mish", "Celu", "ThresholdedRelu", "Exp", "Log", "Erf",
}  # fmt: skip
_RECURRENT = {"LSTM", "GRU", "RNN", "Loop", "Scan", "If"}


def _unsupported_hint(op_type: str) -> str:
    supported = ", ".join(sorted(CONVERTERS))
    if op_type in _ACTIVATIONS:
        why = (
            f"{op_type} is a non-ReLU non-linearity; rate-coded spiking neurons approximate ReLU "
            "(Relu, or Clip with min 0) only. Replace it by ReLU and fine-tune the network"
        )
    elif op_type in _RECURRENT:
        why = f"{op_type} (recurrence / control flow) has no counterpart in snnc's feed-forward IR"
    else:
        why = f"replace {op_type} by supported ops before exporting"
    return f"{why}, or open an issue with the model attached. snnc supports: {supported} (and any op on constants, which is folded)"


def _normalize_axis(axis: int, rank: int, node: onnx.NodeProto) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise UnsupportedOpError(node.op_type, _node_label(node), f"axis {axis} is out of range for rank {rank}")
    return a


def _per_sample_constant(c: np.ndarray, shape: Shape) -> np.ndarray | None:
    """Constant ``c`` (ONNX-broadcast against ``[batch, *shape]``) as a float32 array of the
    per-sample rank that broadcasts over ``shape`` without changing it; None if impossible."""
    c = np.asarray(c)
    if c.ndim > len(shape) + 1:
        return None
    if c.ndim == len(shape) + 1:
        if c.shape[0] != 1:
            return None  # varies over the batch dimension
        c = c[0]
    c = c.reshape((1,) * (len(shape) - c.ndim) + c.shape)
    if any(cd not in (1, sd) for cd, sd in zip(c.shape, shape)):
        return None
    return c.astype(np.float32)


def _auto_pads(
    auto_pad: str, in_spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> list[int]:
    """Explicit ONNX pads for SAME_UPPER / SAME_LOWER (output = ceil(input / stride))."""
    begin, end = [], []
    for size, k, s, d in zip(in_spatial, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        # SAME_UPPER puts the odd padding element at the end, SAME_LOWER at the beginning.
        b, e = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        begin.append(b)
        end.append(e)
    return begin + end


def _window_attrs(node: onnx.NodeProto, x: Value, kernel: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """strides, dilations and explicit pads of a Conv/pool node (auto_pad resolved)."""
    a = _attrs(node)
    nd = len(kernel)
    strides = list(a.get("strides") or [1] * nd)
    dilations = list(a.get("dilations") or [1] * nd)
    auto_pad = a.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = _auto_pads(auto_pad, x.shape[1:], kernel, strides, dilations)
    elif auto_pad == "VALID":
        pads = [0] * (2 * nd)
    elif auto_pad == "NOTSET":
        pads = list(a.get("pads") or [0] * (2 * nd))
    else:
        raise UnsupportedOpError(node.op_type, _node_label(node), f"unknown auto_pad {auto_pad!r}")
    return strides, dilations, pads


def _check_spatial(node: onnx.NodeProto, x: Value, nd: int | None = None) -> int:
    nd = len(x.shape) - 1 if nd is None else nd
    if len(x.shape) - 1 != nd or nd not in (1, 2):
        raise UnsupportedOpError(
            node.op_type,
            _node_label(node),
            f"snnc supports 1-D and 2-D spatial layouts [batch, C, L] / [batch, C, H, W]; this input is {_full(x.shape)}",
        )
    return nd


def _full(shape: Shape) -> str:
    """``[batch, 3, 8, 8]``: a per-sample shape written with its batch dimension."""
    return "[" + ", ".join(["batch", *map(str, shape)]) + "]"


def _reject(node: onnx.NodeProto, hint: str) -> UnsupportedOpError:
    return UnsupportedOpError(node.op_type, _node_label(node), hint)


# =================================================================== converters
# Each converter maps one ONNX node (whose inputs are not all constant) to IR nodes and
# returns the IR value (or, for Shape, the folded constant) of the node's first output.
Converter = Callable[[_Importer, onnx.NodeProto], Tensor]


def _cv_conv(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    w = ctx.const(node, 1, "weight")
    _check_spatial(node, x, w.ndim - 2)
    b = ctx.optional_const(node, 2, "bias")
    a = _attrs(node)
    kernel = list(a.get("kernel_shape") or w.shape[2:])
    strides, dilations, pads = _window_attrs(node, x, kernel)
    groups = int(a.get("group", 1))
    if x.shape[0] != w.shape[1] * groups:
        raise _reject(node, f"weight {list(w.shape)} with group={groups} does not fit {x.shape[0]} input channels")
    bias = np.zeros(w.shape[0], np.float32) if b is None else b
    attrs = {"strides": strides, "pads": pads, "dilations": dilations, "groups": groups}
    return ctx.emit("conv", [x], node, attrs=attrs, params={"weight": w, "bias": bias})


def _cv_conv_transpose(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    w = ctx.const(node, 1, "weight")
    nd = _check_spatial(node, x, w.ndim - 2)
    b = ctx.optional_const(node, 2, "bias")
    a = _attrs(node)
    groups = int(a.get("group", 1))
    kernel = list(a.get("kernel_shape") or w.shape[2:])
    strides = list(a.get("strides") or [1] * nd)
    dilations = list(a.get("dilations") or [1] * nd)
    outpad = list(a.get("output_padding") or [0] * nd)
    auto_pad = a.get("auto_pad", "NOTSET")
    out_shape = list(a.get("output_shape") or [])
    if auto_pad in ("SAME_UPPER", "SAME_LOWER") and not out_shape:
        out_shape = [s * i for s, i in zip(strides, x.shape[1:])]
    if out_shape:
        if len(out_shape) != nd:
            raise _reject(node, f"output_shape {out_shape} must list the {nd} spatial dimensions")
        pads = _conv_transpose_pads(node, auto_pad, x.shape[1:], out_shape, kernel, strides, dilations, outpad)
    elif auto_pad == "VALID":
        pads = [0] * (2 * nd)
    else:
        pads = list(a.get("pads") or [0] * (2 * nd))
    cout = w.shape[1] * groups
    bias = np.zeros(cout, np.float32) if b is None else b
    attrs = {"strides": strides, "pads": pads, "dilations": dilations, "output_padding": outpad, "groups": groups}
    return ctx.emit("conv_transpose", [x], node, attrs=attrs, params={"weight": w, "bias": bias})


def _conv_transpose_pads(
    node: onnx.NodeProto,
    auto_pad: str,
    in_spatial: Sequence[int],
    out_shape: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    outpad: Sequence[int],
) -> list[int]:
    """Pads producing ``output_shape`` (ONNX ConvTranspose spec: the odd element goes at
    the beginning unless auto_pad is SAME_UPPER)."""
    begin, end = [], []
    for size, want, k, s, d, op in zip(in_spatial, out_shape, kernel, strides, dilations, outpad):
        total = s * (size - 1) + op + (k - 1) * d + 1 - want
        if total < 0:
            raise _reject(
                node, f"output_shape {list(out_shape)} is larger than the full transposed convolution; set pads/output_padding instead"
            )
        small, large = total // 2, total - total // 2
        b, e = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        begin.append(b)
        end.append(e)
    return begin + end


def _cv_gemm(ctx: _Importer, node: onnx.NodeProto) -> Value:
    a = _attrs(node)
    if a.get("transA", 0):
        raise _reject(node, "transA=1 would transpose the batch into the features; re-export without transposing the input")
    x = ctx.value(node)
    w = ctx.const(node, 1, "weight (B)").astype(np.float32)
    if len(x.shape) != 1 or w.ndim != 2:
        raise _reject(node, f"Gemm needs a [batch, features] input, got {_full(x.shape)}")
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    weight = alpha * (w if a.get("transB", 0) else w.T)  # [N, K]
    n = weight.shape[0]
    c = ctx.optional_const(node, 2, "bias (C)")
    bias = np.zeros(n, np.float32)
    if c is not None:
        cc = _per_sample_constant(c, (n,))
        if cc is None:
            raise _reject(node, f"bias C of shape {list(c.shape)} does not broadcast over [batch, {n}] per sample")
        bias = beta * np.broadcast_to(cc, (n,)).astype(np.float32)
    return ctx.emit("linear", [x], node, params={"weight": weight, "bias": bias})


def _cv_matmul(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    w = ctx.const(node, 1, "weight matrix (second operand)")
    if w.ndim != 2 or not x.shape or x.shape[-1] != w.shape[0]:
        raise _reject(node, f"only x @ W with a constant 2-D W is supported (x {_full(x.shape)}, W {list(w.shape)})")
    weight = w.T.astype(np.float32)
    bias = np.zeros(weight.shape[0], np.float32)
    name = None
    add = ctx.single_reader(node.output[0])
    if add is not None and add.op_type == "Add":
        other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        c = ctx.env.get(other)
        cc = _per_sample_constant(c, (*x.shape[:-1], weight.shape[0])) if isinstance(c, np.ndarray) else None
        if cc is not None and all(d == 1 for d in cc.shape[:-1]):
            # Add of a vector along the features only: it is this linear layer's bias.
            bias = np.broadcast_to(cc.reshape(-1), bias.shape).astype(np.float32).copy()
            ctx.absorbed.add(id(add))
            name = _ir_name(add)
            ctx.fused.append(f"{_node_label(node)} + {_node_label(add)}")
            value = ctx.emit("linear", [x], node, params={"weight": weight, "bias": bias}, name=name)
            ctx.env[add.output[0]] = value
            return value
    return ctx.emit("linear", [x], node, params={"weight": weight, "bias": bias})


def _cv_batch_norm(ctx: _Importer, node: onnx.NodeProto) -> Value:
    a = _attrs(node)
    if a.get("training_mode", 0):
        raise _reject(node, "training_mode=1 normalises with batch statistics; export the model in eval mode")
    x = ctx.value(node)
    params = {
        "scale": ctx.const(node, 1, "scale"),
        "bias": ctx.const(node, 2, "bias"),
        "mean": ctx.const(node, 3, "running mean"),
        "var": ctx.const(node, 4, "running variance"),
    }
    for key, arr in params.items():
        if arr.size != x.shape[0]:
            raise _reject(node, f"{key} has {arr.size} entries for {x.shape[0]} channels")
        params[key] = arr.reshape(-1)
    return ctx.emit("batch_norm", [x], node, attrs={"epsilon": float(a.get("epsilon", 1e-5))}, params=params)


def _cv_relu(ctx: _Importer, node: onnx.NodeProto) -> Value:
    return ctx.emit("relu", [ctx.value(node)], node)


def _cv_clip(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    lo = ctx.optional_const(node, 1, "min")
    hi = ctx.optional_const(node, 2, "max")
    if lo is None or lo.size != 1 or float(lo.reshape(-1)[0]) != 0.0:
        got = "absent (no lower bound)" if lo is None else f"{lo.reshape(-1)[:4].tolist()}"
        raise _reject(node, f"only Clip with min 0 (a bounded ReLU) is supported; min is {got}")
    mx = None
    if hi is not None:
        if hi.size != 1:
            raise _reject(node, "max must be a scalar")
        m = float(hi.reshape(-1)[0])
        if m <= 0:
            raise _reject(node, f"max {m} <= min 0 makes the output constant")
        mx = None if math.isinf(m) else m
    attrs = {} if mx is None else {"max": mx}
    return ctx.emit("relu", [x], node, attrs=attrs)


def _cv_avg_pool(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    _check_spatial(node, x)
    a = _attrs(node)
    kernel = list(a["kernel_shape"])
    strides, dilations, pads = _window_attrs(node, x, kernel)
    if any(d != 1 for d in dilations):
        raise _reject(node, "dilated average pooling is not supported")
    attrs = {
        "kernel": kernel,
        "strides": strides,
        "pads": pads,
        "count_include_pad": bool(a.get("count_include_pad", 0)),
        "ceil_mode": bool(a.get("ceil_mode", 0)),
    }
    return ctx.emit("avg_pool", [x], node, attrs=attrs)


def _cv_max_pool(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    _check_spatial(node, x)
    a = _attrs(node)
    if a.get("storage_order", 0):
        log.debug("MaxPool %r: storage_order only affects the unused indices output", _node_label(node))
    kernel = list(a["kernel_shape"])
    strides, dilations, pads = _window_attrs(node, x, kernel)
    attrs = {"kernel": kernel, "strides": strides, "pads": pads, "dilations": dilations, "ceil_mode": bool(a.get("ceil_mode", 0))}
    return ctx.emit("max_pool", [x], node, attrs=attrs)


def _cv_global_avg_pool(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    _check_spatial(node, x)
    return ctx.emit("global_avg_pool", [x], node, attrs={"keepdims": True})


def _cv_reduce_mean(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    a = _attrs(node)
    rank = len(x.shape) + 1
    if ctx.opset >= 18:
        axes_arr = ctx.optional_const(node, 1, "axes")
        axes = None if axes_arr is None or axes_arr.size == 0 else axes_arr.reshape(-1).tolist()
        if axes is None and a.get("noop_with_empty_axes", 0):
            return ctx.emit("identity", [x], node)
    else:
        axes = a.get("axes")
    spatial = set(range(2, rank))
    got = None if axes is None else {_normalize_axis(int(ax), rank, node) for ax in axes}
    if got != spatial or not spatial:
        which = "all axes (including the batch)" if got is None else f"axes {sorted(got)}"
        raise _reject(
            node, f"ReduceMean over {which}; snnc supports the mean over exactly the spatial axes {sorted(spatial)} (global pooling)"
        )
    return ctx.emit("global_avg_pool", [x], node, attrs={"keepdims": bool(a.get("keepdims", 1))})


def _cv_flatten(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    rank = len(x.shape) + 1
    axis = int(_attrs(node).get("axis", 1))
    axis = axis + rank if axis < 0 else axis  # Flatten allows axis == rank
    # Flatten(axis=k) gives [prod(dims[:k]), prod(dims[k:])]: it keeps the batch first only
    # when every per-sample dimension before k is 1.
    if axis < 1 or axis > rank or math.prod(x.shape[: axis - 1]) != 1:
        raise _reject(node, f"Flatten(axis={axis}) of {_full(x.shape)} would merge samples of the batch; use axis=1")
    return ctx.emit("reshape", [x], node, attrs={"shape": [math.prod(x.shape[axis - 1 :])]})


def _cv_reshape(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    target = ctx.const(node, 1, "target shape")
    allowzero = bool(_attrs(node).get("allowzero", 0))
    shape = _resolve_reshape(node, target.reshape(-1).tolist(), x.shape, allowzero, ctx.fixed_batch)
    return ctx.emit("reshape", [x], node, attrs={"shape": shape})


def _resolve_reshape(node: onnx.NodeProto, target: list[int], shape: Shape, allowzero: bool, fixed_batch: int | None) -> list[int]:
    """The per-sample shape a Reshape target means, if it keeps the batch dimension first.

    The first entry stands for the batch when it is the BATCH sentinel (from Shape), -1, 0
    (copy, without allowzero) or the model's fixed batch size.
    """
    size = math.prod(shape)
    fail = f"Reshape to {['batch' if t == BATCH else ('?' if t == UNKNOWN else t) for t in target]} of {_full(shape)}"
    if not target or UNKNOWN in target:
        raise _reject(node, f"{fail}: the target depends on the batch size in a way snnc cannot resolve")
    first, rest = target[0], list(target[1:])
    if not (first in (BATCH, -1) or (first == 0 and not allowzero) or (fixed_batch is not None and first == fixed_batch)):
        raise _reject(node, f"{fail}: the batch dimension must stay first")
    if BATCH in rest:
        raise _reject(node, f"{fail}: the batch size appears in a non-batch position")
    for i, t in enumerate(rest):
        if t == 0 and not allowzero:
            if i + 1 >= len(shape) + 1:
                raise _reject(node, f"{fail}: 0 copies a dimension the input does not have")
            rest[i] = shape[i]  # 0 copies the input dimension at the same (batch-counted) axis
    if first == -1 and -1 in rest:
        raise _reject(node, f"{fail}: more than one -1")
    if rest.count(-1) > 1:
        raise _reject(node, f"{fail}: more than one -1")
    if -1 in rest:
        known = math.prod(t for t in rest if t != -1)
        if known <= 0 or size % known:
            raise _reject(node, f"{fail}: sizes do not match")
        rest[rest.index(-1)] = size // known
    if math.prod(rest) != size or any(t <= 0 for t in rest):
        raise _reject(node, f"{fail}: the per-sample sizes do not match (it would move elements between samples)")
    return [int(t) for t in rest]


def _cv_squeeze(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    rank = len(x.shape) + 1
    axes_arr = ctx.optional_const(node, 1, "axes")
    if axes_arr is None:
        axes = {i for i, d in enumerate(x.shape, start=1) if d == 1}
    else:
        axes = {_normalize_axis(int(a), rank, node) for a in axes_arr.reshape(-1)}
    if 0 in axes or any(x.shape[a - 1] != 1 for a in axes):
        raise _reject(node, f"Squeeze of axes {sorted(axes)} of {_full(x.shape)}: only per-sample axes of size 1 can be squeezed")
    shape = [d for i, d in enumerate(x.shape, start=1) if i not in axes]
    return ctx.emit("reshape", [x], node, attrs={"shape": shape})


def _cv_unsqueeze(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    axes_arr = ctx.const(node, 1, "axes")
    out_rank = len(x.shape) + 1 + axes_arr.size
    axes = sorted(_normalize_axis(int(a), out_rank, node) for a in axes_arr.reshape(-1))
    if 0 in axes:
        raise _reject(node, "Unsqueeze at axis 0 would move the batch dimension")
    full: list[int | None] = [None, *x.shape]
    for a in axes:
        full.insert(a, 1)
    return ctx.emit("reshape", [x], node, attrs={"shape": [int(d) for d in full[1:]]})


def _cv_binary(ctx: _Importer, node: onnx.NodeProto) -> Value:
    """Add / Sub / Mul / Div with at least one operand computed from the input."""
    lhs, rhs = ctx.lookup(node.input[0]), ctx.lookup(node.input[1])
    op = node.op_type
    if isinstance(lhs, Value) and isinstance(rhs, Value):
        if op not in ("Add", "Sub"):
            raise _reject(node, f"{op} of two tensors computed from the input is not linear (gating, attention); snnc cannot convert it")
        if lhs.shape != rhs.shape:
            raise _reject(node, f"{op} of tensors of different shapes {_full(lhs.shape)} and {_full(rhs.shape)} (broadcasting)")
        attrs = {} if op == "Add" else {"coeffs": [1.0, -1.0]}
        return ctx.emit("add", [lhs, rhs], node, attrs=attrs)
    x, c, const_left = (lhs, rhs, False) if isinstance(lhs, Value) else (rhs, lhs, True)
    cc = _per_sample_constant(c, x.shape)
    if cc is None:
        raise _reject(node, f"constant of shape {list(np.shape(c))} does not broadcast over {_full(x.shape)} without changing its shape")
    ones, zeros = np.ones_like(cc), np.zeros_like(cc)
    if op == "Add":
        scale, shift = ones, cc
    elif op == "Sub":
        scale, shift = (-ones, cc) if const_left else (ones, -cc)
    elif op == "Mul":
        scale, shift = cc, zeros
    else:  # Div
        if const_left:
            raise _reject(node, "division by a tensor computed from the input is not linear")
        if np.any(cc == 0):
            raise _reject(node, "division by a constant containing zeros")
        scale, shift = (1.0 / cc).astype(np.float32), zeros
    return ctx.emit("affine", [x], node, params={"scale": scale, "shift": shift})


def _cv_concat(ctx: _Importer, node: onnx.NodeProto) -> Value:
    tensors = [ctx.lookup(i) for i in node.input if i]
    if not all(isinstance(t, Value) for t in tensors):
        raise _reject(node, "Concat of a constant with tensors computed from the input is not supported")
    rank = len(tensors[0].shape) + 1
    axis = _normalize_axis(int(_attrs(node)["axis"]), rank, node)
    if axis == 0:
        raise _reject(node, "Concat along the batch axis 0 is not supported")
    return ctx.emit("concat", tensors, node, attrs={"axis": axis})


def _cv_resize(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    nd = _check_spatial(node, x)
    a = _attrs(node)
    if a.get("mode", "nearest") != "nearest":
        raise _reject(node, f"mode {a.get('mode')!r}: snnc supports nearest-neighbour upsampling by integer factors only")
    ctm = a.get("coordinate_transformation_mode", "half_pixel")
    nearest_mode = a.get("nearest_mode", "round_prefer_floor")
    rank = nd + 2
    axes = [_normalize_axis(int(v), rank, node) for v in a.get("axes", range(rank))]
    scales = ctx.optional_const(node, 2, "scales")
    sizes = ctx.optional_const(node, 3, "sizes")
    full_in = [None, *x.shape]
    factors = dict.fromkeys(range(rank), 1.0)
    if scales is not None and scales.size:
        factors.update(zip(axes, (float(s) for s in scales.reshape(-1))))
    elif sizes is not None and sizes.size:
        for ax, want in zip(axes, sizes.reshape(-1).tolist()):
            if ax == 0:
                if want not in (BATCH, ctx.fixed_batch):
                    raise _reject(node, "Resize changes the batch size")
                continue
            factors[ax] = want / full_in[ax]
        policy = a.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch" and len({factors[ax] for ax in axes if ax >= 2}) > 1:
            raise _reject(node, f"keep_aspect_ratio_policy {policy!r} with unequal size ratios is not supported")
    else:
        raise _reject(node, "Resize needs constant scales or sizes")
    return _emit_upsample(ctx, node, x, factors, ctm, nearest_mode)


def _cv_upsample(ctx: _Importer, node: onnx.NodeProto) -> Value:
    """The deprecated Upsample op: nearest means ``floor(o / s)`` (asymmetric)."""
    x = ctx.value(node)
    _check_spatial(node, x)
    a = _attrs(node)
    if a.get("mode", "nearest") != "nearest":
        raise _reject(node, f"mode {a.get('mode')!r}: only nearest upsampling is supported")
    scales = a.get("scales")
    if scales is None:
        scales = ctx.const(node, 1, "scales").reshape(-1).tolist()
    return _emit_upsample(ctx, node, x, dict(enumerate(float(s) for s in scales)), "asymmetric", "floor")


def _emit_upsample(ctx: _Importer, node: onnx.NodeProto, x: Value, factors: dict[int, float], ctm: str, nearest_mode: str) -> Value:
    if factors.get(0, 1.0) != 1.0 or factors.get(1, 1.0) != 1.0:
        raise _reject(node, "resizing the batch or channel axis is not supported")
    ints = []
    for ax in range(2, len(x.shape) + 1):
        f = factors.get(ax, 1.0)
        s = round(f)
        if s < 1 or abs(f - s) > 1e-6:
            raise _reject(node, f"scale {f:g} on axis {ax}: snnc supports integer upsampling factors (>= 1) only")
        length = x.shape[ax - 1]
        picked = _nearest_source_index(ctm, nearest_mode, length, s)
        if picked is None or not np.array_equal(picked, np.arange(length * s) // s):
            raise _reject(
                node,
                f"coordinate_transformation_mode={ctm!r} with nearest_mode={nearest_mode!r} and scale {s} is not a "
                "plain nearest upsample (repeat each element); export with mode='nearest' (asymmetric/floor)",
            )
        ints.append(s)
    return ctx.emit("upsample", [x], node, attrs={"scales": ints, "mode": "nearest"})


def _nearest_source_index(ctm: str, nearest_mode: str, length: int, scale: int) -> np.ndarray | None:
    """The input index ONNX Resize (mode nearest) reads for each output index, or None for
    modes snnc does not model. Formulas from the ONNX Resize specification."""
    out_len = length * scale
    o = np.arange(out_len, dtype=np.float64)
    if ctm in ("half_pixel", "half_pixel_symmetric"):
        # With an integer scale the symmetric variant's adjustment is exactly 1.
        x = (o + 0.5) / scale - 0.5
    elif ctm == "pytorch_half_pixel":
        x = (o + 0.5) / scale - 0.5 if out_len > 1 else np.zeros_like(o)
    elif ctm == "asymmetric":
        x = o / scale
    elif ctm == "tf_half_pixel_for_nn":
        x = (o + 0.5) / scale
    elif ctm == "align_corners":
        x = o * (length - 1) / (out_len - 1) if out_len > 1 else np.zeros_like(o)
    else:
        return None
    frac = x - np.floor(x)
    tie = np.isclose(frac, 0.5)
    if nearest_mode == "round_prefer_floor":
        idx = np.where(tie, np.floor(x), np.round(x))
    elif nearest_mode == "round_prefer_ceil":
        idx = np.where(tie, np.ceil(x), np.round(x))
    elif nearest_mode == "floor":
        idx = np.floor(x + 1e-9)
    elif nearest_mode == "ceil":
        idx = np.ceil(x - 1e-9)
    else:
        return None
    return np.clip(idx, 0, length - 1).astype(np.int64)


def _cv_identity(ctx: _Importer, node: onnx.NodeProto) -> Value:
    return ctx.emit("identity", [ctx.value(node)], node)


def _cv_cast(ctx: _Importer, node: onnx.NodeProto) -> Value:
    to = _attrs(node).get("to")
    if to not in _FLOAT_TYPES:
        name = onnx.TensorProto.DataType.Name(to) if to is not None else "?"
        raise _reject(node, f"Cast to {name} of a tensor computed from the input is not supported (snnc computes in float32)")
    # snnc computes in float32 throughout, so a cast between float types is the identity.
    return ctx.emit("identity", [ctx.value(node)], node)


def _cv_cast_like(ctx: _Importer, node: onnx.NodeProto) -> Tensor:
    """CastLike(data, target): only ``target``'s element type matters, and tensors computed
    from the input are float32 in snnc. The dynamo exporter casts constants like
    activations this way (e.g. the zero bias of a bias-free conv)."""
    data, target = ctx.lookup(node.input[0]), ctx.lookup(node.input[1])
    dtype = np.dtype(np.float32) if isinstance(target, Value) else target.dtype
    if isinstance(data, np.ndarray):
        return data.astype(dtype)
    if dtype.kind != "f":
        raise _reject(node, f"CastLike to {dtype} of a tensor computed from the input is not supported (snnc computes in float32)")
    return ctx.emit("identity", [data], node)


def _cv_dropout(ctx: _Importer, node: onnx.NodeProto) -> Value:
    training = ctx.optional_const(node, 2, "training_mode")
    if training is not None and bool(training.reshape(-1)[0]):
        raise _reject(node, "Dropout in training mode is random; export the model in eval mode")
    return ctx.emit("dropout", [ctx.value(node)], node)


def _cv_softmax(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    axis = _normalize_axis(int(_attrs(node).get("axis", -1)), len(x.shape) + 1, node)
    if axis == 0:
        raise _reject(node, "Softmax over the batch axis")
    return ctx.emit("softmax", [x], node, attrs={"axis": axis})


def _cv_argmax(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    a = _attrs(node)
    if a.get("select_last_index", 0):
        raise _reject(node, "select_last_index=1 is not supported")
    axis = _normalize_axis(int(a.get("axis", 0)), len(x.shape) + 1, node)
    if axis == 0:
        raise _reject(node, "ArgMax over the batch axis")
    return ctx.emit("argmax", [x], node, attrs={"axis": axis, "keepdims": bool(a.get("keepdims", 1))})


def _cv_shape(ctx: _Importer, node: onnx.NodeProto) -> np.ndarray:
    """Shape of a tensor computed from the input: ``[BATCH, *per-sample shape]``."""
    x = ctx.value(node)
    return _slice_shape(np.array([BATCH, *x.shape], np.int64), _attrs(node))


def _cv_transpose(ctx: _Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    perm = list(_attrs(node).get("perm") or reversed(range(len(x.shape) + 1)))
    if perm != list(range(len(x.shape) + 1)):
        raise _reject(
            node, f"Transpose (perm {perm}) of a tensor computed from the input: the IR keeps the channel-first layout and has no transpose"
        )
    return ctx.emit("identity", [x], node)


CONVERTERS: dict[str, Converter] = {
    "Add": _cv_binary,
    "ArgMax": _cv_argmax,
    "AveragePool": _cv_avg_pool,
    "BatchNormalization": _cv_batch_norm,
    "Cast": _cv_cast,
    "CastLike": _cv_cast_like,
    "Clip": _cv_clip,
    "Concat": _cv_concat,
    "Conv": _cv_conv,
    "ConvTranspose": _cv_conv_transpose,
    "Div": _cv_binary,
    "Dropout": _cv_dropout,
    "Flatten": _cv_flatten,
    "Gemm": _cv_gemm,
    "GlobalAveragePool": _cv_global_avg_pool,
    "Identity": _cv_identity,
    "MatMul": _cv_matmul,
    "MaxPool": _cv_max_pool,
    "Mul": _cv_binary,
    "ReduceMean": _cv_reduce_mean,
    "Relu": _cv_relu,
    "Reshape": _cv_reshape,
    "Resize": _cv_resize,
    "Shape": _cv_shape,
    "Softmax": _cv_softmax,
    "Squeeze": _cv_squeeze,
    "Sub": _cv_binary,
    "Transpose": _cv_transpose,
    "Unsqueeze": _cv_unsqueeze,
    "Upsample": _cv_upsample,
}


# ====================================================================== folding
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
            raise _reject(node, "this tensor's size depends on the batch size; snnc needs per-sample shapes known at import")


def _fold_constant(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    if len(node.attribute) != 1:
        raise _reject(node, "a Constant needs exactly one value attribute")
    a = node.attribute[0]
    if a.name == "value":
        return [numpy_helper.to_array(a.t)]
    if a.name == "sparse_value":
        return [_fold_with_reference(node, inputs)[0]]
    v = attrs[a.name]
    dtype = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}.get(a.name)
    if dtype is None:
        raise _reject(node, f"Constant with {a.name} is not a numeric tensor")
    return [np.array(v, dtype=dtype)]


def _fold_shape(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [_slice_shape(np.array(np.shape(inputs[0]), np.int64), attrs)]


def _slice_shape(shape: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    """Shape's optional start/end attributes (opset 15) slice the shape vector."""
    start, end = attrs.get("start", 0), attrs.get("end")
    return shape[start:end]


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
            raise _reject(node, "compares the batch size with a number; the result is not known at import")
    return [np.equal(a, b)]


def _fold_where(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [np.where(*inputs)]


def _fold_constant_of_shape(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    _require_static(node, inputs[0])
    value = numpy_helper.to_array(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
    return [np.full(tuple(int(d) for d in inputs[0].reshape(-1)), value.reshape(-1)[0], dtype=value.dtype)]


def _fold_expand(node: onnx.NodeProto, inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    _require_static(node, inputs[1])
    x, shape = inputs
    return [np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(int(d) for d in shape.reshape(-1)))).copy()]


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


def _fold_with_reference(node: onnx.NodeProto, inputs: list[Any]) -> list[np.ndarray]:
    """Evaluate a node on constants with onnx's reference implementation (the fallback for
    ops not in ``FOLDERS``)."""
    from onnx.reference import ReferenceEvaluator

    if any(i is not None and np.any(_symbolic(i)) for i in inputs):
        raise _reject(node, "this op computes on the batch size; snnc cannot fold it")
    feeds = {name: arr for name, arr in zip(node.input, inputs) if name}
    try:
        outputs = ReferenceEvaluator(node).run(None, feeds)
    except Exception as exc:  # the reference implementation raises arbitrary types
        raise UnsupportedOpError(
            node.op_type,
            _node_label(node),
            f"all its inputs are constant but snnc could not evaluate it ({type(exc).__name__}: {exc}); {_unsupported_hint(node.op_type)}",
        ) from exc
    return [np.asarray(o) for o in outputs]
