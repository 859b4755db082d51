"""Fine-tuning a converted SNN with surrogate gradients (``snnc finetune``, :func:`finetune`).

Modules: :mod:`snnc.train.surrogate` (the differentiable neuron, the training executor, the
losses) and :mod:`snnc.train.loop` (the training loop, :func:`finetune`).

The converted network is trained as the spiking network it is, at its T, from its calibrated
weights: same graph, same nodes, same neuron variants. What changes are the synaptic ops'
``weight`` and ``bias`` (the ops with trait ``synaptic``); thresholds and initial potentials
stay as calibrated (so ``v_init`` stays consistent with ``threshold``).

**Forward = the op set.** The training forward is the IR's :class:`~snnc.ir.executor.Executor`
walking the graph (no second interpreter). Stateless ops and the stateful ops other than the
neuron (``readout``, ``spiking_max_pool``) run their own forms, differentiable as they are.
The ``if_neuron`` runs :func:`surrogate_if_sequence`: the op's equations step by step,
with the spike rule of the op set (``v >= θ`` for the plain neuron, :func:`spike_counts_step`
for the variants), so the trained artifact, simulated by the reference simulator, computes
exactly the network that was trained (the tests check it); binary spikes stay binary and a
burst neuron's counts stay in ``[lo(t), K]``.

**Backward: a rectangular surrogate of the staircase.** With ``u = v/θ`` the spike count is
``s = clip(floor(u), lo, K)`` (plain neuron: ``lo = 0, K = 1``, i.e. ``H(v − θ)``; signed:
``lo = −min(n, K)``). Its derivative is replaced by the sum of unit-width rectangles centred on
the staircase's steps (at ``u = lo+1, ..., K``)::

    ds/dv := (1/θ) · 1[lo + 1/2 <= v/θ < K + 1/2]

(plain neuron: ``1/θ`` on ``[θ/2, 3θ/2)``). Gradients flow through the soft reset
(``v −= θ s``) and over time (BPTT over the T steps); the count ``n`` of a signed neuron
carries no gradient; a hard reset passes the gradient where the neuron did not fire.

**Losses.** ``O(t)`` is the input of the ``readout`` at step t (the network's per-step output):

* ``tet`` (Temporal Efficient Training, Deng et al., ICLR 2022):
  ``L = (1 − λ) · (1/T) Σ_t CE(O(t), y) + λ · (1/T) Σ_t MSE(O(t), φ)`` with ``λ = 1e-3`` and
  ``φ = 1`` (the defaults of the paper's reference code), the MSE averaged over batch and classes;
* ``ce``: ``CE((1/T) Σ_t O(t), y)``, the cross-entropy of the time-averaged output (what the
  readout reports at T).

Adam with a cosine learning-rate schedule over the planned epochs; a seeded validation split;
early stopping on validation accuracy (at T, with the op set's own forms); the best epoch's
weights are kept (epoch 0, the weights as calibrated, included: fine-tuning never returns a
model worse on the validation split than it was given).
"""

from snnc.train.loop import finetune
from snnc.train.surrogate import LOSSES, TET_LAMBDA, TET_PHI, TrainingExecutor, loss_fn, surrogate_if_sequence

__all__ = ["LOSSES", "TET_LAMBDA", "TET_PHI", "TrainingExecutor", "finetune", "loss_fn", "surrogate_if_sequence"]
