"""What each snnc Lava process computes per time step, in float or Loihi fixed point.

A kernel is built inside the process model from its ``spec`` (plain data: strings,
numbers, numpy arrays). Float kernels run the op set's own forms in float32: a stateless
op's ``compute``, the IF neuron's step (:func:`~snnc.ir.ops.integrate_and_fire`), spiking
max pooling's gate. Fixed-point kernels follow Loihi's conventions as Lava's bit-accurate
LIF and Dense models implement them:

* binary spikes between layers; synapse outputs are integers: ``a = (sum_i w_i s_i) << e``
  (``>> -e`` for negative exponents, an arithmetic shift) with ``w = 2 * m``, ``m`` an 8-bit
  signed mantissa (Lava's mixed-sign 8-bit weights) and ``e`` the layer's weight exponent;
* the neuron: ``u = wrap24(a << 6)`` (current, wraps like Lava's), ``v = clip24(v + u + bias)``
  (voltage saturates), spike when ``v > vth << 6``, then ``v -= vth << 6`` (soft reset; ours,
  where Lava's LIF resets to 0). ``bias = mant << exp`` with a 13-bit signed mantissa and a
  3-bit exponent; ``vth`` is a 17-bit unsigned mantissa. This is Lava's LIF with du = 4095
  (no current carried over) and dv = 0 (no leak), with subtractive reset.
* the burst / signed neuron variants (``max_spikes`` = K > 1 and / or ``signed``) send
  **graded spikes** whose payload is the signed spike count ``s`` (Loihi 2's graded spikes
  carry an integer payload; snnc_lava.lower.GRADED_PAYLOAD_BITS): with the same current and
  voltage, ``s = clip(floor(v / (vth << 6)), lo, K)``, ``lo = -min(n, K)`` for a signed
  neuron that has sent ``n`` spikes net so far (else 0), then ``v -= s * (vth << 6)`` (soft
  reset; hard: v = 0 where s != 0). This is the op's equation in integers (it fires at
  ``v >= vth << 6``, where the plain neuron above keeps Loihi's ``v > vth << 6``). A synapse
  multiplies the payload by its weight, as Lava's Dense does with ``num_message_bits > 0``.

Integer convolutions run as float64 torch ops: every partial sum is an integer far below
2^53, so the results are exact.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from snnc.ir.ops import get_op, integrate_and_fire, integrate_and_fire_counts, spiking_max_pool_gate

V_MAX = 2**23  # 24-bit two's complement state


def wrap24(x: np.ndarray) -> np.ndarray:
    """Lava's current overflow: one wrap into (-2^23, 2^23]."""
    x = np.where(x > V_MAX, x - 2 * V_MAX, x)
    return np.where(x <= -V_MAX, x + 2 * V_MAX, x)


def clip24(x: np.ndarray) -> np.ndarray:
    """Lava's voltage overflow: saturate to [-(2^23 - 1), 2^23 - 1]."""
    return np.clip(x, -V_MAX + 1, V_MAX - 1)


def shift(a: np.ndarray, e: int) -> np.ndarray:
    """``a << e`` for e >= 0, arithmetic ``a >> -e`` otherwise (integers)."""
    a = a.astype(np.int64)
    return np.left_shift(a, e) if e >= 0 else np.right_shift(a, -e)


