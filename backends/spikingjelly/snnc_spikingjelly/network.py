"""Lowering of an SNN-stage graph to a multi-step SpikingJelly network, through a per-op table.

:data:`TABLE` says, for each op, whether this backend can lower a node and how; every other
op of the SNN stage runs the op set's own executable form. Every node becomes one module
(``step_mode='m'``: values ``[T, B, ...]``):

* ``if_neuron`` -> :class:`IFNeuron`, a SpikingJelly ``ActivationAwareIFNode`` (soft or
  hard reset, per-layer / per-channel / per-neuron threshold) started at ``v_init``, whose
  binary spikes are scaled by the threshold when the op says so. Its multi-step forward is
  SpikingJelly's registered operator: native CUDA or Triton on a GPU, its CPU kernel here.
  The burst and signed variants (``max_spikes`` > 1, ``signed``) have no SpikingJelly
  neuron: they run the op set's sequence form (:class:`VariantNeuron`, an
  :class:`OpParams` that also counts their spikes as unit spikes: a burst of k counts k, a
  −θ spike counts 1, as the reference simulator's ``neuron_spikes``).
* ``conv`` / ``conv_transpose`` / ``linear`` / ``avg_pool`` -> SpikingJelly's
  ``layer.Conv1d/2d``, ``ConvTranspose1d/2d``, ``Linear``, ``AvgPool1d/2d`` (weights copied)
  when their attributes map one to one;
* any other op (and those when they do not map) -> :class:`OpParams`, which holds the node's
  parameters as buffers; the op set's ``compute`` runs on the ``[T*B, ...]`` batch (what
  SpikingJelly's ``SeqToANNContainer`` does), or its ``sequence`` / ``constant`` form for a
  stateful op (``readout``, ``spiking_max_pool``). A new op of the op set runs here without
  being listed.

The network is executed by the IR's :class:`~snnc.ir.executor.Executor` (one graph walk in
snnc): it frees dead values and computes values that do not vary over time (the analog input
under direct coding, and what is computed from it alone) once per batch, handing them to the
first neurons as a broadcast view, exactly as the reference simulator does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, layer
from spikingjelly.activation_based.neuron import ActivationAwareIFNode

from snnc.backend import LoweringTable, Rule
from snnc.ir.executor import Executor, Timed
from snnc.ir.graph import Graph, Node
from snnc.ir.ops import unit_spikes


def _buffer(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


class IFNeuron(ActivationAwareIFNode):
    """The ``if_neuron`` op on SpikingJelly's activation-aware IF neuron.

    ``threshold`` and ``v_init`` broadcast over the per-sample ``shape``. A scalar or
    per-channel threshold is passed to SpikingJelly as such; any other (per-neuron)
    threshold is handled by viewing the neurons of a sample as one flat channel axis.
    After ``functional.reset_net`` the membrane restarts from ``v_init``.
    ``spike_count`` accumulates the number of spikes emitted (for spike rates).
    """

    def __init__(self, threshold: np.ndarray, v_init: np.ndarray, shape: Sequence[int], reset: str = "subtract", spike_scale: str = "threshold"):
        shape = tuple(int(s) for s in shape)
        th = _buffer(threshold)
        flat = th.numel() > 1 and not _per_channel(th, shape)
        if th.numel() == 1:
            kernel_th = th.reshape(())
        elif flat:
            kernel_th = th.expand(shape).reshape(-1).contiguous()
        else:
            kernel_th = th.reshape(-1).contiguous()
        super().__init__(
            v_threshold=kernel_th,
            v_offset=0.0,
            channel_dim=1 if th.numel() > 1 else -1,
            v_reset=None if reset == "subtract" else 0.0,
            step_mode="m",
        )
        self.neuron_shape = shape
        self.flat = flat
        v0 = _buffer(v_init).expand(shape).contiguous()
        self.register_buffer("v_init", v0.reshape(-1) if flat else v0)
        self.register_buffer("spike_scale", th if spike_scale == "threshold" else None)
        self.spike_count = 0.0
        self.count_spikes = False

    def materialize_states(self, inputs, states, step_mode):
        v = states[0]
        if isinstance(v, float):  # after reset: start from v_init
            x = inputs[0][0] if step_mode == "m" else inputs[0]
            v = self.v_init.to(x.device).expand(x.shape).clone()
            states = (v, *states[1:])
        return super().materialize_states(inputs, states, step_mode)

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        shape = x_seq.shape
        if self.flat:
            x_seq = x_seq.reshape(shape[0], shape[1], -1)
        spikes = super().multi_step_forward(x_seq, *args, **kwargs).reshape(shape)
        if self.count_spikes:
            self.spike_count += float(spikes.sum(dtype=torch.float64))
        if self.spike_scale is not None:
            spikes = spikes * self.spike_scale
        return spikes

    def extra_repr(self) -> str:
        return f"shape={self.neuron_shape}, {super().extra_repr()}"


def _per_channel(th: torch.Tensor, shape: tuple[int, ...]) -> bool:
    """Does ``th`` hold one value per channel (axis 0 of the per-sample shape)? Shapes align
    from the right, as in broadcasting: ``[C, 1, 1]`` on ``[C, H, W]`` is per channel,
    ``[C]`` on ``[C, L]`` is not (it is one value per position)."""
    dims = list(th.shape)
    if len(dims) > len(shape):
        if any(d != 1 for d in dims[: len(dims) - len(shape)]):
            return False
        dims = dims[len(dims) - len(shape) :]
    dims = [1] * (len(shape) - len(dims)) + dims
    return bool(dims) and dims[0] == shape[0] and all(d == 1 for d in dims[1:])


class OpParams(nn.Module):
    """A node run by the op set's own executable form: its parameters as buffers, so they
    move with the network (``.to(device)``)."""

    def __init__(self, node: Node):
        super().__init__()
        self.op = node.op
        self.keys = list(node.params)
        for k, a in node.params.items():
            self.register_buffer(k, _buffer(a))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in self.keys}

    def extra_repr(self) -> str:
        return f"op={self.op} (snnc op set)"


class VariantNeuron(OpParams):
    """A burst / signed ``if_neuron`` (no SpikingJelly neuron emits counts or negative
    spikes): the op set's sequence form, like the reference. ``spike_count`` accumulates its
    unit spikes (:func:`snnc.ir.ops.unit_spikes`: a burst of k counts k, a −θ spike 1) while
    ``count_spikes`` is set, as :class:`IFNeuron` counts its binary spikes."""

    def __init__(self, node: Node):
        super().__init__(node)
        self.neuron_attrs = {k: node.attr(k) for k in ("max_spikes", "signed", "bipolar", "spike_scale")}
        self.spike_count = 0.0
        self.count_spikes = False

    def count(self, y: torch.Tensor) -> None:
        if self.count_spikes:
            self.spike_count += float(unit_spikes(self.neuron_attrs, y, self.threshold))

    def extra_repr(self) -> str:
        a = self.neuron_attrs
        return f"op={self.op} (snnc op set), max_spikes={a['max_spikes']}, signed={a['signed']}"


# ------------------------------------------------------------------ the per-op table
def _symmetric(pads, nd: int) -> list[int] | None:
    pads = list(pads) if pads else [0] * (2 * nd)
    return pads[:nd] if pads[:nd] == pads[nd:] else None


def _with_params(module: nn.Module, node: Node) -> nn.Module:
    with torch.no_grad():
        module.weight.copy_(_buffer(node.params["weight"]))
        module.bias.copy_(_buffer(node.params["bias"]))
    return module.requires_grad_(False)


def _spatial(node: Node) -> str | None:
    nd = len(node.output.shape) - 1 if node.output.shape is not None else 1
    return None if nd in (1, 2) else f"{nd}-d spatial data (1-d and 2-d are supported)"


def _check_neuron(node: Node) -> str | None:
    if node.attr("reset") not in ("subtract", "zero"):
        return f"reset {node.attr('reset')!r} is neither soft (subtract) nor hard (zero)"
    th = node.params["threshold"]
    if not (np.all(np.isfinite(th)) and np.all(th > 0)):
        return "thresholds must be finite and positive"
    return None


def _neuron(node: Node) -> nn.Module:
    if node.attr("max_spikes") != 1 or node.attr("signed") or node.attr("bipolar"):
        # Burst / signed / bipolar neurons: SpikingJelly has no neuron emitting counts or negative
        # spikes, so the op set's own sequence form runs them (equal to the reference).
        return VariantNeuron(node)
    p = node.params
    return IFNeuron(p["threshold"], p["v_init"], node.output.shape, node.attr("reset"), node.attr("spike_scale"))


def _linear(node: Node) -> nn.Module:
    w = node.params["weight"]
    return _with_params(layer.Linear(w.shape[1], w.shape[0], step_mode="m"), node)


def _conv(node: Node) -> nn.Module:
    nd = len(node.output.shape) - 1
    pad = _symmetric(node.attr("pads"), nd)
    if pad is None:  # asymmetric pads: the op set's conv pads explicitly
        return OpParams(node)
    w = node.params["weight"]
    cls = layer.Conv1d if nd == 1 else layer.Conv2d
    m = cls(
        w.shape[1] * node.attr("groups"), w.shape[0], tuple(w.shape[2:]),
        stride=tuple(node.attr("strides") or [1] * nd), padding=tuple(pad),
        dilation=tuple(node.attr("dilations") or [1] * nd), groups=node.attr("groups"), step_mode="m",
    )  # fmt: skip
    return _with_params(m, node)


def _conv_transpose(node: Node) -> nn.Module:
    nd = len(node.output.shape) - 1
    if any(node.attr("pads") or []):  # cropping pads: the op set's transposed conv crops
        return OpParams(node)
    w = node.params["weight"]
    cls = layer.ConvTranspose1d if nd == 1 else layer.ConvTranspose2d
    m = cls(
        w.shape[0], w.shape[1] * node.attr("groups"), tuple(w.shape[2:]),
        stride=tuple(node.attr("strides") or [1] * nd), output_padding=tuple(node.attr("output_padding") or [0] * nd),
        groups=node.attr("groups"), dilation=tuple(node.attr("dilations") or [1] * nd), step_mode="m",
    )  # fmt: skip
    return _with_params(m, node)


def _avg_pool(node: Node) -> nn.Module:
    nd = len(node.output.shape) - 1
    pad = _symmetric(node.attr("pads"), nd)
    if pad is None:
        return OpParams(node)
    k = node.attr("kernel")
    cls = layer.AvgPool1d if nd == 1 else layer.AvgPool2d
    return cls(
        tuple(k), tuple(node.attr("strides") or k), tuple(pad),
        ceil_mode=bool(node.attr("ceil_mode")), count_include_pad=bool(node.attr("count_include_pad")), step_mode="m",
    )  # fmt: skip


TABLE = LoweringTable(
    "spikingjelly",
    {
        "if_neuron": Rule(_neuron, _check_neuron),
        "linear": Rule(_linear),
        "conv": Rule(_conv, _spatial),
        "conv_transpose": Rule(_conv_transpose, _spatial),
        "avg_pool": Rule(_avg_pool, _spatial),
        "spiking_max_pool": Rule(OpParams, _spatial),
    },
    stateless=Rule(OpParams),  # every other op: the op set's compute on [T*B, ...]
    stateful=Rule(OpParams),  # readout and the like: the op set's sequence / constant forms
)


def lower_node(node: Node) -> nn.Module:
    """The multi-step module computing ``node`` (see :data:`TABLE`)."""
    return TABLE.lower(node)


# ------------------------------------------------------------------ the network
class _Runner(Executor):
    """The IR executor running a :class:`SpikingJellyNetwork`: SpikingJelly modules where the
    table lowered a node, the op set's forms (with the module-held parameters) elsewhere."""

    def __init__(self, net: SpikingJellyNetwork, graph: Graph):
        super().__init__(graph)
        self.net = net

    def params(self, node: Node) -> dict[str, torch.Tensor]:
        return self.net.layer(node).tensors()

    def run_node(self, node: Node, ins: list[Timed]) -> Timed:
        m = self.net.layer(node)
        if isinstance(m, VariantNeuron):
            out = super().run_node(node, ins)
            m.count(out.data)
            return out
        if isinstance(m, OpParams):
            return super().run_node(node, ins)
        T = self.timesteps
        if node.spec.stateful:  # SpikingJelly's neuron: a constant current still gives spikes that vary over time
            return Timed(m(ins[0].dense(T)), static=False)
        if all(v.static for v in ins):
            return Timed(m(*[v.data.unsqueeze(0) for v in ins])[0], static=True)
        return Timed(m(*[v.dense(T) for v in ins]), static=False)


