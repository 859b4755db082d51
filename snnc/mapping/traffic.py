"""Spike rates per neuron, which weight the placement's traffic: measured or assumed.

Measured (``snnc map --data x.npz``): the reference simulator runs the samples for the
artifact's T and counts, for every neuron, the steps on which it sent a message (a spike,
or a non-zero graded count of a burst / signed neuron: one message either way, since a
graded spike carries its count as payload). Assumed: every neuron at one rate.
"""

from __future__ import annotations

import numpy as np
import torch

from snnc.errors import DataError
from snnc.ir.executor import Timed
from snnc.ir.graph import Graph, Node
from snnc.mapping.placement_file import layer_nodes

DEFAULT_RATE = 0.1  # messages per neuron per step when no data is given (documented in docs/mapping.md)


def assumed_rates(graph: Graph, rate: float = DEFAULT_RATE) -> dict[str, np.ndarray]:
    if not (0.0 < rate <= 1.0):
        raise DataError(f"--rate must be in (0, 1] messages per neuron per step, got {rate}")
    return {n.name: np.full(n.output.shape, rate, dtype=np.float32) for n in layer_nodes(graph) if n.spec.has("neuron")}


@torch.no_grad()
def measured_rates(graph: Graph, x: np.ndarray, timesteps: int, *, batch_size: int = 16, progress=None) -> dict[str, np.ndarray]:
    """Messages per neuron per step of every neuron layer, averaged over the samples ``x``."""
    from snnc.ir.executor import check_input, iter_batches
    from snnc.simulator.reference import ReferenceSimulator

    check_input(graph, x)
    sim = ReferenceSimulator(graph)
    neurons = [n for n in layer_nodes(graph) if n.spec.has("neuron")]
    sums = {n.name: torch.zeros(n.output.shape, dtype=torch.float64) for n in neurons}

    def seen(node: Node, out: Timed) -> None:
        if node.name in sums:
            d = out.data
            if out.static:  # a constant output (driven by nothing that varies): every step alike
                sums[node.name] += (d != 0).sum(0).to(torch.float64) * timesteps
            else:
                sums[node.name] += (d != 0).sum((0, 1)).to(torch.float64)

    task = progress(f"measuring spike rates T={timesteps}", len(x)) if progress else None
    for xb in iter_batches(x, batch_size):
        sim.simulate(xb, [timesteps], observe=seen, watch=neurons)
        if task:
            task.advance(len(xb))
    return {k: (v / (len(x) * timesteps)).numpy().astype(np.float32) for k, v in sums.items()}
