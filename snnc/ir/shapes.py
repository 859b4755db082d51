"""Shape inference: every op's shape rule, for one node or a whole graph.

Shapes are per sample (no batch dimension). A node's shape comes from its op's shape rule
(:meth:`~snnc.ir.ops.OpSpec.infer_shape`): stateless ops evaluate their own ``compute`` on
one all-zeros sample, so a shape never disagrees with what executing the op gives; stateful
ops declare theirs. A rule that fails raises a :class:`~snnc.errors.VerificationError` naming
the node (the op cannot represent this configuration), or a :class:`ShapeMismatch` when the
input shapes do not fit the op.
"""

from __future__ import annotations

from typing import Any

from snnc.errors import SnncError, VerificationError
from snnc.ir.executor import Executor
from snnc.ir.graph import Graph, Node, Shape


class ShapeMismatch(SnncError):
    """A node's inputs have shapes its op cannot take (torch's own message in ``detail``)."""

    def __init__(self, node: str, op: str, shapes: list[Shape], detail: str):
        self.node, self.op, self.shapes, self.detail = node, op, shapes, detail
        got = ", ".join(str(list(s)) for s in shapes)
        super().__init__(f"node {node!r} ({op}) cannot take input(s) of per-sample shape {got}: {detail}")


def infer_node_shape(node: Node, shapes: list[Shape] | None = None) -> Shape:
    """The per-sample output shape of ``node`` from its inputs' shapes (by default the
    shapes recorded on its input values, which must be known)."""
    shapes = [v.shape for v in node.inputs] if shapes is None else shapes
    if any(s is None for s in shapes):
        missing = [v.name for v in node.inputs if v.shape is None]
        raise VerificationError(f"node {node.name!r}: the shape of its input(s) {', '.join(missing)} is unknown")
    try:
        return node.spec.infer_shape(shapes, node.attr_dict(), node.params)
    except VerificationError as e:
        raise VerificationError(f"node {node.name!r} ({node.op}): {e}") from None
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ShapeMismatch(node.name, node.op, shapes, detail) from None


class ShapePropagation(Executor):
    """The executor on shapes instead of tensors: each value is its per-sample shape, each
    node runs its op's shape rule and records the result on its output value."""

    def run_node(self, node: Node, ins: list[Any]) -> Shape:
        shape = infer_node_shape(node, ins)
        node.output.shape = shape
        return shape


def infer_shapes(graph: Graph) -> None:
    """Fill in every value's per-sample shape, in graph order (graph inputs need theirs)."""
    for v in graph.inputs:
        if v.shape is None:
            raise VerificationError(f"graph input {v.name!r} has no shape")
    ShapePropagation(graph).walk(graph.nodes, {id(v): v.shape for v in graph.inputs})
