"""The executor: the one graph walk of snnc.

Every piece of snnc that executes a graph is built on :class:`Executor` (a subclass or a
caller), in the spirit of ``torch.fx.Interpreter``: the ANN interpreter
(:class:`Interpreter`, :func:`run_ann`), shape inference (:mod:`snnc.ir.shapes`), the
reference simulator, the energy counter, the report's probes, the layer-wise calibration
runner, the NIR check and the backends' fallbacks and static parts. The executor owns

* **the walk** over the nodes in graph order and **the value environment** (value id ->
  value), **freeing** a value once its last reader has run;
* **values over time**: a value is a :class:`Timed`: ``[T, B, ...]`` when it varies over the
  T steps, or ``[B, ...]`` when it does not (*static*: the direct-coded input and everything
  computed from it alone). Stateless ops on static inputs are computed once (**folding**);
  on time-varying ones they run on all steps at once as a ``[T*B, ...]`` batch; stateful ops
  run their ``sequence`` form over ``[T, B, ...]`` (a list of them for a stateful op of
  several inputs), or their ``constant`` form when a
  time-invariant input gives a time-invariant output. Without ``timesteps`` (the ANN stage)
  every value is static and a stateful op is an error;
* **batching**: :func:`iter_batches` and :func:`run_batched` stream an array through it.

What an op computes comes from the op set only (:mod:`snnc.ir.ops`). **Hooks** let a user
run a node differently (override :meth:`Executor.run_node`, :meth:`Executor.call_stateless`,
:meth:`Executor.call_stateful` or :meth:`Executor.kernel`), observe a value (``observe`` /
``watch``), replace a value (``replace``: node name -> value), look at the environment
before a node runs (``before``), and start from a saved environment at a node (``env`` +
``start``) or stop after one (``stop_after``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from snnc.errors import DataError, VerificationError
from snnc.ir.graph import Graph, Node
from snnc.utils.memory import HeapBound

Observer = Callable[[Node, Any], None]


class Timed:
    """A value over time: ``data`` is [T, B, ...] or, when ``static``, [B, ...] for every step."""

    __slots__ = ("data", "static")

    def __init__(self, data: torch.Tensor, static: bool):
        self.data = data
        self.static = static

    def dense(self, T: int) -> torch.Tensor:
        """``[T, B, ...]``; a static value as a broadcast view (no copy)."""
        if self.static:
            return self.data.unsqueeze(0).expand(T, *self.data.shape)
        return self.data

    def mean(self) -> torch.Tensor:
        """The time average ``[B, ...]``."""
        return self.data if self.static else self.data.mean(0)


def param_tensors(node: Node, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The node's parameters as float32 tensors (zero-copy on CPU)."""
    return {k: torch.from_numpy(a).to(device) for k, a in node.params.items()}


def last_uses(graph: Graph) -> dict[int, int]:
    """For each value (by id), the index of the last node reading it; graph outputs are
    read 'after' the last node. The executor frees a value once that node has run."""
    last: dict[int, int] = {}
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            last[id(v)] = i
    for v in graph.outputs:
        last[id(v)] = len(graph.nodes)
    return last


