"""The snnc graph IR: values, nodes and graphs.

Invariants the IR keeps itself (passes never maintain them by hand):

* every :class:`Value` has exactly one producer: a :class:`Node` or, for graph inputs, none;
* every node has exactly one output value, named like the node;
* use lists are exact: ``value.uses`` lists every ``(node, input_index)`` reading the value;
* ``graph.nodes`` is in topological order (producers before users);
* names are unique within a graph.

Shapes are per sample: the batch dimension is implicit and never stored. Parameters are
float32 numpy arrays owned by their node; attributes are JSON-serialisable Python values.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from snnc.errors import VerificationError

Shape = tuple[int, ...]


class Value:
    """An SSA value: a graph input or the output of exactly one node."""

    __slots__ = ("name", "shape", "producer", "_uses")

    def __init__(self, name: str, shape: Shape | None = None, producer: Node | None = None):
        self.name = name
        self.shape: Shape | None = tuple(int(d) for d in shape) if shape is not None else None
        self.producer = producer
        self._uses: list[tuple[Node, int]] = []

    @property
    def uses(self) -> tuple[tuple[Node, int], ...]:
        """Every ``(node, input_index)`` that reads this value."""
        return tuple(self._uses)

    @property
    def users(self) -> list[Node]:
        """The distinct nodes reading this value, in use order."""
        seen: dict[int, Node] = {}
        for node, _ in self._uses:
            seen.setdefault(id(node), node)
        return list(seen.values())

    def __repr__(self) -> str:
        return f"%{self.name}{list(self.shape) if self.shape is not None else ''}"


class Node:
    """One operation. ``op`` names an :class:`~snnc.ir.ops.OpSpec` in the op registry."""

    __slots__ = ("op", "name", "_inputs", "output", "attrs", "params", "graph")

    def __init__(self, op: str, name: str, attrs: dict[str, Any], params: dict[str, np.ndarray]):
        self.op = op
        self.name = name
        self._inputs: list[Value] = []
        self.output = Value(name, None, self)
        self.attrs = attrs
        self.params = params
        self.graph: Graph | None = None

    @property
    def inputs(self) -> tuple[Value, ...]:
        return tuple(self._inputs)

    @property
    def spec(self):
        from snnc.ir.ops import get_op

        return get_op(self.op)

    def attr(self, key: str) -> Any:
        """The attribute value, or the op's declared default."""
        if key in self.attrs:
            return self.attrs[key]
        return self.spec.attr_default(key)

    def attr_dict(self) -> dict[str, Any]:
        """Every attribute of the op: the node's values, the op's defaults for the rest."""
        return self.spec.resolve(self.attrs)

    def set_param(self, key: str, value: np.ndarray | None) -> None:
        if value is None:
            self.params.pop(key, None)
        else:
            self.params[key] = np.array(value, dtype=np.float32, order="C")  # a copy; keeps 0-d arrays 0-d

    def __repr__(self) -> str:
        args = ", ".join(f"%{v.name}" for v in self._inputs)
        return f"%{self.name} = {self.op}({args})"


