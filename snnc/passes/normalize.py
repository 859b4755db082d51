"""normalize-weights: binary spikes everywhere (weight normalisation), for hardware targets.

After insert-if a neuron emits weighted spikes θ·s(t). Hardware sends binary spikes s(t),
so the factor θ must move into whatever reads the spikes. The pass propagates, in
topological order, a positive per-channel *scale* σ for every value (true value = σ ⊙
stored value):

* ``if_neuron``: its input arrives with scale σ_in, so threshold and initial potential
  are divided by σ_in (the membrane trajectory is scaled by a positive constant: the
  same spikes); it then emits unit spikes and its output scale is θ.
* ``conv`` / ``conv_transpose`` / ``linear``: W[:, c] ← W[:, c] · σ_c along the input
  channels; the output scale is 1 (the bias is unchanged).
* ``affine``: scale ← scale · σ; output scale 1.
* ``add``: when branches arrive with different scales (neurons with different thresholds
  meeting at a residual add), each branch is rescaled by its own σ through the add's
  ``coeffs``; output scale 1. Equal scales pass through unchanged.
* ``concat`` along channels concatenates the branch scales; pooling, upsampling and
  spiking max pooling pass a per-channel scale through (a positive per-channel factor
  commutes with them); ``reshape`` expands it per element.
* Where a scale cannot pass (per-neuron scales through pooling, concatenation off the
  channel axis, a graph output), an ``affine`` restores true values.

Algebraically the network is unchanged; numerically, products are rounded differently,
so a membrane potential exactly at threshold may resolve differently.
"""

from __future__ import annotations

import numpy as np

from snnc.errors import PassError
from snnc.ir.graph import Graph, Node, Value
from snnc.passes.base import Pass, PassContext, register_pass

def _is_one(s: np.ndarray | None) -> bool:
    return s is None or bool(np.all(s == 1.0))


