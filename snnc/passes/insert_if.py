"""insert-if: turn the balanced ANN into a spiking network (ANN stage -> SNN stage).

* Every ReLU with a threshold θ becomes an ``if_neuron`` with that threshold, reset by
  subtraction (soft reset) and, by default, the half-threshold start v(0) = θ/2
  (``v_init=bias`` instead adds θ/(2T) to the input current every step, for the T of the
  conversion; ``v_init=zero`` has no shift). For a
  constant input current z this neuron's average output over T steps is
  (θ/T) floor(clip((zT + θ/2)/θ, 0, T)): the ReLU clipped at θ and quantised to T levels,
  rounded to the nearest level instead of floored (Deng & Gu 2021; QCFS 2022).
* ``neuron=`` picks the neuron (:data:`NEURONS`): the plain IF neuron, or a low-latency
  variant: ``signed`` (−θ spikes correct over-firing), ``burst`` (up to ``spikes`` = K spikes
  per step, each θ/K, so the ReLU's range is quantised to K·T levels in T steps, at the cost
  of up to K times the spikes) or ``signed-burst``.
* Every ``max_pool`` becomes ``spiking_max_pool`` (rate-gated: see its op docstring) or,
  with ``maxpool=avg``, an ``avg_pool`` over the same windows — an explicit, documented
  change of the network's function, reported as a notice, never a silent one.
* An attention network (with ``nonlinear`` ops: layer normalisation, softmax, GELU, products
  of computed tensors) is converted so that every message is a graded spike of at most
  ``message_bits`` bits: temporal ops and bipolar neurons (:mod:`snnc.passes.messages`).
* Every graph output gets a ``readout``: the output layer does not spike; it integrates
  its input and the prediction is the time average.
* Average pooling, residual ``add``, ``concat``, reshape, upsampling and transposed
  convolutions are linear and need no change: on weighted spikes θ·s(t) they compute,
  step by step, the same linear function whose time average is the ANN's. (Binary spike
  targets additionally need ``normalize-weights``, which rescales residual branches.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snnc.defaults import DEFAULT_MAXPOOL, DEFAULT_MESSAGE_BITS
from snnc.errors import PassError
from snnc.ir.graph import Graph
from snnc.ir.ops import MAX_SPIKES
from snnc.passes.base import Pass, PassContext, choice, register_pass
from snnc.passes.current import channel_shape, shift_input_current
from snnc.passes.messages import convert_messages, has_nonlinear, payload_spikes


# The neuron variants insert-if can create (``neuron=``; see the ``if_neuron`` op's equations).
NEURONS = {
    "if": "plain integrate-and-fire: one binary spike per step at most",
    "signed": "emits -threshold spikes to take back an earlier over-estimate (net output never below 0)",
    "burst": "up to `spikes` spikes per step (a graded spike), threshold divided by `spikes`: K*T levels in T steps",
    "signed-burst": "both: counts in [-min(n, K), K] per step",
}


def neuron_attrs(neuron: str, spikes: int) -> tuple[int, bool]:
    """``(max_spikes, signed)`` of the ``if_neuron`` a neuron variant name stands for."""
    if neuron not in NEURONS:
        raise PassError(f"unknown neuron {neuron!r}; choose one of {', '.join(NEURONS)}")
    burst = neuron in ("burst", "signed-burst")
    if burst and not (isinstance(spikes, int) and 2 <= spikes <= MAX_SPIKES):
        raise PassError(f"neuron {neuron!r}: spikes must be an integer in [2, {MAX_SPIKES}], got {spikes!r}")
    return (spikes if burst else 1), neuron in ("signed", "signed-burst")


@register_pass
class InsertIF(Pass):
    """After insert-if the graph is in the SNN stage: no ReLU or MaxPool remains, every
    ``if_neuron`` has a threshold, a reset mode and an initial potential, and every graph
    output is produced by a ``readout``."""

    name = "insert-if"

    @dataclass
    class Options:
        v_init: str = choice("half", "half", "zero", "bias")
        reset: str = choice("subtract", "subtract", "zero")
        maxpool: str = choice(DEFAULT_MAXPOOL, "gate", "avg")
        neuron: str = choice("if", *NEURONS)
        spikes: int = 4  # burst / signed-burst: the most spikes a neuron emits in one step
        # attention networks (snnc.passes.messages): the signed payload of every message, the
        # temporal ops' mode and the percentile of |a| the message neurons' range covers
        message_bits: int = DEFAULT_MESSAGE_BITS
        mode: str = choice("expectation", "expectation", "accumulate")
        message_percentile: float = 99.99
        message_threshold: str = choice("percentile", "percentile", "mse")

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        o = self.options
        max_spikes, signed = neuron_attrs(o.neuron, o.spikes)
        ctx.ann_reference = graph.clone()
        ctx.ann_names = {}
        attention = has_nonlinear(graph)
        if attention and o.neuron == "if" and graph.find("relu"):
            # every other message of an attention network is a graded spike: its ReLUs send
            # the same payload (unsigned) rather than binary spikes
            max_spikes = payload_spikes(o.message_bits)
            ctx.notices.append(
                f"attention network: ReLUs become burst neurons of up to {max_spikes} spikes per step, the payload of "
                f"every other message ({o.message_bits}-bit graded spikes)"
            )
        for node in list(graph.nodes):
            if node.op == "relu":
                if "threshold" not in node.params:
                    raise PassError(f"insert-if: ReLU {node.name!r} has no threshold; run balance-thresholds first")
                theta = node.params["threshold"] / max_spikes  # K spikes of θ/K cover the ReLU's range [0, θ]
                v0 = theta / 2 if o.v_init == "half" else np.zeros_like(theta)
                attrs = {"reset": o.reset, "spike_scale": "threshold"}
                if max_spikes != 1 or signed:
                    attrs |= {"max_spikes": max_spikes, "signed": signed}
                neuron = graph.add_node(
                    "if_neuron",
                    [node.inputs[0]],
                    attrs,
                    {"threshold": theta, "v_init": v0},
                    name=f"{node.name}_if",
                    shape=node.output.shape,
                    before=node,
                )
                graph.replace_all_uses(node.output, neuron.output)
                graph.remove_node(node)
                ctx.ann_names[neuron.name] = node.name
                if o.v_init == "bias":
                    delta = np.broadcast_to(theta, channel_shape(neuron.output)).reshape(-1) / (2 * ctx.timesteps)
                    shift_input_current(graph, neuron, delta, name="half_step")
            elif node.op == "max_pool":
                self._convert_maxpool(graph, node, ctx)
        if attention:
            ctx.record(
                "insert-if",
                convert_messages(
                    graph, ctx, bits=o.message_bits, mode=o.mode, percentile=o.message_percentile, v_init=o.v_init, reset=o.reset,
                    threshold=o.message_threshold,
                ),
            )
        for out in list(graph.outputs):
            readout = graph.add_node("readout", [out], name=f"{out.name}_readout", shape=out.shape)
            graph.set_outputs(readout.output if o is out else o for o in graph.outputs)
        graph.stage = "snn"
        return True

    def _convert_maxpool(self, graph: Graph, node, ctx: PassContext) -> None:
        attrs = dict(node.attrs)
        if self.options.maxpool == "gate":
            new = graph.add_node("spiking_max_pool", [node.inputs[0]], attrs, name=f"{node.name}_spk", shape=node.output.shape, before=node)
        else:
            if any(d != 1 for d in (node.attr("dilations") or [])):
                raise PassError(f"insert-if: MaxPool {node.name!r} is dilated and cannot be treated as average pooling; use maxpool=gate")
            attrs.pop("dilations", None)
            attrs["count_include_pad"] = False
            new = graph.add_node("avg_pool", [node.inputs[0]], attrs, name=f"{node.name}_avg", shape=node.output.shape, before=node)
            ctx.notices.append(
                f"MaxPool {node.name!r} is treated as average pooling (--maxpool avg): this changes the network's "
                "function; the SNN approximates the ANN with average pooling, not the original"
            )
        graph.replace_all_uses(node.output, new.output)
        graph.remove_node(node)
        ctx.ann_names[new.name] = node.name
