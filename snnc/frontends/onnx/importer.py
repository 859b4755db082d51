"""The ONNX import driver: the :class:`Importer` whose state the converters share (the
tensor-name environment, constants, emission) and which folds or converts every needed node.
It is given its dispatch tables (converters, folders) rather than importing them, so the
converters can refer to it without an import cycle; :func:`snnc.frontends.onnx.import_onnx`
wires them together."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from snnc.errors import DataError, UnsupportedOpError
from snnc.frontends.common import constant_output, emit_node, too_many_inputs
from snnc.frontends.onnx.helpers import DEFAULT_DOMAINS, FLOAT_TYPES, Tensor, ir_name, node_attrs, node_label, sanitize
from snnc.frontends.onnx.load import needed_nodes, select_outputs
from snnc.ir.graph import Graph, Value

log = logging.getLogger(__name__)

# What the extra outputs of multi-output ops are; used in "is used" errors.
_EXTRA_OUTPUTS = {
    "BatchNormalization": "the running mean/variance of training mode",
    "MaxPool": "the argmax indices",
    "Dropout": "the dropout mask",
}


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
            raise too_many_inputs("ONNX", [i.name for i in inputs])
        inp = inputs[0]
        ttype = inp.type.tensor_type if inp.type.HasField("tensor_type") else None
        if ttype is None or not ttype.HasField("shape"):
            raise DataError(f"model input {inp.name!r} is not a tensor with a known shape; re-export the model with a fixed input shape")
        if ttype.elem_type not in FLOAT_TYPES:
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
        self.env[inp.name] = self.graph.add_input(sanitize(inp.name) or "input", shape)

    def _set_outputs(self) -> None:
        outs: list[Value] = []
        for name in self.output_sources:
            v = self.env.get(name)
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
                node_label(node),
                f"its input {index} ({node.input[index]!r}) is a constant; snnc maps {node.op_type} only with that input "
                "computed from the model input (e.g. MatMul(x, W), not MatMul(W, x))",
            )
        return t

    def const(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
        """Input ``index`` of ``node``, which must be a constant."""
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
        """Add an IR node for ONNX ``node`` (named after it unless ``name`` is given) and
        compute its per-sample shape right away (see :func:`~snnc.frontends.common.emit_node`)."""
        return emit_node(
            self.graph, op, inputs, attrs=attrs, params=params, name=name or ir_name(node), op_type=node.op_type, node=node_label(node)
        )

    # ------------------------------------------------------------------ folding
    def _fold(self, node: onnx.NodeProto) -> None:
        inputs = [self.lookup(i) if i else None for i in node.input]
        folder = self.folders.get(node.op_type) if node.domain in DEFAULT_DOMAINS else None
        if folder is not None:
            outputs = folder(node, inputs, node_attrs(node))
        else:
            outputs = self.fold_fallback(node, inputs)
        for name, arr in zip(node.output, outputs):
            if name:
                self.env[name] = np.asarray(arr)
        self.folded[node.op_type] += 1

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
        if isinstance(result, np.ndarray):
            self.folded[node.op_type] += 1  # Shape of an IR value: a constant, too
        self.env[node.output[0]] = result