def _per_channel(s: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``s`` as a [C] vector if it is constant over every non-channel axis, else None."""
    full = np.broadcast_to(s, shape)
    if len(shape) == 0:
        return None
    flat = full.reshape(shape[0], -1)
    if np.all(flat == flat[:, :1]):
        return flat[:, 0].copy()
    return None


@register_pass
class NormalizeWeights(Pass):
    """After normalize-weights every ``if_neuron`` emits unit (binary) spikes and the graph
    computes the same function; residual branches with different thresholds are rescaled
    by the add's coefficients."""

    name = "normalize-weights"
    requires_stage = "snn"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        scale: dict[int, np.ndarray | None] = {id(v): None for v in graph.inputs}
        changed = False
        for node in list(graph.nodes):
            ins = [scale.get(id(v)) for v in node.inputs]
            out, did = self._visit(graph, node, ins)
            scale[id(node.output)] = out
            changed |= did
        for v in graph.outputs:  # readout inputs must carry true values
            if not _is_one(scale.get(id(v))):
                raise PassError(f"normalize-weights: output {v.name!r} is left scaled")
        return changed

    # Each visit returns (output scale, changed).
    def _visit(self, graph: Graph, node: Node, ins: list[np.ndarray | None]) -> tuple[np.ndarray | None, bool]:
        op = node.op
        if node.spec.has("neuron"):
            changed = False
            if not _is_one(ins[0]):
                node.set_param("threshold", node.params["threshold"] / ins[0])
                node.set_param("v_init", node.params["v_init"] / ins[0])
                changed = True
            if node.attr("spike_scale") == "threshold":
                node.attrs["spike_scale"] = "unit"
                # Output scale = the true threshold (per channel or per neuron).
                return (node.params["threshold"] * (1.0 if _is_one(ins[0]) else ins[0])), True
            return None, changed
        if all(_is_one(s) for s in ins):
            return None, False
        if node.spec.has("synaptic"):
            s = self._channel_vector(graph, node, 0, ins[0])
            if s is None:
                return None, True
            self._scale_input_channels(node, s)
            return None, True
        if op == "affine":
            node.set_param("scale", node.params["scale"] * ins[0])
            return None, True
        if op == "add":
            return self._add(graph, node, ins)
        if op == "concat":
            return self._concat(graph, node, ins)
        if node.spec.has("channelwise"):
            s = self._channel_vector(graph, node, 0, ins[0])
            if s is None:
                return None, True
            keep = len(node.output.shape) - 1
            return s.reshape((-1,) + (1,) * keep), True
        if op == "reshape":
            full = np.broadcast_to(ins[0], node.inputs[0].shape).reshape(node.output.shape)
            return np.ascontiguousarray(full), True
        # readout or anything else: restore true values in front of it.
        for i, s in enumerate(ins):
            if not _is_one(s):
                self._materialise(graph, node, i, s)
        return None, True

    def _channel_vector(self, graph: Graph, node: Node, i: int, s: np.ndarray) -> np.ndarray | None:
        """The input's scale as a [C] vector; if it is per neuron, restore true values
        with an affine and return None."""
        shape = node.inputs[i].shape
        if node.op == "linear":
            # A linear layer reads the last axis: a scale constant over the others folds
            # into its columns.
            full = np.broadcast_to(s, shape).reshape(-1, shape[-1])
            vec = full[0].copy() if np.all(full == full[:1]) else None
        else:
            vec = _per_channel(s, shape)
        if vec is None:
            self._materialise(graph, node, i, s)
        return vec

    def _scale_input_channels(self, node: Node, s: np.ndarray) -> None:
        w = node.params["weight"].astype(np.float64)
        groups = int(node.attr("groups")) if node.op != "linear" else 1
        if node.op == "linear":
            w = w * s.reshape(1, -1)
        elif node.op == "conv":
            cout, cin_g = w.shape[:2]
            # output channel o belongs to group o // (cout/groups) and reads input
            # channels group*cin_g + j.
            grp = np.arange(cout) // (cout // groups)
            idx = grp[:, None] * cin_g + np.arange(cin_g)[None, :]
            w = w * s[idx].reshape(cout, cin_g, *([1] * (w.ndim - 2)))
        else:  # conv_transpose: weight [C_in, C_out/groups, *k]
            w = w * s.reshape(-1, *([1] * (w.ndim - 1)))
        node.set_param("weight", w)

    def _add(self, graph: Graph, node: Node, ins: list[np.ndarray | None]) -> tuple[np.ndarray | None, bool]:
        shape = node.output.shape
        full = [np.broadcast_to(1.0 if s is None else s, shape) for s in ins]
        coeffs = node.attr("coeffs")
        if coeffs is None and all(np.array_equal(full[0], f) for f in full[1:]):
            return ins[0], False
        vecs = [_per_channel(np.asarray(1.0 if s is None else s), shape) for s in ins]
        if any(v is None for v in vecs):
            for i, s in enumerate(ins):
                if not _is_one(s):
                    self._materialise(graph, node, i, s)
            return None, True
        new = []
        for i, v in enumerate(vecs):
            old = np.ones_like(v) if coeffs is None else np.broadcast_to(np.asarray(coeffs[i], dtype=np.float64), v.shape)
            new.append([float(c) for c in old * v])
        node.attrs["coeffs"] = new
        return None, True

    def _concat(self, graph: Graph, node: Node, ins: list[np.ndarray | None]) -> tuple[np.ndarray | None, bool]:
        if node.attr("axis") == 1:
            parts = [_per_channel(np.asarray(1.0 if s is None else s), v.shape) for s, v in zip(ins, node.inputs)]
            if all(p is not None for p in parts):
                keep = len(node.output.shape) - 1
                return np.concatenate(parts).reshape((-1,) + (1,) * keep), True
        for i, s in enumerate(ins):
            if not _is_one(s):
                self._materialise(graph, node, i, s)
        return None, True

    def _materialise(self, graph: Graph, node: Node, i: int, s: np.ndarray) -> None:
        src: Value = node.inputs[i]
        shape = src.shape
        scale = np.broadcast_to(s, shape) if np.ndim(s) > len(shape) else np.asarray(s)
        fix = graph.add_node(
            "affine",
            [src],
            params={"scale": scale, "shift": np.zeros_like(scale)},
            name=f"{src.name}_rescale",
            shape=shape,
            before=node,
        )
        graph.set_input(node, i, fix.output)