class SpikingJellyNetwork(nn.Module):
    """A converted SNN as a SpikingJelly multi-step network.

    ``net(x, timesteps)`` presents the analog input ``x`` ([B, ...]) at every step (direct
    coding) and returns the readout after ``timesteps`` steps (one tensor per graph output;
    a single tensor when there is one). ``net.sequence(x, timesteps)`` returns the readout
    after every step ([T, B, ...]); ``x`` may also be a ``[T, B, ...]`` input sequence
    (``timesteps=None``), e.g. Poisson spikes. Each call starts from the initial state
    (``functional.reset_net``). Run it under ``torch.no_grad()`` / ``inference_mode()``:
    SpikingJelly's fused neuron kernels serve inference; with autograd on, its neurons
    fall back to their step-by-step torch form.
    """

    def __init__(self, graph: Graph):
        super().__init__()
        self.graph_name = graph.name
        self.layers = nn.ModuleDict()
        self._keys: dict[str, str] = {}
        for i, node in enumerate(graph.nodes):
            key = f"n{i}_{''.join(c if c.isalnum() else '_' for c in node.name)}"
            self.layers[key] = lower_node(node)
            self._keys[node.name] = key
        self._runner = _Runner(self, graph)

    def layer(self, node: Node) -> nn.Module:
        return self.layers[self._keys[node.name]]

    def neurons(self) -> dict[str, IFNeuron | VariantNeuron]:
        """The IF neuron modules by IR node name (SpikingJelly neurons and the burst / signed
        variants, which run the op set's form); each counts its spikes in ``spike_count``
        (unit spikes) while ``count_spikes`` is set."""
        return {name: self.layers[key] for name, key in self._keys.items() if isinstance(self.layers[key], (IFNeuron, VariantNeuron))}

    def sequence(self, x: torch.Tensor, timesteps: int | None = None) -> list[torch.Tensor]:
        """Readout after every step, ``[T, B, ...]`` per graph output."""
        functional.reset_net(self)
        if timesteps is None:
            if x.dim() < 2:
                raise ValueError("without timesteps, x must be an input sequence [T, B, ...]")
            T, inp = x.shape[0], Timed(x, static=False)
        else:
            T, inp = int(timesteps), Timed(x, static=True)
        outs = self._runner.run(inp, timesteps=T)
        return [y.dense(T) for y in outs]

    def forward(self, x: torch.Tensor, timesteps: int | None = None):
        outs = [y[-1] for y in self.sequence(x, timesteps)]
        return outs[0] if len(outs) == 1 else tuple(outs)
