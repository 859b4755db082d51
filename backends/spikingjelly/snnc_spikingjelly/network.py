"""Lowering of an SNN-stage graph to a multi-step SpikingJelly network.

Every node becomes one module in ``step_mode='m'`` (input and output ``[T, B, ...]``):

* ``if_neuron`` -> :class:`IFNeuron`, a SpikingJelly ``ActivationAwareIFNode`` (soft or
  hard reset, per-layer / per-channel / per-neuron threshold) started at ``v_init``, whose
  binary spikes are scaled by the threshold when the op says so. Its multi-step forward is
  SpikingJelly's registered operator: native CUDA or Triton on a GPU, its CPU kernel here.
* ``conv`` / ``conv_transpose`` / ``linear`` / ``avg_pool`` -> SpikingJelly's
  ``layer.Conv1d/2d``, ``ConvTranspose1d/2d``, ``Linear``, ``AvgPool1d/2d`` (weights copied)
  when their attributes map one to one; otherwise, and for ``add``, ``concat``, ``reshape``
  (flatten), ``affine``, ``upsample``, ``global_avg_pool``, :class:`IROp`: the IR op's own
  definition applied to the ``[T*B, ...]`` batch, as SpikingJelly's ``SeqToANNContainer`` does.
* ``spiking_max_pool`` -> :class:`SpikingMaxPool` (the rate-gated max of the IR).
* ``readout`` -> :class:`Readout`, the non-spiking output integrator: its output at step t
  is the mean of its inputs over steps 1..t, so one run yields the output for every T.

Values that do not vary over time (the analog input under direct coding, and what is
computed from it alone) are computed once per batch and presented to the first neurons as a
broadcast view, exactly as the reference simulator does; that is also where most of the
time would otherwise go (the first layer, T times over).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, layer
from spikingjelly.activation_based.neuron import ActivationAwareIFNode

from snnc.ir.graph import Graph, Node
from snnc.ir.ops import get_op, readout_sequence, spiking_max_pool_sequence

_LAYER_OPS = ("conv", "conv_transpose", "linear", "avg_pool")
_IR_OPS = ("add", "concat", "reshape", "affine", "upsample", "global_avg_pool")
LOWERED_OPS = frozenset(_LAYER_OPS + _IR_OPS + ("if_neuron", "spiking_max_pool", "readout"))


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


class Readout(nn.Module):
    """Non-spiking output integrator: step t outputs the mean of its inputs over steps 1..t."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return readout_sequence(x_seq)


class SpikingMaxPool(nn.Module):
    """The IR's rate-gated spiking max pooling over a ``[T, B, C, *spatial]`` sequence."""

    def __init__(self, node: Node):
        super().__init__()
        self.attrs = {k: node.attr(k) for k in ("kernel", "strides", "pads", "dilations", "ceil_mode")}

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return spiking_max_pool_sequence(x_seq, **self.attrs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.attrs.items() if v)


class IROp(nn.Module):
    """A stateless (linear) IR op on the ``[T*B, ...]`` batch of every step at once."""

    def __init__(self, node: Node):
        super().__init__()
        self.node = Node(node.op, node.name, dict(node.attrs), {})  # detached: attributes only
        self.keys = list(node.params)
        for k, a in node.params.items():
            self.register_buffer(k, _buffer(a))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        T = xs[0].shape[0]
        flat = [x.reshape(-1, *x.shape[2:]) for x in xs]
        y = self.node.spec.compute(flat, self.node, {k: getattr(self, k) for k in self.keys})
        return y.reshape(T, -1, *y.shape[1:])

    def extra_repr(self) -> str:
        return f"op={self.node.op}, " + ", ".join(f"{k}={v}" for k, v in self.node.attrs.items())


def _symmetric(pads, nd: int) -> list[int] | None:
    pads = list(pads) if pads else [0] * (2 * nd)
    return pads[:nd] if pads[:nd] == pads[nd:] else None


def _with_params(module: nn.Module, node: Node) -> nn.Module:
    with torch.no_grad():
        module.weight.copy_(_buffer(node.params["weight"]))
        module.bias.copy_(_buffer(node.params["bias"]))
    return module.requires_grad_(False)


