"""snnc's graph IR: values, nodes, graphs, the op set, the executor, verifiers and serialisation."""

from snnc.ir.executor import Executor, Interpreter, Timed, run_ann
from snnc.ir.graph import Graph, Node, Value, format_graph
from snnc.ir.ops import all_ops, get_op, ops_with
from snnc.ir.shapes import infer_shapes
from snnc.ir.verify import verify

__all__ = ["Executor", "Graph", "Interpreter", "Node", "Timed", "Value", "all_ops", "format_graph", "get_op", "infer_shapes", "ops_with", "run_ann", "verify"]
