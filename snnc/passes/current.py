"""Adding a constant to a spiking layer's input current, wherever the graph allows it.

Bias calibration and the per-step half-threshold shift both add a per-channel constant
``delta`` to the current ``z(t)`` an ``if_neuron`` (or a readout) integrates every step.
:func:`shift_input_current` puts it where it costs nothing at run time:

1. into the bias of the conv / transposed conv / linear (on a flat value) that produces the
   current, when nothing else reads that output;
2. for a residual ``add``, into the bias of one such branch, divided by that branch's
   coefficient;
3. otherwise into an ``affine`` node (scale 1) inserted in front of the neuron.
"""

from __future__ import annotations

import numpy as np

from snnc.ir.graph import Graph, Node, Value

def channel_shape(value: Value) -> tuple[int, ...]:
    """Broadcast shape of one value per channel: ``[C, 1, 1]`` for ``[C, H, W]``, ``[F]`` for ``[F]``."""
    shape = value.shape
    return (shape[0],) + (1,) * (len(shape) - 1)


def _sole_reader(value: Value, node: Node) -> bool:
    """``node`` reads ``value`` exactly once and nothing else does."""
    return len(value.uses) == 1 and value.uses[0][0] is node and value not in node.graph.outputs


def _biased(node: Node | None) -> bool:
    """A node whose bias is added per channel (axis 1) of its output: conv and transposed
    conv always; linear only on a flat value (on [C, L] its bias runs along the last axis)."""
    if node is None or not node.spec.has("synaptic"):
        return False
    return node.op != "linear" or len(node.output.shape) == 1


def _add_bias(producer: Node, delta: np.ndarray) -> None:
    producer.set_param("bias", producer.params["bias"] + delta.astype(np.float32))


def shift_input_current(graph: Graph, consumer: Node, delta: np.ndarray, *, name: str = "shift") -> Node:
    """Add ``delta`` (one value per channel of ``consumer``'s input) to that input every
    step. Returns the node that now carries it (possibly a new ``affine`` node)."""
    value = consumer.inputs[0]
    delta = np.asarray(delta, dtype=np.float64).reshape(-1)
    producer = value.producer
    if producer is not None and _sole_reader(value, consumer):
        if _biased(producer):
            _add_bias(producer, delta)
            return producer
        if producer.op == "add":
            coeffs = producer.attr("coeffs")
            for i, branch in enumerate(producer.inputs):
                src = branch.producer
                if not _biased(src) or not _sole_reader(branch, producer):
                    continue
                c = np.ones(1) if coeffs is None else np.asarray(coeffs[i], dtype=np.float64).reshape(-1)
                if np.any(c == 0):
                    continue
                _add_bias(src, delta / c)
                return src
    if producer is not None and producer.op == "affine" and _sole_reader(value, consumer):
        producer.set_param("shift", producer.params["shift"] + delta.reshape(channel_shape(value)))
        return producer
    node = graph.add_node(
        "affine",
        [value],
        {},
        {"scale": np.ones(1, np.float32), "shift": delta.reshape(channel_shape(value)).astype(np.float32)},
        name=f"{consumer.name}_{name}",
        shape=value.shape,
        before=consumer,
    )
    graph.set_input(consumer, 0, node.output)
    return node
