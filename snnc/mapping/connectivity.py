"""Who feeds whom, element by element: the connectivity of an SNN-stage graph's layers.

A *layer* is a sink of the spiking graph: a neuron node (``if_neuron``) or the readout.
Between two layers there are only linear ops (synapses: conv, linear, affine, add, pooling
and reshaping of spikes or of currents), so which neurons of a source layer reach which
neurons of a destination layer, and through how many synapses, is a property of the
weights' non-zero pattern. :class:`Connectivity` finds it with one autograd pass per block
through a *structural copy* of the network: every weight replaced by its non-zero
indicator, biases and shifts by zero, add coefficients by one, spiking max pooling by the
sum over its window (any of them may be the one that passes), and every layer's output by
a leaf of ones. The gradient of a destination block's summed input current with respect to
a source layer's leaf is then, per source neuron, the number of synaptic paths from it into
the block: non-zero exactly where the block needs that neuron's spikes (no cancellation:
everything is non-negative). Summed with the measured spike rates it gives the synaptic
operations per step; its non-zero count, the block's fan-in.

The graph input is not a source: under direct coding the analog input reaches the first
layer as a bias current computed by the host (docs/lava.md), not as spikes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from snnc.errors import DataError
from snnc.ir.indicator import Indicators, window_sum
from snnc.ir.graph import Graph, Node
from snnc.mapping.placement_file import layer_nodes

Box = tuple[tuple[int, int], ...]  # per axis of a layer's output (batch excluded): [lo, hi)


def box_size(box: Box) -> int:
    return int(np.prod([hi - lo for lo, hi in box])) if box else 1


def box_slices(box: Box) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in box)


@dataclass
class Needs:
    """What one block of a destination layer reads from each source layer: per source
    neuron the number of synaptic paths into the block (float32, the source's shape)."""

    paths: dict[str, np.ndarray]

    def fan_in(self) -> int:
        return int(sum(int(np.count_nonzero(a)) for a in self.paths.values()))

    def connections(self) -> int:
        return int(round(sum(float(a.sum(dtype=np.float64)) for a in self.paths.values())))


class _Structural(Indicators):
    """Path counts over the whole spiking graph (:class:`~snnc.ir.indicator.Indicators`, the
    energy estimate's fan-out walk): every layer's output is a leaf of ones, spiking max
    pooling passes the sum over its window, a readout passes its input current."""

    def __init__(self, graph: Graph, leaves: dict[str, torch.Tensor]):
        super().__init__(graph, "cpu", None)
        self.leaves = leaves

    def run_node(self, node: Node, ins: list[torch.Tensor]) -> torch.Tensor:
        if node.spec.has("neuron"):
            return self.leaves[node.name]
        if node.spec.has("readout"):
            return ins[0]
        if node.op == "spiking_max_pool":
            return window_sum(node, ins[0])
        if node.spec.stateful:
            raise DataError(
                f"node {node.name!r} ({node.op}) is not a neuron, a readout or spiking max pooling: core mapping handles "
                "spiking CNNs and MLPs; attention networks' host-side ops (matmul, softmax, LayerNorm) have no core placement yet"
            )
        return super().run_node(node, ins)


class Connectivity:
    """The element-level connectivity of ``graph``'s layers (see the module docstring)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.layers = layer_nodes(graph)
        if not self.layers:
            raise DataError(f"graph {graph.name!r} has no neuron or readout layers: is it a converted SNN (.snn)?")
        bad = [n for n in graph.nodes if n.spec.stateful and not (n.spec.has("neuron") or n.spec.has("readout") or n.op == "spiking_max_pool")]
        if bad:
            names = ", ".join(f"{n.name} ({n.op})" for n in bad[:3])
            raise DataError(
                f"{len(bad)} host-side temporal op(s) ({names}{', ...' if len(bad) > 3 else ''}): core mapping handles spiking "
                "CNNs and MLPs; an attention network's matmul / softmax / LayerNorm need host or near-memory compute"
            )
        self.shapes = {n.name: tuple(n.output.shape) for n in self.layers}
        self.leaves = {n.name: torch.ones((1, *n.output.shape), dtype=torch.float64, requires_grad=True) for n in self.layers if n.spec.has("neuron")}
        env: dict[int, torch.Tensor] = {id(v): torch.zeros((1, *v.shape), dtype=torch.float64) for v in graph.inputs}
        with torch.enable_grad():
            _Structural(graph, self.leaves).walk(graph.nodes, env, free=False)
        self.currents = {n.name: env[id(n.inputs[0])] for n in self.layers}
        # Which layers each layer reads (non-zero paths), from one pass over the whole layer.
        self.sources: dict[str, list[str]] = {}
        self._whole: dict[str, Needs] = {}
        for n in self.layers:
            needs = self.needs(n.name, tuple((0, s) for s in self.shapes[n.name]))
            self._whole[n.name] = needs
            self.sources[n.name] = list(needs.paths)

    def needs(self, layer: str, box: Box) -> Needs:
        """What the block ``box`` of ``layer`` reads from each source layer."""
        cur = self.currents[layer]
        if not cur.requires_grad:
            return Needs({})  # driven by the analog input alone (a bias current)
        names = [k for k in self.leaves if k != layer]
        out = cur[(0, *box_slices(box))].sum()
        grads = torch.autograd.grad(out, [self.leaves[k] for k in names], retain_graph=True, allow_unused=True)
        paths = {}
        for k, g in zip(names, grads):
            if g is not None and bool((g != 0).any()):
                paths[k] = g[0].detach().numpy().astype(np.float32)  # path counts: small integers, exact in float32
        return Needs(paths)

    def whole(self, layer: str) -> Needs:
        return self._whole[layer]



def synaptic_nodes(graph: Graph, layer: Node, layer_names: Sequence[str]) -> list[Node]:
    """The synaptic ops (conv, conv_transpose, linear, affine) between ``layer`` and the
    layers it reads: walking up from its input until a layer's output or the graph input."""
    producer = {id(n.output): n for n in graph.nodes}
    stop = set(layer_names)
    seen, out, stack = set(), [], [layer.inputs[0]]
    while stack:
        v = stack.pop()
        n = producer.get(id(v))
        if n is None or n.name in stop or id(n) in seen:
            continue
        seen.add(id(n))
        if n.spec.has("synaptic") or n.op == "affine":
            out.append(n)
        stack.extend(n.inputs)
    return out
