"""snnc's graph IR: values, nodes, graphs, the op set, verifiers and serialisation."""

from snnc.ir.graph import Graph, Node, Value, format_graph
from snnc.ir.interpreter import Interpreter, infer_shapes, run_ann
from snnc.ir.ops import all_ops, get_op
from snnc.ir.verify import verify

__all__ = ["Graph", "Node", "Value", "format_graph", "Interpreter", "infer_shapes", "run_ann", "all_ops", "get_op", "verify"]