class Executor:
    """Runs the nodes of ``graph`` on torch tensors (see the module docstring).

    ``timesteps`` is the T of spiking execution (None: the ANN stage, every value static);
    :meth:`run` may set it per call. Parameters are read from the nodes on first use and
    cached; :meth:`refresh` re-reads a node a pass has changed.
    """

    def __init__(self, graph: Graph, device: torch.device | str = "cpu", timesteps: int | None = None):
        self.graph = graph
        self.device = torch.device(device)
        self.timesteps = timesteps
        self._params: dict[int, dict[str, torch.Tensor]] = {}
        self._attrs: dict[int, dict[str, Any]] = {}
        self.reindex()

    # ------------------------------------------------------------ per node
    def reindex(self) -> None:
        """Recompute the node order and last uses (after the graph changed shape)."""
        self._index = {id(n): i for i, n in enumerate(self.graph.nodes)}
        self._last_use = last_uses(self.graph)

    def params(self, node: Node) -> dict[str, torch.Tensor]:
        """``node``'s parameters as the tensors execution uses (on this executor's device)."""
        p = self._params.get(id(node))
        if p is None:
            p = self._params[id(node)] = param_tensors(node, self.device)
        return p

    def param(self, node: Node, key: str) -> torch.Tensor:
        return self.params(node)[key]

    def attrs(self, node: Node) -> dict[str, Any]:
        """``node``'s attributes with the op's defaults filled in."""
        a = self._attrs.get(id(node))
        if a is None:
            a = self._attrs[id(node)] = node.spec.resolve(node.attrs)
        return a

    def refresh(self, node: Node) -> None:
        """Re-read ``node``'s parameters and attributes after a pass changed them (a node new
        to the graph also updates the walk's order)."""
        self._params.pop(id(node), None)
        self._attrs.pop(id(node), None)
        if id(node) not in self._index:
            self.reindex()

    # ------------------------------------------------------------ the walk
    def run(
        self,
        *inputs: torch.Tensor | Timed,
        timesteps: int | None = None,
        env: dict[int, Any] | None = None,
        start: Node | None = None,
        stop_after: Node | None = None,
        before: Callable[[Node, dict[int, Any]], None] | None = None,
        observe: Observer | None = None,
        watch: Sequence[Node] | None = None,
        replace: Mapping[str, Any] | None = None,
    ) -> list[Any] | None:
        """Run the graph and return the values of its outputs (None when stopped by
        ``stop_after``). ``inputs`` are tensors (static values) or :class:`Timed`; with
        ``env`` (a saved environment) and ``start`` the walk resumes at that node instead.
        ``observe(node, value)`` sees every node's output (those in ``watch`` only, when
        given); ``replace[name]`` is used as node ``name``'s output instead of running it;
        ``before(node, env)`` runs before each node."""
        if timesteps is not None:
            self.timesteps = timesteps
        if env is None:
            if len(inputs) != len(self.graph.inputs):
                raise DataError(f"graph {self.graph.name!r} takes {len(self.graph.inputs)} input(s), got {len(inputs)}")
            env = {id(v): x if isinstance(x, Timed) else Timed(x.to(self.device, torch.float32), True) for v, x in zip(self.graph.inputs, inputs)}
        nodes = self.graph.nodes if start is None else self.graph.nodes[self._index[id(start)] :]
        stopped = self.walk(nodes, env, before=before, observe=observe, watch=watch, replace=replace, stop_after=stop_after)
        if stopped is not None:
            return None
        return [env[id(v)] for v in self.graph.outputs]

    def walk(
        self,
        nodes: Sequence[Node],
        env: dict[int, Any],
        *,
        free: bool = True,
        before: Callable[[Node, dict[int, Any]], None] | None = None,
        observe: Observer | None = None,
        watch: Sequence[Node] | None = None,
        replace: Mapping[str, Any] | None = None,
        stop_after: Node | None = None,
    ) -> Node | None:
        """Run ``nodes`` (a part of the graph, in graph order) reading and writing ``env``.
        With ``free``, a value is dropped once its last reader in the graph has run.
        Returns the node it stopped after, or None."""
        watched = None if watch is None else {id(n) for n in watch}
        for node in nodes:
            if before is not None:
                before(node, env)
            if replace is not None and node.name in replace:
                out = replace[node.name]
            else:
                out = self.run_node(node, [env[id(v)] for v in node.inputs])
            env[id(node.output)] = out
            if observe is not None and (watched is None or id(node) in watched):
                observe(node, out)
            if node is stop_after:
                return node
            if free:
                i = self._index.get(id(node))
                for v in node.inputs:
                    if i is not None and self._last_use.get(id(v)) == i:
                        env.pop(id(v), None)
        return None

    # ------------------------------------------------------------ one node
    def run_node(self, node: Node, ins: list[Any]) -> Any:
        """Execute one node on its input values (hook: override to run it differently)."""
        if node.spec.stateful:
            return self.call_stateful(node, ins)
        return self.call_stateless(node, ins)

    def kernel(self, node: Node) -> Callable[[list[torch.Tensor]], torch.Tensor]:
        """The function computing a stateless ``node`` on ``[N, ...]`` batches (hook: a
        backend substitutes its own implementation of an op here)."""
        spec, attrs, params = node.spec, self.attrs(node), self.params(node)
        return lambda xs: spec.compute(xs, attrs, params)

    def call_stateless(self, node: Node, ins: list[Timed]) -> Timed:
        """A stateless op: once on static inputs, else on every step at once ([T*B, ...])."""
        fn = self.kernel(node)
        if all(v.static for v in ins):
            return Timed(fn([v.data for v in ins]), static=True)
        T = self._require_timesteps(node)
        flat = [v.dense(T).reshape(-1, *v.data.shape[(0 if v.static else 1) + 1 :]) for v in ins]
        y = fn(flat)
        return Timed(y.reshape(T, -1, *y.shape[1:]), static=False)

    def call_stateful(self, node: Node, ins: list[Timed]) -> Timed:
        """A stateful op: its ``constant`` form on a static input where it has one (the
        output is static too), else its ``sequence`` form over all T steps."""
        spec = node.spec
        T = self._require_timesteps(node)
        x = ins[0]
        if spec.arity != 1:  # several inputs (a temporal matmul): the sequence form takes the list
            return Timed(spec.sequence([v.dense(T) for v in ins], self.attrs(node), self.params(node)), static=False)
        if x.static and spec.constant is not None:
            return Timed(spec.constant(x.data, self.attrs(node), self.params(node)), static=True)
        return Timed(spec.sequence(x.dense(T), self.attrs(node), self.params(node)), static=False)

    def _require_timesteps(self, node: Node) -> int:
        if self.timesteps is None:
            raise VerificationError(
                f"node {node.name!r}: op {node.op!r} runs over time; run the graph with the spiking simulator (timesteps), "
                "not as an ANN"
            )
        return self.timesteps