class Graph:
    """A dataflow graph of :class:`Node` objects in topological order."""

    def __init__(self, name: str = "graph", stage: str = "ann"):
        self.name = name
        self.stage = stage
        self.inputs: list[Value] = []
        self._outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.meta: dict[str, Any] = {}
        self._names: set[str] = set()

    # ------------------------------------------------------------------ names
    def unique_name(self, base: str) -> str:
        base = base or "v"
        if base not in self._names:
            return base
        for i in itertools.count(1):
            cand = f"{base}_{i}"
            if cand not in self._names:
                return cand
        raise AssertionError("unreachable")

    def _claim(self, name: str) -> str:
        name = self.unique_name(name)
        self._names.add(name)
        return name

    # ------------------------------------------------------------ construction
    def add_input(self, name: str, shape: Sequence[int]) -> Value:
        value = Value(self._claim(name), tuple(shape), None)
        self.inputs.append(value)
        return value

    def add_node(
        self,
        op: str,
        inputs: Sequence[Value],
        attrs: dict[str, Any] | None = None,
        params: dict[str, np.ndarray] | None = None,
        name: str | None = None,
        *,
        shape: Sequence[int] | None = None,
        before: Node | None = None,
        after: Node | None = None,
    ) -> Node:
        """Create a node reading ``inputs`` and insert it (at the end by default).

        ``before``/``after`` place it relative to an existing node; the caller is
        responsible for choosing a position that keeps topological order, which the
        verifier checks.
        """
        from snnc.ir.ops import get_op

        get_op(op)  # unknown op names fail here, not later
        node = Node(op, self._claim(name or op), dict(attrs or {}), {})
        for key, arr in (params or {}).items():
            node.set_param(key, arr)
        node.graph = self
        for i, v in enumerate(inputs):
            node._inputs.append(v)
            v._uses.append((node, i))
        if shape is not None:
            node.output.shape = tuple(int(d) for d in shape)
        if before is not None:
            self.nodes.insert(self.nodes.index(before), node)
        elif after is not None:
            self.nodes.insert(self.nodes.index(after) + 1, node)
        else:
            self.nodes.append(node)
        return node

    # -------------------------------------------------------------- outputs
    @property
    def outputs(self) -> tuple[Value, ...]:
        return tuple(self._outputs)

    def set_outputs(self, values: Iterable[Value]) -> None:
        """Set graph outputs; duplicates are dropped, order kept."""
        out: list[Value] = []
        for v in values:
            if all(v is not o for o in out):
                out.append(v)
        self._outputs = out

    # ------------------------------------------------------------- rewriting
    def set_input(self, node: Node, index: int, value: Value) -> None:
        old = node._inputs[index]
        old._uses.remove((node, index))
        node._inputs[index] = value
        value._uses.append((node, index))

    def replace_all_uses(self, old: Value, new: Value, *, except_nodes: Iterable[Node] = ()) -> int:
        """Make every reader of ``old`` (and graph outputs) read ``new``; returns the count."""
        skip = {id(n) for n in except_nodes}
        count = 0
        for node, idx in list(old._uses):
            if id(node) in skip:
                continue
            self.set_input(node, idx, new)
            count += 1
        if any(o is old for o in self._outputs):
            self.set_outputs(new if o is old else o for o in self._outputs)
            count += 1
        return count

    def remove_node(self, node: Node) -> None:
        """Remove a node whose output nobody reads."""
        if node.output._uses:
            users = ", ".join(n.name for n in node.output.users)
            raise VerificationError(f"cannot remove node {node.name!r}: its output is still read by {users}")
        if any(o is node.output for o in self._outputs):
            raise VerificationError(f"cannot remove node {node.name!r}: it produces a graph output")
        for i, v in enumerate(node._inputs):
            v._uses.remove((node, i))
        node._inputs = []
        self.nodes.remove(node)
        self._names.discard(node.name)
        node.graph = None

    def bypass(self, node: Node, input_index: int = 0) -> None:
        """Replace ``node`` by its ``input_index``-th input everywhere, then remove it."""
        src = node._inputs[input_index]
        self.replace_all_uses(node.output, src)
        self.remove_node(node)

    def remove_dead_nodes(self) -> int:
        """Remove nodes that contribute to no graph output; returns how many."""
        live: set[int] = set()
        stack = [v.producer for v in self._outputs if v.producer is not None]
        while stack:
            n = stack.pop()
            if id(n) in live:
                continue
            live.add(id(n))
            stack.extend(v.producer for v in n._inputs if v.producer is not None)
        dead = [n for n in reversed(self.nodes) if id(n) not in live]
        for n in dead:
            for i, v in enumerate(n._inputs):
                v._uses.remove((n, i))
            n._inputs = []
            self.nodes.remove(n)
            self._names.discard(n.name)
        return len(dead)

    # -------------------------------------------------------------- queries
    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def find(self, op: str) -> list[Node]:
        return [n for n in self.nodes if n.op == op]

    def having(self, trait: str) -> list[Node]:
        """The nodes whose op declares ``trait`` (:data:`snnc.ir.ops.TRAITS`), in graph order."""
        return [n for n in self.nodes if n.spec.has(trait)]

    def values(self) -> Iterator[Value]:
        yield from self.inputs
        for n in self.nodes:
            yield n.output

    def toposort(self) -> None:
        """Re-sort ``nodes`` topologically (stable: keeps the current order where it can)."""
        order = {id(n): i for i, n in enumerate(self.nodes)}
        indeg = {id(n): sum(1 for v in n._inputs if v.producer is not None) for n in self.nodes}
        ready = [n for n in self.nodes if indeg[id(n)] == 0]
        out: list[Node] = []
        while ready:
            ready.sort(key=lambda n: order[id(n)])
            n = ready.pop(0)
            out.append(n)
            for user, _ in n.output._uses:
                indeg[id(user)] -= 1
                if indeg[id(user)] == 0:
                    ready.append(user)
        if len(out) != len(self.nodes):
            raise VerificationError("graph has a cycle")
        self.nodes = out

    def num_params(self) -> int:
        return int(sum(a.size for n in self.nodes for a in n.params.values()))

    # -------------------------------------------------------------- copying
    def clone(self) -> Graph:
        """A deep copy sharing nothing with this graph."""
        g = Graph(self.name, self.stage)
        g.meta = copy.deepcopy(self.meta)
        vmap: dict[int, Value] = {}
        for v in self.inputs:
            vmap[id(v)] = g.add_input(v.name, v.shape)
        for n in self.nodes:
            m = g.add_node(
                n.op,
                [vmap[id(v)] for v in n._inputs],
                copy.deepcopy(n.attrs),
                {k: a.copy() for k, a in n.params.items()},
                n.name,
                shape=n.output.shape,
            )
            vmap[id(n.output)] = m.output
        g.set_outputs(vmap[id(v)] for v in self._outputs)
        return g

    def __repr__(self) -> str:
        return format_graph(self)


def format_graph(graph: Graph, *, params: bool = True) -> str:
    """A readable, MLIR-like listing of the graph (used by ``--print-after-all``)."""
    lines = [f"graph {graph.name} [stage={graph.stage}] ("]
    for v in graph.inputs:
        lines.append(f"    {v!r},")
    lines.append(") {")
    for n in graph.nodes:
        attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(n.attrs.items()))
        line = f"  {n!r}"
        if attrs:
            line += f" {{{attrs}}}"
        if params and n.params:
            ps = ", ".join(f"{k}:{list(a.shape)}" for k, a in n.params.items())
            line += f" <{ps}>"
        if n.output.shape is not None:
            line += f" : {list(n.output.shape)}"
        lines.append(line)
    lines.append("  return " + ", ".join(repr(v) for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines)


def _fmt_attr(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)