def lower_node(node: Node) -> nn.Module:
    """The multi-step module computing ``node`` (see the module docstring)."""
    op = node.op
    if op == "if_neuron":
        p = node.params
        return IFNeuron(p["threshold"], p["v_init"], node.output.shape, node.attr("reset"), node.attr("spike_scale"))
    if op == "readout":
        return Readout()
    if op == "spiking_max_pool":
        return SpikingMaxPool(node)
    nd = len(node.output.shape) - 1
    if op == "linear":
        w = node.params["weight"]
        return _with_params(layer.Linear(w.shape[1], w.shape[0], step_mode="m"), node)
    if op == "conv" and nd in (1, 2) and (pad := _symmetric(node.attr("pads"), nd)) is not None:
        w = node.params["weight"]
        cls = layer.Conv1d if nd == 1 else layer.Conv2d
        m = cls(
            w.shape[1] * node.attr("groups"), w.shape[0], tuple(w.shape[2:]),
            stride=tuple(node.attr("strides") or [1] * nd), padding=tuple(pad),
            dilation=tuple(node.attr("dilations") or [1] * nd), groups=node.attr("groups"), step_mode="m",
        )  # fmt: skip
        return _with_params(m, node)
    if op == "conv_transpose" and nd in (1, 2) and not any(node.attr("pads") or []):
        w = node.params["weight"]
        cls = layer.ConvTranspose1d if nd == 1 else layer.ConvTranspose2d
        m = cls(
            w.shape[0], w.shape[1] * node.attr("groups"), tuple(w.shape[2:]),
            stride=tuple(node.attr("strides") or [1] * nd), output_padding=tuple(node.attr("output_padding") or [0] * nd),
            groups=node.attr("groups"), dilation=tuple(node.attr("dilations") or [1] * nd), step_mode="m",
        )  # fmt: skip
        return _with_params(m, node)
    if op == "avg_pool" and nd in (1, 2) and (pad := _symmetric(node.attr("pads"), nd)) is not None:
        k = node.attr("kernel")
        cls = layer.AvgPool1d if nd == 1 else layer.AvgPool2d
        return cls(
            tuple(k), tuple(node.attr("strides") or k), tuple(pad),
            ceil_mode=bool(node.attr("ceil_mode")), count_include_pad=bool(node.attr("count_include_pad")), step_mode="m",
        )  # fmt: skip
    if op in _LAYER_OPS or op in _IR_OPS:
        return IROp(node)
    raise ValueError(f"node {node.name!r}: op {op!r} cannot be lowered to SpikingJelly")


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
        self.program: list[tuple[str, str, list[str], str]] = []  # (module key, op, input names, output name)
        for i, node in enumerate(graph.nodes):
            key = f"n{i}_{''.join(c if c.isalnum() else '_' for c in node.name)}"
            self.layers[key] = lower_node(node)
            self.program.append((key, node.op, [v.name for v in node.inputs], node.output.name))
        self.input_name = graph.inputs[0].name
        self.output_names = [v.name for v in graph.outputs]
        self._last_use = _last_uses(self.program, self.output_names)

    def neurons(self) -> dict[str, IFNeuron]:
        """The IF neuron modules by IR node name."""
        return {out: self.layers[key] for key, op, _, out in self.program if op == "if_neuron"}

    def sequence(self, x: torch.Tensor, timesteps: int | None = None) -> list[torch.Tensor]:
        """Readout after every step, ``[T, B, ...]`` per graph output."""
        functional.reset_net(self)
        if timesteps is None:
            if x.dim() < 2:
                raise ValueError("without timesteps, x must be an input sequence [T, B, ...]")
            T, env = x.shape[0], {self.input_name: (x, False)}
        else:
            T, env = int(timesteps), {self.input_name: (x, True)}
        for i, (key, op, ins, out) in enumerate(self.program):
            args = [env[name] for name in ins]
            env[out] = _apply(self.layers[key], op, args, T)
            for name in ins:
                if self._last_use.get(name) == i:
                    env.pop(name, None)
        results = []
        for name in self.output_names:
            y, static = env[name]
            results.append(y.unsqueeze(0).expand(T, *y.shape) if static else y)
        return results

    def forward(self, x: torch.Tensor, timesteps: int | None = None):
        outs = [y[-1] for y in self.sequence(x, timesteps)]
        return outs[0] if len(outs) == 1 else tuple(outs)


def _apply(module: nn.Module, op: str, args: list[tuple[torch.Tensor, bool]], T: int) -> tuple[torch.Tensor, bool]:
    """Run one module on (tensor, static) arguments; returns (tensor, static)."""
    if all(static for _, static in args):
        if op == "if_neuron":  # a constant current into a neuron: spikes vary over time
            x = args[0][0]
            return module(x.unsqueeze(0).expand(T, *x.shape)), False
        if op == "readout":
            return args[0]
        if op == "spiking_max_pool":  # a constant input: the gate picks the plain maximum
            node = Node("max_pool", "max_pool", dict(module.attrs), {})
            return get_op("max_pool").compute([args[0][0]], node, {}), True
        return module(*[x.unsqueeze(0) for x, _ in args])[0], True
    dense = [x.unsqueeze(0).expand(T, *x.shape) if static else x for x, static in args]
    return module(*dense), False


def _last_uses(program, outputs) -> dict[str, int]:
    last: dict[str, int] = {}
    for i, (_, _, ins, _) in enumerate(program):
        for name in ins:
            last[name] = i
    for name in outputs:
        last[name] = len(program)
    return last
