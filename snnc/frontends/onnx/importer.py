"""The ONNX import driver: the :class:`Importer` whose state the converters share (the
tensor-name environment, constants, emission) and which folds or converts every needed node.
It is given its dispatch tables (converters, folders) rather than importing them, so the
converters can refer to it without an import cycle; :func:`snnc.frontends.onnx.import_onnx`
wires them together."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from snnc.errors import DataError, SnncError, UnsupportedOpError
from snnc.frontends.common import MAX_ACTIVATION, constant_output, emit_node, too_many_inputs
from snnc.frontends.onnx.helpers import (
    BATCH,
    DEFAULT_DOMAINS,
    FLOAT_TYPES,
    UNKNOWN,
    BatchDependent,
    BatchFlat,
    BatchSymbolic,
    Tensor,
    is_symbolic,
    ir_name,
    node_attrs,
    node_label,
    sanitize,
)
from snnc.frontends.onnx.load import needed_nodes, select_outputs
from snnc.frontends.onnx.trust import MAX_ELEMENTS, non_finite, output_size, too_big, type_name
from snnc.ir.graph import Graph, Value

log = logging.getLogger(__name__)

# What the extra outputs of multi-output ops are; used in "is used" errors.
_EXTRA_OUTPUTS = {
    "BatchNormalization": "the running mean/variance of training mode",
    "MaxPool": "the argmax indices",
    "Dropout": "the dropout mask",
}


# A model whose input declares a fixed batch is evaluated (by onnxruntime) in chunks of it.
MAX_FIXED_BATCH = 65536
# How many nodes eval_at_batch re-evaluates for one tensor.
_EVAL_NODES = 256


# ====================================================================== importer
class Importer:
    """Converts the needed nodes of one model; holds the name → tensor environment."""

    def __init__(
        self,
        model: onnx.ModelProto,
        opset: int,
        *,
        converters: Mapping[str, Callable[[Importer, onnx.NodeProto], Tensor]],
        folders: Mapping[str, Callable[..., list[np.ndarray]]],
        fold_fallback: Callable[[onnx.NodeProto, list[Any]], list[np.ndarray]],
        unsupported_hint: Callable[[str], str],
    ):
        self.model = model
        self.opset = opset
        self.converters = converters
        self.folders = folders
        self.fold_fallback = fold_fallback
        self.unsupported_hint = unsupported_hint
        self.graph = Graph(sanitize(model.graph.name) or "graph", stage="ann")
        self.env: dict[str, Tensor] = {}
        self.notices: list[str] = []
        self.output_sources: list[str] = []
        self.fixed_batch: int | None = None
        self.absorbed: set[int] = set()  # ids of nodes merged into an earlier converter's IR node
        self.fused: list[str] = []
        self.folded: Counter[str] = Counter()
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.producer: dict[str, onnx.NodeProto] = {}

    # ------------------------------------------------------------------ driver
    def run(self) -> Graph:
        g = self.model.graph
        self.output_sources, notices, stripped = select_outputs(self.model)
        self.notices += notices
        nodes = needed_nodes(g, self.output_sources)
        needed = {id(n) for n in nodes}
        # Nodes nothing kept depends on (other than the stripped post-processing itself).
        skipped = [n for n in g.node if id(n) not in needed and n.op_type != "Constant" and n.output[0] not in stripped]
        for n in nodes:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
            for o in n.output:
                if o:
                    self.producer.setdefault(o, n)
        for init in g.initializer:
            # Types, dims and data lengths were checked on load (trust.check_tensors).
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
            raise too_many_inputs("ONNX", [i.name for i in inputs])
        inp = inputs[0]
        ttype = inp.type.tensor_type if inp.type.HasField("tensor_type") else None
        if ttype is None or not ttype.HasField("shape"):
            raise DataError(f"model input {inp.name!r} is not a tensor with a known shape; re-export the model with a fixed input shape")
        if ttype.elem_type not in FLOAT_TYPES:
            raise DataError(
                f"model input {inp.name!r} has element type {type_name(ttype.elem_type)}; "
                "snnc imports models with a floating-point input"
            )
        dims = list(ttype.shape.dim)
        if len(dims) < 2:
            raise DataError(f"model input {inp.name!r} has rank {len(dims)}; expected [batch, features...]")
        if dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            self.fixed_batch = int(dims[0].dim_value)
            if self.fixed_batch > MAX_FIXED_BATCH:
                raise DataError(
                    f"model input {inp.name!r} declares a fixed batch size of {self.fixed_batch:,}; snnc evaluates the "
                    f"model in chunks of that size and accepts at most {MAX_FIXED_BATCH:,}. Re-export it with a dynamic "
                    "(or small) batch dimension"
                )
        shape = []
        for axis, d in enumerate(dims[1:], start=1):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                what = f"symbolic ({d.dim_param!r})" if d.dim_param else "unknown"
                raise DataError(
                    f"dimension {axis} of model input {inp.name!r} is {what}; snnc needs every dimension but the "
                    "batch (first) to be static. Re-export with a fixed input size (e.g. no dynamic_axes on it)"
                )
            shape.append(int(d.dim_value))
        if math.prod(shape) > MAX_ACTIVATION:
            raise too_big(f"the per-sample input {inp.name!r}", math.prod(shape), shape, MAX_ACTIVATION)
        self.env[inp.name] = self.graph.add_input(sanitize(inp.name) or "input", shape)

    def _set_outputs(self) -> None:
        outs: list[Value] = []
        for name in self.output_sources:
            v = self.env.get(name)
            if isinstance(v, (BatchDependent, BatchFlat)):
                raise v.error
            if not isinstance(v, Value):
                raise constant_output(repr(name))
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
        # A batch-dependent tensor counts as a constant: folding propagates it.
        return isinstance(self.lookup(name, deferred=True), (np.ndarray, BatchDependent))

    def lookup(self, name: str, *, deferred: bool = False) -> Tensor:
        """The tensor ``name``. A :class:`BatchDependent` / :class:`BatchFlat` tensor raises
        its error unless ``deferred`` (for the consumers that handle them)."""
        try:
            t = self.env[name]
        except KeyError:
            raise DataError(
                f"tensor {name!r} is read before any node produces it: the ONNX graph is not topologically "
                "sorted or refers to an outer scope (check it with onnx.checker.check_model)"
            ) from None
        if not deferred and isinstance(t, (BatchDependent, BatchFlat)):
            raise t.error
        return t

    def eval_at_batch(self, name: str, batch: int) -> np.ndarray | None:
        """Tensor ``name`` (computed from constants and the batch size only) for a concrete
        batch size, or None when it depends on the model input's values. Shape tensors
        holding the BATCH sentinel get ``batch`` in its place; batch-dependent tensors, and
        tensors whose producers the driver has not reached yet (for converters that look
        ahead along a chain), are evaluated from their producers (at most :data:`_EVAL_NODES`
        nodes)."""
        memo: dict[str, np.ndarray] = {}
        budget = [_EVAL_NODES]

        def ev(t: str) -> np.ndarray | None:
            if t in memo:
                return memo[t]
            v = self.env.get(t)
            if isinstance(v, np.ndarray) and not (v.dtype.kind in "iuf" and np.any(v == UNKNOWN)):
                out = np.where(v == BATCH, batch, v).astype(v.dtype) if is_symbolic(v) else v
                memo[t] = out
                return out
            node = self.producer.get(t)
            if not (v is None or isinstance(v, (np.ndarray, BatchDependent))) or node is None or budget[0] <= 0:
                return None
            budget[0] -= 1
            inputs = []
            for i in node.input:
                if not i:
                    inputs.append(None)
                    continue
                a = ev(i)
                if a is None:
                    return None
                inputs.append(a)
            try:
                outs = self._evaluate(node, inputs)
            except SnncError:
                return None
            for o, a in zip(node.output, outs):
                if o:
                    memo[o] = np.asarray(a)
            return memo.get(t)

        return ev(name)

    def value(self, node: onnx.NodeProto, index: int = 0) -> Value:
        """Input ``index`` of ``node``, which must be computed from the model input."""
        t = self.lookup(node.input[index])
        if not isinstance(t, Value):
            raise UnsupportedOpError(
                node.op_type,
                node_label(node),
                f"its input {index} ({node.input[index]!r}) is a constant; snnc maps {node.op_type} only with that input "
                "computed from the model input (e.g. MatMul(x, W), not MatMul(W, x))",
            )
        return t

    def const(self, node: onnx.NodeProto, index: int, what: str, *, integer: bool = False) -> np.ndarray:
        """Input ``index`` of ``node``, which must be a constant (of an integer type when
        ``integer``: shapes, axes, pads)."""
        if index >= len(node.input) or not node.input[index]:
            raise UnsupportedOpError(node.op_type, node_label(node), f"its {what} (input {index}) is missing")
        t = self.lookup(node.input[index])
        if not isinstance(t, np.ndarray):
            raise UnsupportedOpError(
                node.op_type,
                node_label(node),
                f"its {what} must be a constant (an initializer, or computed from constants and shapes only); "
                "here it depends on the model input",
            )
        if integer and t.dtype.kind not in "iu":
            raise DataError(
                f"{node.op_type} node {node_label(node)!r}: its {what} ({node.input[index]!r}) has element type {t.dtype}; "
                "ONNX requires an integer tensor here (the model is malformed)"
            )
        return t

    def optional_const(self, node: onnx.NodeProto, index: int, what: str, *, integer: bool = False) -> np.ndarray | None:
        if index >= len(node.input) or not node.input[index]:
            return None
        return self.const(node, index, what, integer=integer)

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
        """Add an IR node for ONNX ``node`` (named after it unless ``name`` is given) and
        compute its per-sample shape right away (see :func:`~snnc.frontends.common.emit_node`)."""
        for key, arr in (params or {}).items():
            if non_finite(arr):
                raise self._non_finite(node, key, arr)
        return emit_node(
            self.graph, op, inputs, attrs=attrs, params=params, name=name or ir_name(node), op_type=node.op_type, node=node_label(node)
        )

    def _non_finite(self, node: onnx.NodeProto, param: str, arr: np.ndarray) -> DataError:
        """The error for a layer whose parameter ``param`` holds NaN or inf, naming the
        model's tensor it came from when one of the node's constant inputs has them."""
        bad = [
            (i, t)
            for i in node.input
            if i and isinstance(t := self.env.get(i), np.ndarray) and non_finite(t)
        ]
        if bad:
            name, t = bad[0]
            kind = "initializer" if any(init.name == name for init in self.model.graph.initializer) else "constant tensor"
            what = f"{kind} {name!r}"
            count, size = non_finite(t), t.size
        else:
            what, count, size = f"its {param} (computed from the model's constants)", non_finite(arr), arr.size
        return DataError(
            f"{node.op_type} node {node_label(node)!r}: {what} holds {count} NaN/inf value(s) of {size}; "
            "the model's weights are not usable (re-export it from a model whose weights are finite)"
        )

    # ------------------------------------------------------------------ folding
    def _fold(self, node: onnx.NodeProto) -> None:
        inputs = [self.lookup(i, deferred=True) if i else None for i in node.input]
        pending = next((i for i in inputs if isinstance(i, BatchDependent)), None)
        if pending is not None:
            # Computed from a batch-dependent tensor: batch-dependent too.
            for name in node.output:
                if name:
                    self.env[name] = pending
            return
        try:
            outputs = self._evaluate(node, inputs)
        except BatchSymbolic as exc:
            pending = BatchDependent(UnsupportedOpError(exc.op_type, exc.node, exc.hint))
            for name in node.output:
                if name:
                    self.env[name] = pending
            return
        for name, arr in zip(node.output, outputs):
            if name:
                self.env[name] = np.asarray(arr)
        self.folded[node.op_type] += 1

    def _evaluate(self, node: onnx.NodeProto, inputs: list[Any]) -> list[np.ndarray]:
        """Evaluate ``node`` on constant ``inputs``; sizes are bounded before anything is
        allocated, and a node its inputs do not fit is a DataError naming it."""
        label = f"{node.op_type} node {node_label(node)!r}"
        attrs = node_attrs(node)
        folder = self.folders.get(node.op_type) if node.domain in DEFAULT_DOMAINS else None
        try:
            if not any(is_symbolic(i) for i in inputs):
                size = output_size(node, inputs, attrs)
                if size is not None and size > MAX_ELEMENTS:
                    raise too_big(f"the output of {label} (computed while folding constants)", size)
            if folder is not None:
                outputs = folder(node, inputs, attrs)
            else:
                outputs = self.fold_fallback(node, inputs)
            outputs = [np.asarray(o) for o in outputs]
        except SnncError:
            raise
        except MemoryError:
            raise DataError(f"{label}: evaluating it on its constant inputs runs out of memory; the model is malformed") from None
        except (ValueError, TypeError, IndexError, KeyError, ArithmeticError) as exc:
            detail = (str(exc).strip().splitlines() or [""])[0][:200]
            raise DataError(
                f"{label} cannot be evaluated on its constant inputs ({type(exc).__name__}: {detail}); "
                "the model is malformed (check it with onnxruntime, or re-export it)"
            ) from None
        if len(outputs) < len([o for o in node.output if o]):
            raise DataError(f"{label} declares {len(node.output)} outputs but computes {len(outputs)}; the model is malformed")
        for o in outputs:
            if o.size > MAX_ELEMENTS:
                raise too_big(f"the output of {label}", o.size, o.shape)
        return outputs

    # --------------------------------------------------------------- converting
    def _convert(self, node: onnx.NodeProto) -> None:
        if node.domain not in DEFAULT_DOMAINS:
            op_type = f"{node.domain}::{node.op_type}"
            raise UnsupportedOpError(op_type, node_label(node), self.unsupported_hint(op_type))
        converter = self.converters.get(node.op_type)
        if converter is None:
            raise UnsupportedOpError(node.op_type, node_label(node), self.unsupported_hint(node.op_type))
        for idx, out in enumerate(node.output[1:], start=1):
            if out and (out in self.consumers or self.is_graph_output(out)):
                what = _EXTRA_OUTPUTS.get(node.op_type, f"output {idx}")
                raise UnsupportedOpError(
                    node.op_type, node_label(node), f"its output {out!r} ({what}) is used; snnc imports inference graphs only"
                )
        result = converter(self, node)
        if isinstance(result, np.ndarray) and result.size > MAX_ELEMENTS:
            raise too_big(f"the output of {node.op_type} node {node_label(node)!r}", result.size, result.shape)
        if isinstance(result, np.ndarray):
            self.folded[node.op_type] += 1  # Shape of an IR value: a constant, too
        self.env[node.output[0]] = result
