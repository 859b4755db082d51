"""The differentiable form of the op set for training: the ``if_neuron`` with a surrogate
gradient, the training executor, the losses (see :mod:`snnc.train` for the equations).

The forward pass is the op set's: :func:`surrogate_if_sequence` runs the ``if_neuron``'s
equations with the op set's spike rule (:func:`~snnc.ir.ops.spike_counts_step`; ``v >= θ``
for the plain neuron, as :func:`~snnc.ir.ops.integrate_and_fire`), and every other op runs
its own form through the :class:`~snnc.ir.executor.Executor`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from snnc.ir.executor import Executor, Timed
from snnc.ir.graph import Graph, Node
from snnc.ir.ops import spike_counts_step

LOSSES = ("tet", "ce")
TET_LAMBDA = 1e-3  # λ of the TET loss's MSE regulariser (Deng et al. 2022)
TET_PHI = 1.0  # φ, the constant the regulariser pulls the per-step outputs towards


# ------------------------------------------------------------------ the neuron
class _IFSurrogate(torch.autograd.Function):
    """The ``if_neuron`` over a whole sequence: the op's equations forward (in place, step by
    step, with the op set's spike rule), BPTT with the rectangular surrogate backward, written
    out by hand (a few elementwise operations per step instead of autograd's graph of them).

    Forward, per step: ``v += z(t)``; ``s(t)`` the op's count; ``w(t) = 1[lo + 1/2 <= v/θ < K + 1/2]``
    (the surrogate's window, kept as a bit per neuron and step); reset. Backward, from the
    last step, with ``g_v`` the gradient reaching the potential after the reset (0 after T)
    and ``c`` the spike scale (θ or 1)::

        g_s   = c · g_y(t) − θ · g_v                   (soft reset: v −= θ s)
        g_s   = c · g_y(t),  g_v ← g_v · [s(t) = 0]     (hard reset)
        g_z(t) = g_v ← g_v + w(t) · g_s / θ

    (with the soft reset this is ``g_z(t) = c·g_y(t)/θ`` inside the window, the later steps'
    gradient ``g_v`` outside it).
    """

    @staticmethod
    def forward(ctx, x_seq, theta, v_init, max_spikes: int, signed: bool, subtract: bool, scaled: bool):
        T, shape = x_seq.shape[0], x_seq.shape[1:]
        dev = x_seq.device
        v = (torch.zeros(shape, device=dev) + v_init).contiguous()
        emitted = torch.zeros(shape, device=dev) if signed else None
        plain = max_spikes == 1 and not signed
        y = torch.empty((T, *shape), device=dev)
        window = torch.empty((T, *shape), dtype=torch.bool, device=dev)
        fired = None if subtract else torch.empty((T, *shape), dtype=torch.bool, device=dev)
        hi = (max_spikes + 0.5) * theta
        lo = 0.5 * theta
        spiked = torch.empty(shape, dtype=torch.bool, device=dev)
        for t in range(T):
            v.add_(x_seq[t])
            if emitted is not None:  # lo(t) = -min(n(t-1), K)
                lo = (0.5 - emitted.clamp(max=float(max_spikes))) * theta
            torch.logical_and(v >= lo, v < hi, out=window[t])
            if plain:  # as integrate_and_fire
                torch.ge(v, theta, out=spiked)
                s = y[t]
                s.copy_(spiked)
            else:
                s = spike_counts_step(v, theta, emitted, max_spikes)
                y[t] = s
            if subtract:
                if plain:
                    v.addcmul_(s, theta, value=-1.0)
                else:
                    v.sub_(s * theta)
            else:
                torch.ne(s, 0, out=fired[t])
                v.masked_fill_(fired[t], 0.0)
            if emitted is not None:
                emitted.add_(s)
        if scaled:
            y.mul_(theta)
        ctx.save_for_backward(theta, window, *(() if fired is None else (fired,)))
        ctx.subtract, ctx.scaled = subtract, scaled
        return y

    @staticmethod
    def backward(ctx, gy):
        theta, window, *rest = ctx.saved_tensors
        fired = rest[0] if rest else None
        # In the window, w·g_s/θ = c·g_y/θ − g_v (soft reset): the potential's gradient there
        # is c·g_y/θ alone; outside it passes on unchanged.
        gys = gy if ctx.scaled else gy / theta
        gx = torch.empty_like(gy)
        gv = torch.zeros(gy.shape[1:], device=gy.device, dtype=gy.dtype)
        for t in reversed(range(gy.shape[0])):
            if ctx.subtract:
                gv = torch.where(window[t], gys[t], gv)
            else:
                gv = gv.masked_fill(fired[t], 0.0)
                gv = torch.where(window[t], gv + gys[t], gv)
            gx[t] = gv
        return gx, None, None, None, None, None, None


def surrogate_if_sequence(x_seq: torch.Tensor, attrs: dict[str, Any], theta: torch.Tensor, v_init: torch.Tensor) -> torch.Tensor:
    """The ``if_neuron`` op over ``x_seq`` ``[T, B, ...]`` (resolved ``attrs``), differentiable
    in ``x_seq``: the op's equations with the op set's spike rule forward, BPTT with the
    rectangular surrogate backward (module docstring). Returns ``y`` ``[T, B, ...]``, equal to
    the op's output."""
    return _IFSurrogate.apply(
        x_seq, theta.detach(), v_init.detach(), int(attrs["max_spikes"]), bool(attrs["signed"]), attrs["reset"] == "subtract",
        attrs["spike_scale"] == "threshold",
    )  # fmt: skip


class TrainingExecutor(Executor):
    """The executor with trainable synaptic parameters (through :meth:`params`), the surrogate
    neuron when gradients are enabled (the op's own form otherwise), and the per-step outputs
    ``O(t)`` (each readout's input, ``[T, B, ...]``) kept in :attr:`step_outputs`."""

    def __init__(self, graph: Graph, device: str, timesteps: int, trainable: dict[int, dict[str, torch.Tensor]]):
        super().__init__(graph, device, timesteps)
        self._params.update(trainable)
        self.step_outputs: list[torch.Tensor] = []

    def call_stateful(self, node: Node, ins: list[Timed]) -> Timed:
        if node.spec.has("readout"):
            self.step_outputs.append(ins[0].dense(self._require_timesteps(node)))
        if node.spec.has("neuron") and torch.is_grad_enabled():
            p = self.params(node)
            y = surrogate_if_sequence(ins[0].dense(self._require_timesteps(node)), self.attrs(node), p["threshold"], p["v_init"])
            return Timed(y, static=False)
        return super().call_stateful(node, ins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``O(t)`` of the (single) readout: ``[T, B, C]``."""
        self.step_outputs = []
        self.run(x)
        return self.step_outputs[0]


# ------------------------------------------------------------------ losses
def loss_fn(name: str, out: torch.Tensor, y: torch.Tensor, tet_lambda: float = TET_LAMBDA, tet_phi: float = TET_PHI) -> torch.Tensor:
    """The training loss on the per-step outputs ``out`` ``[T, B, C]`` (module docstring)."""
    if name == "ce":
        return F.cross_entropy(out.mean(0), y)
    T = out.shape[0]
    ce = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.repeat(T))  # = (1/T) Σ_t CE(O(t), y)
    if tet_lambda == 0:
        return ce
    mse = F.mse_loss(out, torch.full_like(out, tet_phi))
    return (1 - tet_lambda) * ce + tet_lambda * mse


