"""Evaluate an ANN-stage graph with torch, streaming data in batches.

Analyses (threshold balancing, calibration, the import check) run this interpreter and
receive the activations they ask for through an ``observe`` callback; nothing is ever
spliced into the graph to collect statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from snnc.errors import DataError, VerificationError
from snnc.ir.graph import Graph, Node

Observer = Callable[[Node, torch.Tensor], None]


def param_tensors(node: Node, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The node's parameters as float32 tensors (zero-copy on CPU)."""
    return {k: torch.from_numpy(a).to(device) for k, a in node.params.items()}


def last_uses(graph: Graph) -> dict[int, int]:
    """For each value (by id), the index of the last node reading it; graph outputs are
    read 'after' the last node. Executors free a value once that node has run."""
    last: dict[int, int] = {}
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            last[id(v)] = i
    for v in graph.outputs:
        last[id(v)] = len(graph.nodes)
    return last


class Interpreter:
    """Runs the stateless ops of a graph on torch tensors.

    Intermediate values are freed as soon as their last reader has run, so memory is
    bounded by the widest cut of the graph for one batch.
    """

    def __init__(self, graph: Graph, device: torch.device | str = "cpu"):
        self.graph = graph
        self.device = torch.device(device)
        self._params = {id(n): param_tensors(n, self.device) for n in graph.nodes}
        self._last_use = last_uses(graph)

    @torch.no_grad()
    def run(
        self,
        *inputs: torch.Tensor,
        observe: Observer | None = None,
        watch: Sequence[Node] | None = None,
        stop_after: Node | None = None,
    ) -> list[torch.Tensor]:
        """Evaluate the graph on one batch; ``observe(node, out)`` is called for each node
        in ``watch`` (every node when ``watch`` is None). With ``stop_after``, evaluation
        ends once that node has run and an empty list is returned."""
        if len(inputs) != len(self.graph.inputs):
            raise DataError(f"graph {self.graph.name!r} takes {len(self.graph.inputs)} input(s), got {len(inputs)}")
        env: dict[int, torch.Tensor] = {}
        for v, x in zip(self.graph.inputs, inputs):
            env[id(v)] = x.to(self.device, torch.float32)
        watched = None if watch is None else {id(n) for n in watch}
        for i, n in enumerate(self.graph.nodes):
            spec = n.spec
            if spec.compute is None:
                raise VerificationError(f"node {n.name!r}: op {n.op!r} is stateful; run the graph with the spiking simulator")
            out = spec.compute([env[id(v)] for v in n.inputs], n, self._params[id(n)])
            env[id(n.output)] = out
            if observe is not None and (watched is None or id(n) in watched):
                observe(n, out)
            if n is stop_after:
                return []
            for v in n.inputs:
                if self._last_use.get(id(v)) == i:
                    env.pop(id(v), None)
        return [env[id(v)] for v in self.graph.outputs]


def iter_batches(x: np.ndarray | torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield float32 tensors of at most ``batch_size`` samples."""
    n = len(x)
    for start in range(0, n, batch_size):
        chunk = x[start : start + batch_size]
        if isinstance(chunk, np.ndarray):
            chunk = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
        yield chunk.float()


@torch.no_grad()
def run_ann(graph: Graph, x: np.ndarray | torch.Tensor, *, batch_size: int = 256, device: str = "cpu", progress=None) -> list[np.ndarray]:
    """Evaluate ``graph`` on all samples of ``x`` (single-input graphs); returns numpy outputs."""
    check_input(graph, x)
    interp = Interpreter(graph, device)
    outs: list[list[np.ndarray]] = [[] for _ in graph.outputs]
    for xb in iter_batches(x, batch_size):
        for acc, y in zip(outs, interp.run(xb)):
            acc.append(y.cpu().numpy())
        if progress is not None:
            progress(len(xb))
    return [np.concatenate(a, axis=0) for a in outs]


def check_input(graph: Graph, x: np.ndarray | torch.Tensor) -> None:
    """Raise a DataError if ``x`` does not fit the graph's (single) input."""
    if len(graph.inputs) != 1:
        raise DataError(f"graph {graph.name!r} has {len(graph.inputs)} inputs; snnc handles single-input models")
    want = graph.inputs[0].shape
    got = tuple(x.shape[1:])
    if want is not None and got != tuple(want):
        raise DataError(
            f"input data has per-sample shape {list(got)} but the model expects {list(want)} "
            f"(array shape must be [N, {', '.join(map(str, want))}])"
        )


@torch.no_grad()
def infer_shapes(graph: Graph) -> None:
    """Fill in every value's per-sample shape by propagating one all-zeros sample.

    Stateful spiking ops keep their input's shape, except spiking max pooling, whose
    shape is that of max pooling.
    """
    from snnc.ir.ops import get_op

    for v in graph.inputs:
        if v.shape is None:
            raise VerificationError(f"graph input {v.name!r} has no shape")
    env: dict[int, torch.Tensor] = {id(v): torch.zeros((1, *v.shape)) for v in graph.inputs}
    for n in graph.nodes:
        ins = [env[id(v)] for v in n.inputs]
        if n.op == "spiking_max_pool":
            out = get_op("max_pool").compute(ins, n, {})
        elif n.spec.compute is None:
            out = ins[0]
        else:
            out = n.spec.compute(ins, n, param_tensors(n))
        n.output.shape = tuple(out.shape[1:])
        env[id(n.output)] = out
