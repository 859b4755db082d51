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
    BatchConstant,
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
import snnc.frontends.onnx.layout as layout
from snnc.frontends.onnx.layout import Laid
from snnc.frontends.onnx.load import needed_nodes, select_outputs
from snnc.frontends.onnx.patterns import Fusion, emit_fusion, find_fusions
from snnc.frontends.onnx.trust import MAX_ELEMENTS, non_finite, output_size, too_big, type_name
from snnc.ir.graph import Graph, Value

log = logging.getLogger(__name__)

# What the extra outputs of multi-output ops are; used in "is used" errors.
_EXTRA_OUTPUTS = {
    "BatchNormalization": "the running mean/variance of training mode",
    "MaxPool": "the argmax indices",
    "Dropout": "the dropout mask",
}


# Ops whose converters return one tensor per output (a list).
_MULTI_OUTPUT = {"Split"}

# Ops folded on one sample of a constant repeated over the batch (BatchConstant): each acts
# on every sample alike when it keeps the batch axis first (checked on the result).
_PER_SAMPLE_FOLDS = {"Add", "Cast", "CastLike", "Concat", "Div", "Identity", "Mul", "Neg", "Sub", "Transpose"}

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
        # Decomposed ops (GELU, SiLU, LayerNormalization) found before converting, keyed by
        # the id of their first node; notes on near misses, keyed by node id.
        self.fusions: dict[int, Fusion] = {}
        self.pattern_notes: dict[int, str] = {}
        self.fused_patterns: Counter[str] = Counter()

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
        find_fusions(self, nodes)
        with layout.batch_of_one(self.fixed_batch == 1):
            for node in nodes:
                if id(node) in self.absorbed:
                    continue
                fusion = self.fusions.get(id(node))
                if fusion is not None:
                    emit_fusion(self, fusion)
                elif all(self._is_const(i) for i in node.input if i):
                    self._fold(node)
                else:
                    self._convert(node)
            self._set_outputs()
        # Layout and pattern rewrites may leave nodes nothing reads (a view materialised
        # and then not used, the first ops of a pattern converted before it was fused).
        self.graph.remove_dead_nodes()
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
            if isinstance(v, Laid):
                producer = self.producer.get(name) or onnx.helper.make_node("Identity", [name], [name])
                v = layout.materialize(self, v, producer, f"the graph output {name!r}")
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
        if self.fused_patterns:
            ops = ", ".join(f"{op}×{n}" for op, n in sorted(self.fused_patterns.items()))
            self.notices.append(f"fused decomposed ops into single IR ops: {ops}")
        if skipped:
            ops = ", ".join(f"{op}×{n}" for op, n in sorted(Counter(n.op_type for n in skipped).items()))
            self.notices.append(f"ignored {len(skipped)} node(s) no kept output depends on ({ops})")

    # ------------------------------------------------------------ environment
    def _is_const(self, name: str) -> bool:
        # A batch-dependent tensor counts as a constant: folding propagates it.
        return isinstance(self.lookup(name, deferred=True, laid=True), (np.ndarray, BatchDependent, BatchConstant))

    def lookup(self, name: str, *, deferred: bool = False, laid: bool = False, reader: onnx.NodeProto | None = None) -> Tensor:
        """The tensor ``name``. A :class:`BatchDependent` / :class:`BatchFlat` tensor raises
        its error unless ``deferred`` (for the consumers that handle them); a
        :class:`~snnc.frontends.onnx.layout.Laid` view is materialised as a batch-first
        value (for ``reader``) unless ``laid``."""
        try:
            t = self.env[name]
        except KeyError:
            raise DataError(
                f"tensor {name!r} is read before any node produces it: the ONNX graph is not topologically "
                "sorted or refers to an outer scope (check it with onnx.checker.check_model)"
            ) from None
        if not deferred and isinstance(t, (BatchDependent, BatchFlat)):
            raise t.error
        if isinstance(t, Laid) and not laid:
            node = reader or self.producer.get(name) or onnx.helper.make_node("Identity", [name], [name])
            return layout.materialize(self, t, node)
        return t

    def laid(self, node: onnx.NodeProto, index: int = 0) -> Value | Laid:
        """Input ``index`` of ``node``, computed from the model input: a batch-first value
        or a :class:`~snnc.frontends.onnx.layout.Laid` view (for the layout-aware converters)."""
        t = self.lookup(node.input[index], laid=True)
        if not isinstance(t, (Value, Laid)):
            self.value(node, index)  # raises the constant-input error
        return t  # type: ignore[return-value]

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
            if isinstance(v, BatchConstant):
                memo[t] = np.broadcast_to(v.full, (batch, *v.value.shape)).copy()
                return memo[t]
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
        """Input ``index`` of ``node``, which must be computed from the model input (a
        layout view is materialised as a batch-first value, or refused naming ``node``)."""
        t = self.lookup(node.input[index], laid=True)
        if isinstance(t, Laid):
            return layout.materialize(self, t, node)
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
        t = self.lookup(node.input[index], laid=True)
        if isinstance(t, BatchConstant):
            raise UnsupportedOpError(
                node.op_type,
                node_label(node),
                f"its {what} is a constant expanded over the batch (Expand to [batch, ...]); snnc needs a plain constant here",
            )
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
        if pending is None and any(isinstance(i, BatchConstant) for i in inputs):
            pending = self._fold_batch_constant(node, inputs)
            if pending is None:
                return
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
                self.env[name] = arr if isinstance(arr, BatchConstant) else np.asarray(arr)
        self.folded[node.op_type] += 1

    def _fold_batch_constant(self, node: onnx.NodeProto, inputs: list[Any]) -> BatchDependent | None:
        """Fold ``node`` reading a constant repeated over the batch: ``Shape`` of it, or an op
        in :data:`_PER_SAMPLE_FOLDS` evaluated on one sample (the result must keep a batch
        axis of 1, so it is repeated over the batch too). Other ops make the result
        batch-dependent (returned)."""
        label = node_label(node)
        if node.op_type == "Shape":
            bc = inputs[0]
            shape = np.array([BATCH, *bc.value.shape], np.int64)
            self.env[node.output[0]] = shape[slice(node_attrs(node).get("start", 0), node_attrs(node).get("end"))]
            self.folded[node.op_type] += 1
            return None
        error = UnsupportedOpError(
            node.op_type, label, "it computes on a constant expanded over the batch (Expand to [batch, ...]); snnc cannot fold it"
        )
        if node.op_type not in _PER_SAMPLE_FOLDS or any(is_symbolic(i) for i in inputs if isinstance(i, np.ndarray)):
            return BatchDependent(error)
        attrs = node_attrs(node)
        one = [i.full if isinstance(i, BatchConstant) else i for i in inputs]
        rank = max(np.ndim(i) for i in one if i is not None)
        if (node.op_type == "Transpose" and list(attrs.get("perm") or [1])[0] != 0) or (
            node.op_type == "Concat" and int(attrs.get("axis", 0)) % max(rank, 1) == 0
        ):
            return BatchDependent(error)
        outputs = self._evaluate(node, one)
        if not outputs or outputs[0].ndim == 0 or outputs[0].shape[0] != 1:
            return BatchDependent(error)
        self.env[node.output[0]] = BatchConstant(outputs[0][0])
        self.folded[node.op_type] += 1
        return None

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
            outputs = [o if isinstance(o, BatchConstant) else np.asarray(o) for o in outputs]
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
            if isinstance(o, np.ndarray) and o.size > MAX_ELEMENTS:
                raise too_big(f"the output of {label}", o.size, o.shape)
        return outputs

    # --------------------------------------------------------------- converting
    def _convert(self, node: onnx.NodeProto) -> None:
        if node.domain not in DEFAULT_DOMAINS:
            op_type = f"{node.domain}::{node.op_type}"
            raise UnsupportedOpError(op_type, node_label(node), self.unsupported_hint(op_type))
        converter = self.converters.get(node.op_type)
        note = self.pattern_notes.get(id(node))
        if converter is None:
            hint = self.unsupported_hint(node.op_type)
            raise UnsupportedOpError(node.op_type, node_label(node), f"{note}. {hint}" if note else hint)
        for idx, out in enumerate(node.output[1:], start=1):
            if node.op_type in _MULTI_OUTPUT:
                break
            if out and (out in self.consumers or self.is_graph_output(out)):
                what = _EXTRA_OUTPUTS.get(node.op_type, f"output {idx}")
                raise UnsupportedOpError(
                    node.op_type, node_label(node), f"its output {out!r} ({what}) is used; snnc imports inference graphs only"
                )
        try:
            result = converter(self, node)
        except UnsupportedOpError as exc:
            if note and exc.node == node_label(node):
                raise UnsupportedOpError(exc.op_type, exc.node, f"{exc.hint}; {note}") from None
            raise
        if isinstance(result, list):
            for name, value in zip(node.output, result):
                if name:
                    self.env[name] = value
            return
        if isinstance(result, np.ndarray) and result.size > MAX_ELEMENTS:
            raise too_big(f"the output of {node.op_type} node {node_label(node)!r}", result.size, result.shape)
        if isinstance(result, np.ndarray):
            self.folded[node.op_type] += 1  # Shape of an IR value: a constant, too
        self.env[node.output[0]] = result