class Kernel:
    counts_spikes = False
    spike_total = 0.0

    def __init__(self, spec: dict):
        self.spec = spec
        self.T = int(spec["T"])
        self.B = int(spec["batch"])
        self.fixed = spec["mode"] == "fixed"
        torch.set_num_threads(1)  # one Lava process per node: no thread oversubscription

    def reset(self, batch: int) -> None:
        pass

    def step(self, ins: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def value(self):
        raise NotImplementedError


def _per_sample(spec_value, batch: int, B: int):
    """A constant array, or the rows of a per-sample array [N, ...] for this batch (zeros
    past the end)."""
    if spec_value is None:
        return 0
    arr, per_sample = spec_value
    if not per_sample:
        return arr
    rows = arr[batch * B : (batch + 1) * B]
    if len(rows) < B:
        rows = np.concatenate([rows, np.zeros((B - len(rows), *arr.shape[1:]), arr.dtype)])
    return rows


class OpKernel(Kernel):
    """A linear IR op on its time-varying inputs (biases and static inputs are in the
    neurons' bias). Fixed point: integer weights, pooling as sums, an exponent shift."""

    def __init__(self, spec):
        super().__init__(spec)
        self.op = get_op(spec["op"])
        self.attrs = self.op.resolve(spec["attrs"])
        dtype = torch.float64 if self.fixed else torch.float32
        self.params = {k: torch.as_tensor(v, dtype=dtype) for k, v in spec["params"].items()}
        self.slots = spec["slots"]  # per IR input: ("port", i) or ("zeros", shape)
        self.port_weights = spec.get("port_weights")  # fixed add: per port None or (w, e)
        self.exp = spec.get("exp")
        self.sum_pool = spec.get("sum_pool", False)
        self.dtype = dtype

    def step(self, ins):
        xs = []
        for i, (kind, arg) in enumerate(self.slots):
            if kind == "zeros":
                xs.append(torch.zeros((self.B, *arg), dtype=self.dtype))
                continue
            x = ins[arg]
            if self.port_weights is not None and self.port_weights[arg] is not None:
                w, e = self.port_weights[arg]
                x = shift(x * w, e)  # count -> current through elementwise synapses
            xs.append(torch.from_numpy(np.ascontiguousarray(x)).to(self.dtype))
        if self.sum_pool:
            y = _sum_pool(self.op.name, self.attrs, xs[0])
        else:
            y = self.op.compute(xs, self.attrs, self.params)
        y = y.numpy()
        if self.fixed:
            y = np.rint(y).astype(np.int64)
            if self.exp is not None:
                y = shift(y, self.exp)
        return y


def _sum_pool(op: str, attrs: dict, x: torch.Tensor) -> torch.Tensor:
    """Average pooling without the division (integer sums of spike counts); padding is
    zeros and counts towards nothing, as in the op with ``count_include_pad``."""
    if op == "global_avg_pool":
        return x.sum(dim=tuple(range(2, x.dim())), keepdim=bool(attrs["keepdims"]))
    nd = x.dim() - 2
    k = list(attrs["kernel"])
    strides = list(attrs["strides"] or k)
    pads = attrs["pads"] or [0] * (2 * nd)
    fpad: list[int] = []
    for i in reversed(range(nd)):
        fpad += [pads[i], pads[nd + i]]
    if any(fpad):
        x = F.pad(x, fpad)
    if nd == 1:  # as 2-D with a height of one: divisor_override exists only there
        x, k, strides = x.unsqueeze(2), [1, *k], [1, *strides]
    y = F.avg_pool2d(x, k, strides, 0, ceil_mode=bool(attrs["ceil_mode"]), divisor_override=1)
    return y.squeeze(2) if nd == 1 else y


class NeuronKernel(Kernel):
    """The IF neuron (see the module docstring for the fixed-point form). The burst / signed
    variants step with :func:`~snnc.ir.ops.integrate_and_fire_counts` (float) or its integer
    form, send their counts (graded spikes) and count unit spikes (``|s|``: a burst of k
    counts k, a −θ spike 1), as the reference simulator's ``neuron_spikes``."""

    counts_spikes = True

    def __init__(self, spec):
        super().__init__(spec)
        self.max_spikes = int(spec.get("max_spikes", 1))
        self.signed = bool(spec.get("signed", False))
        self.variant = self.max_spikes != 1 or self.signed
        self.has_input = spec["has_input"]
        self.port_weight = spec.get("port_weight")  # fixed: count input through elementwise synapses
        self.subtract = spec["reset"] == "subtract"
        if self.fixed:
            self.vth = np.int64(spec["vth"]) << 6
            self.v_init = spec["v_init"].astype(np.int64)
        else:
            self.theta = torch.from_numpy(np.asarray(spec["threshold"], dtype=np.float32))
            self.v_init = spec["v_init"].astype(np.float32)
            self.unit = spec["spike_scale"] == "unit"
        self.shape = tuple(spec["shape"])
        self.spike_total = 0.0

    def reset(self, batch):
        self.v = np.broadcast_to(self.v_init, (self.B, *self.shape)).copy()
        if not self.fixed:
            self.v = torch.from_numpy(self.v)
            self.spiked = torch.empty(self.v.shape, dtype=torch.bool)
        if self.variant:
            self.emitted = (np.zeros(self.v.shape, np.int64) if self.fixed else torch.zeros(self.v.shape)) if self.signed else None
        self.bias = _per_sample(self.spec.get("bias"), batch, self.B)
        self.valid = max(0, min(self.B, int(self.spec.get("samples", 1 << 62)) - batch * self.B))  # padding rows do not count

    def step(self, ins):
        if self.fixed:
            a = ins[0] if self.has_input else 0
            if self.has_input and self.port_weight is not None:
                w, e = self.port_weight
                a = shift(a * w, e)
            u = wrap24(np.left_shift(np.asarray(a, dtype=np.int64), 6))
            self.v = clip24(self.v + u + self.bias)
            if self.variant:
                return self._graded_step()
            s = self.v > self.vth
            if self.subtract:
                self.v = self.v - s * self.vth
            else:
                self.v = np.where(s, 0, self.v)
            self.spike_total += float(s[: self.valid].sum())
            return s.astype(np.int64)
        z = torch.from_numpy(np.asarray((ins[0] if self.has_input else np.float32(0)) + self.bias, dtype=np.float32))
        if self.variant:  # the op set's step form of the variants; counts out
            s = integrate_and_fire_counts(self.v, z, self.theta, self.emitted, self.max_spikes, self.subtract)
            self.spike_total += float(s[: self.valid].abs().sum(dtype=torch.float64))
            return (s if self.unit else s * self.theta).numpy()
        s = torch.empty(self.v.shape)
        integrate_and_fire(self.v, z, self.theta, s, self.spiked, self.subtract)  # the op set's step form
        self.spike_total += float(s[: self.valid].sum())
        return (s if self.unit else s * self.theta).numpy()


    def _graded_step(self) -> np.ndarray:
        """Fixed point, burst / signed: the count (graded-spike payload) and the reset, after
        the voltage has integrated this step's current."""
        s = np.floor_divide(self.v, self.vth)
        lo = -np.minimum(self.emitted, self.max_spikes) if self.signed else 0
        s = np.clip(s, lo, self.max_spikes)
        if self.subtract:
            self.v = self.v - s * self.vth
        else:
            self.v = np.where(s != 0, 0, self.v)
        if self.signed:
            self.emitted = self.emitted + s
        self.spike_total += float(np.abs(s[: self.valid]).sum())
        return s.astype(np.int64)


class ReadoutKernel(Kernel):
    """The non-spiking output layer. Float: the running sum of its input current. Fixed:
    a neuron that never fires (24-bit voltage, saturating)."""

    def __init__(self, spec):
        super().__init__(spec)
        self.has_input = spec["has_input"]
        self.port_weight = spec.get("port_weight")
        self.shape = tuple(spec["shape"])

    def reset(self, batch):
        self.acc = np.zeros((self.B, *self.shape), np.int64 if self.fixed else np.float64)
        self.bias = _per_sample(self.spec.get("bias"), batch, self.B)

    def step(self, ins):
        a = ins[0] if self.has_input else 0
        if self.fixed:
            if self.has_input and self.port_weight is not None:
                w, e = self.port_weight
                a = shift(a * w, e)
            u = wrap24(np.left_shift(np.asarray(a, dtype=np.int64), 6))
            self.acc = clip24(self.acc + u + self.bias)
        else:
            self.acc = self.acc + (np.asarray(a, np.float32) + self.bias).astype(np.float32)
        return None

    def value(self):
        return self.acc


class MaxPoolKernel(Kernel):
    """Rate-gated spiking max pooling (the IR's ``spiking_max_pool``), on spikes or counts."""

    def __init__(self, spec):
        super().__init__(spec)
        self.attrs = spec["attrs"]

    def reset(self, batch):
        self.csum = None
        self.bias = _per_sample(self.spec.get("bias"), batch, self.B)  # float: its input's static part

    def step(self, ins):
        x = ins[0] + self.bias if not self.fixed else ins[0]
        x = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float64 if self.fixed else torch.float32)
        self.csum = x.clone() if self.csum is None else self.csum + x
        y = spiking_max_pool_gate(self.csum, x, **self.attrs).numpy()
        return y.astype(np.int64) if self.fixed else y


