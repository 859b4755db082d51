"""Spike rates per neuron, which weight the placement's traffic: measured or assumed.

Measured (``snnc map --data x.npz``): the reference simulator runs the samples for the
artifact's T and counts, for every neuron, the steps on which it sent a message (a spike,
or a non-zero graded count of a burst / signed neuron: one message either way, since a
graded spike carries its count as payload). Assumed: every neuron at one rate.
"""

from __future__ import annotations

import numpy as np

from snnc.errors import DataError
from snnc.ir.graph import Graph
from snnc.mapping.placement_file import layer_nodes

DEFAULT_RATE = 0.1  # messages per neuron per step when no data is given (documented in docs/mapping.md)


def assumed_rates(graph: Graph, rate: float = DEFAULT_RATE) -> dict[str, np.ndarray]:
    if not (0.0 < rate <= 1.0):
        raise DataError(f"--rate must be in (0, 1] messages per neuron per step, got {rate}")
    return {n.name: np.full(n.output.shape, rate, dtype=np.float32) for n in layer_nodes(graph) if n.spec.has("neuron")}


def measured_rates(graph: Graph, x: np.ndarray, timesteps: int) -> dict[str, np.ndarray]:
    """Messages per neuron per step of every neuron layer, averaged over the samples ``x``
    (the energy estimate's per-neuron message counts: :func:`snnc.analysis.energy.activity_maps`)."""
    from snnc.analysis.energy import activity_maps

    _, messages = activity_maps(graph, x, timesteps)
    return {n.name: np.asarray(messages[n.name], dtype=np.float32) for n in layer_nodes(graph) if n.spec.has("neuron")}
