"""Shape inference: every op's shape rule, for one node or a whole graph.

Shapes are per sample (no batch dimension). A node's shape comes from its op's shape rule
(:meth:`~snnc.ir.ops.OpSpec.infer_shape`): stateless ops evaluate their own ``compute`` on
one all-zeros sample, so a shape never disagrees with what executing the op gives; stateful
ops declare theirs. A rule that fails raises a :class:`~snnc.errors.VerificationError` naming
the node (the op cannot represent this configuration), or a :class:`ShapeMismatch` when the
input shapes do not fit the op.
"""

from __future__ import annotations

from snnc.errors import SnncError, VerificationError
from snnc.ir.graph import Graph, Node, Shape


class ShapeMismatch(SnncError):
    """A node's inputs have shapes its op cannot take (torch's own message in ``detail``)."""

    def __init__(self, node: str, op: str, shapes: list[Shape], detail: str):
        self.node, self.op, self.shapes, self.detail = node, op, shapes, detail
        got = ", ".join(str(list(s)) for s in shapes)
        super().__init__(f"node {node!r} ({op}) cannot take input(s) of per-sample shape {got}: {detail}")


def infer_node_shape(node: Node) -> Shape:
    """The per-sample output shape of ``node`` from its inputs' shapes (which must be known)."""
    shapes = [v.shape for v in node.inputs]
    if any(s is None for s in shapes):
        missing = [v.name for v in node.inputs if v.shape is None]
        raise VerificationError(f"node {node.name!r}: the shape of its input(s) {', '.join(missing)} is unknown")
    import torch

    from snnc.ir.interpreter import param_tensors

    try:
        with torch.no_grad():
            spec = node.spec
            zeros = [torch.zeros((1, *s)) for s in shapes]
            if node.op == "spiking_max_pool":
                from snnc.ir.ops import get_op

                out = get_op("max_pool").compute(zeros, node, {})
            elif spec.compute is None:
                out = zeros[0]
            else:
                out = spec.compute(zeros, node, param_tensors(node))
        return tuple(int(d) for d in out.shape[1:])
    except VerificationError as e:
        raise VerificationError(f"node {node.name!r} ({node.op}): {e}") from None
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ShapeMismatch(node.name, node.op, shapes, detail) from None


def infer_shapes(graph: Graph) -> None:
    """Fill in every value's per-sample shape, in graph order (graph inputs need theirs)."""
    for v in graph.inputs:
        if v.shape is None:
            raise VerificationError(f"graph input {v.name!r} has no shape")
    for n in graph.nodes:
        n.output.shape = infer_node_shape(n)