class BlockKernel(Kernel):
    """One core process (``spec["kind"] == "block"``): reassemble the upstream layers from
    their blocks, run the segment's op kernels, keep the box of the current, step the box's
    neurons (or readout, or a whole max pool). Planned by :mod:`snnc_lava.placed`."""

    def __init__(self, spec):
        super().__init__(spec)
        self.inputs = [(tuple(p["shape"]), [(port, tuple(slice(lo, hi) for lo, hi in s)) for port, s in p["ports"]]) for p in spec["inputs"]]
        self.ops = [(build_kernel(o["spec"]), o["args"]) for o in spec["ops"]]
        sink = dict(spec["sink"]["spec"])
        sink["samples"] = spec.get("samples", sink.get("samples", 1 << 62))
        self.sink = build_kernel(sink)
        self.sink_args = spec["sink"]["args"]
        s = spec["sink"]["slices"]
        self.box = None if s is None else (slice(None), *(slice(lo, hi) for lo, hi in s))
        self.counts_spikes = self.sink.counts_spikes

    @property
    def spike_total(self):
        return self.sink.spike_total

    def reset(self, batch):
        for k, _ in self.ops:
            k.reset(batch)
        self.sink.reset(batch)

    def step(self, ins):
        values = []
        for shape, ports in self.inputs:
            first = ins[ports[0][0]]
            if len(ports) == 1 and first.shape[1:] == shape:  # one block: the whole layer
                values.append(first)
                continue
            full = np.zeros((self.B, *shape), dtype=first.dtype)
            for port, box in ports:
                full[(slice(None), *box)] = ins[port]
            values.append(full)
        outs: list = []

        def get(r):
            return values[r[1]] if r[0] == "in" else outs[r[1]]

        for k, args in self.ops:
            outs.append(k.step([get(r) for r in args]))
        args = [get(r) for r in self.sink_args]
        if self.box is not None:
            args = [np.ascontiguousarray(a[self.box]) for a in args]
        return self.sink.step(args)

    def value(self):
        return self.sink.value()


class RouteKernel(Kernel):
    """A placed layer's router: puts its blocks' boxes (one in-port each) back into the whole
    layer and sends it on to every reader (snnc_lava.placed)."""

    def __init__(self, spec):
        super().__init__(spec)
        self.shape = tuple(spec["shape"])
        self.boxes = [(slice(None), *(slice(lo, hi) for lo, hi in b)) for b in spec["boxes"]]

    def step(self, ins):
        full = np.zeros((self.B, *self.shape), dtype=ins[0].dtype)
        for box, x in zip(self.boxes, ins):
            full[box] = x
        return full


_KERNELS = {"op": OpKernel, "neuron": NeuronKernel, "readout": ReadoutKernel, "maxpool": MaxPoolKernel, "block": BlockKernel, "route": RouteKernel}


def build_kernel(spec: dict) -> Kernel:
    return _KERNELS[spec["kind"]](spec)