def static_values(graph: Graph, static_inputs: bool = True) -> set[int]:
    """The ids of the values the executor computes once (static): with direct coding the
    graph inputs and what is computed from static values alone, by stateless ops or by
    stateful ops with a ``constant`` form. Analyses that need this before running (energy
    counts, a backend's static part) ask here."""
    static = {id(v) for v in graph.inputs} if static_inputs else set()
    for n in graph.nodes:
        spec = n.spec
        if spec.stateful and spec.constant is None:
            continue
        if n.inputs and all(id(v) in static for v in n.inputs):
            static.add(id(n.output))
    return static


# ---------------------------------------------------------------- the ANN stage
class Interpreter(Executor):
    """The ANN-stage executor: every value is a static tensor; analyses (threshold balancing,
    calibration targets, the import check) receive the activations they ask for through
    ``observe``. Nothing is ever spliced into the graph to collect statistics."""

    @torch.no_grad()
    def run(
        self,
        *inputs: torch.Tensor,
        observe: Callable[[Node, torch.Tensor], None] | None = None,
        watch: Sequence[Node] | None = None,
        stop_after: Node | None = None,
    ) -> list[torch.Tensor]:
        """Evaluate the graph on one batch; ``observe(node, out)`` is called for each node
        in ``watch`` (every node when ``watch`` is None). With ``stop_after``, evaluation
        ends once that node has run and an empty list is returned."""
        seen = None if observe is None else (lambda node, value: observe(node, value.data))
        outs = super().run(*inputs, observe=seen, watch=watch, stop_after=stop_after)
        return [] if outs is None else [v.data for v in outs]


def iter_batches(x: np.ndarray | torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield float32 tensors of at most ``batch_size`` samples (the freed heap memory the
    batches leave resident kept bounded: :class:`~snnc.utils.memory.HeapBound`)."""
    n = len(x)
    heap = HeapBound()
    for start in range(0, n, batch_size):
        heap.step()
        chunk = x[start : start + batch_size]
        if isinstance(chunk, np.ndarray):
            chunk = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
        yield chunk.float()


def run_batched(x: np.ndarray | torch.Tensor, batch_size: int, fn: Callable[[torch.Tensor], Any], task=None) -> Any:
    """Apply ``fn`` to every batch of ``x`` and concatenate its outputs along the batch axis:
    ``fn`` returns a list of tensors, or a dict of such lists; the result has the same
    structure with numpy arrays. ``task.advance(n)`` reports progress."""
    acc: Any = None
    for xb in iter_batches(x, batch_size):
        out = fn(xb)
        if isinstance(out, Mapping):
            if acc is None:
                acc = {k: [[] for _ in v] for k, v in out.items()}
            for k, v in out.items():
                for a, y in zip(acc[k], v):
                    a.append(y.cpu().numpy())
        else:
            if acc is None:
                acc = [[] for _ in out]
            for a, y in zip(acc, out):
                a.append(y.cpu().numpy())
        if task is not None:
            task.advance(len(xb))
    if acc is None:
        raise DataError("no samples to run")
    if isinstance(acc, dict):
        return {k: [np.concatenate(a, axis=0) for a in v] for k, v in acc.items()}
    return [np.concatenate(a, axis=0) for a in acc]


ANN_VALUE_BYTES = 16 << 20  # the widest float32 value of one ANN batch stays under this


def ann_batch_size(graph: Graph, batch_size: int) -> int:
    """``batch_size`` lowered where one batch's widest value of ``graph`` would exceed
    ``ANN_VALUE_BYTES``, so that the ANN passes' memory is set by the network, not by how
    many samples stream through it (a ResNet-50 at 224x224: 5 samples per batch; with
    batches of 128 a 2-rank conversion measured a 5.6 GiB peak per rank, 3.05 GiB capped at
    64 MiB). 16 MiB rather than 64: the threshold statistics of a ResNet-18 at 224x224 ran
    1.4x faster on 2 ranks (first touches of a smaller heap; per batch the kernel's page
    faults had cost as much as the arithmetic when two ranks faulted at once) and no slower
    on one. Small networks keep ``batch_size``."""
    widest = max((int(np.prod(v.shape)) for v in graph.values() if v.shape is not None), default=1)
    return int(max(1, min(batch_size, ANN_VALUE_BYTES // (4 * max(1, widest)))))


@torch.no_grad()
def run_ann(graph: Graph, x: np.ndarray | torch.Tensor, *, batch_size: int = 256, device: str = "cpu", progress=None) -> list[np.ndarray]:
    """Evaluate ``graph`` on all samples of ``x`` (single-input graphs); returns numpy outputs."""
    check_input(graph, x)
    batch_size = ann_batch_size(graph, batch_size)
    interp = Interpreter(graph, device)
    task = None
    if progress is not None:  # a plain callable(n) reporting samples done
        task = _Advance(progress)
    return run_batched(x, batch_size, lambda xb: interp.run(xb), task)


class _Advance:
    def __init__(self, fn: Callable[[int], None]):
        self.advance = fn


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
