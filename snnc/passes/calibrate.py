"""Layer-wise calibration of the converted SNN (SNN Calibration, Li et al. 2021/2022).

Conversion leaves a per-layer error: a spiking layer's time-averaged output r is the ANN's
activation a clipped at the threshold and quantised to T levels, and the error of each
layer shifts the input of the next. The calibration passes correct it layer by layer in
forward order, each layer measured with every earlier layer already spiking and
calibrated, against the ANN's activation computed with the original weights:

* ``calibrate-bias`` (the light pipeline): per output channel c, e_c = mean over samples
  and positions of (r − a); the layer's input current is lowered by e_c every step.
* ``calibrate-potential``: per channel (or per neuron), v(0) += T · mean over samples of
  (a − r), so that the neurons fire the missing (or surplus) spikes over the T steps.
* ``calibrate-weights`` (then ``calibrate-bias`` and ``calibrate-potential``: the advanced
  pipeline): the
  weights of the layer minimise ‖Q_T(W·x̄ + b; θ, v0) − a‖², x̄ the time-averaged spiking
  input of the layer and Q_T the IF neuron's response to a constant current
  (θ/T)·clip(floor((zT + v0)/θ), 0, T), with a straight-through gradient for the floor;
  Adam with a cosine learning-rate schedule.

All three calibrate for the T of the conversion (``--timesteps``), or for several T at once
(``--timesteps 8,16,32``: one "anytime" artifact; :attr:`PassContext.calibrated_for`). A
spiking layer's output over the first t steps does not depend on how many steps follow,
so the layer is simulated once, to the largest T, and the time averages r_T over the
first T steps of that run are read off for every listed T (the simulation costs what a
conversion for the largest T alone costs). Each correction then minimises the squared
error summed over the listed T, under its own linear model of how the correction moves
r_T:

* ``calibrate-bias``: lowering the input current by c lowers r_T by c at every T (below
  saturation), so Σ_T (e_T − c)² is least at c = the plain mean of the per-T errors e_T.
* ``calibrate-potential``: raising v(0) by Δv adds Δv/θ spikes of θ over T steps, i.e.
  raises r_T by Δv/T; Σ_T (d_T − Δv/T)², d_T = mean(a − r_T), is least at
  Δv = Σ_T (d_T/T) / Σ_T T⁻² = Σ_T w_T (T·d_T) with w_T = T⁻² / Σ_T' T'⁻²: the weighted
  mean of the per-T corrections T·d_T, the smallest T weighing most (at T = 8, 16, 32:
  16/21, 4/21, 1/21), because one unit of v(0) moves its rate the most. One v(0) cannot
  serve every T exactly: a surplus of Δv spikes is spread over T steps.
* ``calibrate-weights``: the loss is the mean over the listed T of
  ‖Q_T(W·x̄_T + b; θ, v0) − a‖², x̄_T the layer's input averaged over the first T steps
  (each T its own input: the earlier layers' outputs differ with T), on the same
  minibatches.

With one T all of this reduces to the single-T formulas (bit for bit). The SNN is simulated
one layer at a time over all calibration samples: the spike trains between layers are
kept bit-packed (T·N bits per neuron), so each calibration pass costs two simulations
of the network, independent of its depth; the ANN up to each layer is re-evaluated per
batch for that layer's targets (cheap next to the SNN, but it grows with depth).

Memory does not grow with the number of samples: the spike trains (and, for weight
calibration, the layer's time-averaged inputs and ANN targets) go to a
:class:`~snnc.utils.spill.SpillStore`, in memory up to ``PassContext.store_memory``
bytes and in temporary files beyond; ``store="recompute"`` keeps nothing and simulates
each layer's inputs again from the network input (depth times the work). Statistics are
accumulated batch by batch.

Under torchrun each rank simulates its shard of the batches (:mod:`snnc.parallel`). The
per-channel means are :class:`~snnc.parallel.ExactSum` sums reduced over the ranks, so
calibrate-bias and calibrate-potential give the same network on any number of ranks;
calibrate-weights sums the gradients over the ranks (the same steps everywhere, equal to
one process's up to float rounding).

Each pass records, per layer, the mean and RMS of SNN − ANN output before and after
(``provenance["records"]``, shown by ``snnc convert``).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from snnc import parallel
from snnc.errors import PassError
from snnc.ir.executor import Executor, Interpreter, Timed
from snnc.ir.graph import Graph, Node, Value
from snnc.ir.ops import if_neuron_rate
from snnc.parallel import ExactSum, Group
from snnc.passes.balance import channels_last
from snnc.passes.base import Pass, PassContext, choice, register_pass
from snnc.passes.current import channel_shape, shift_input_current
from snnc.simulator.reference import ReferenceSimulator, default_batch_size
from snnc.utils.memory import HeapBound, keep_freed_memory, release_free_memory
from snnc.utils.spill import SpillStore


# ------------------------------------------------------------------ storage
def _pack(value: Timed, scale: torch.Tensor | None) -> tuple[str, np.ndarray]:
    """``value`` as one array to store: bit-packed when it is ``scale`` times a spike train
    (exactly), else dense float32 (``kind`` says which, and whether it is static)."""
    data = value.data
    if not value.static and scale is not None:
        try:
            mask = data != 0
            exact = torch.equal(mask.to(data.dtype) * scale.to(data.device), data)
        except RuntimeError:  # scale does not broadcast to the value
            exact = False
        if exact:
            return "bits", np.packbits(mask.cpu().numpy().reshape(-1))
    return ("static" if value.static else "dense"), data.cpu().numpy()


def _unpack(kind: str, array: np.ndarray, shape: tuple[int, ...], scale: torch.Tensor | None, device: torch.device) -> Timed:
    if kind == "bits":
        n = int(np.prod(shape))
        mask = torch.from_numpy(np.unpackbits(np.asarray(array), count=n).reshape(shape)).to(device)
        return Timed(mask.to(torch.float32) * scale.to(device), static=False)
    return Timed(torch.from_numpy(np.array(array)).to(device), static=kind == "static")


# ------------------------------------------------------------ the engine
@dataclass
class _Segment:
    """A stateful node and the stateless nodes computing its input from stored values."""

    node: Node
    nodes: list[Node]  # in graph order
    boundary: list[Value]  # stored values the segment reads


def segments(graph: Graph) -> list[_Segment]:
    """One segment per stateful node (neuron, spiking max pool, readout), in graph order."""
    return [_segment(graph, node) for node in graph.nodes if node.spec.stateful]


def _segment(graph: Graph, node: Node) -> _Segment:
    """The stateless nodes computing ``node``'s input back to stored values (the outputs
    of stateful nodes and the graph input), in graph order."""
    members: set[int] = set()
    boundary: dict[int, Value] = {}
    stack = list(node.inputs)
    while stack:
        v = stack.pop()
        p = v.producer
        if p is None or p.spec.stateful:
            boundary[id(v)] = v
        elif id(p) not in members:
            members.add(id(p))
            stack.extend(p.inputs)
    nodes = [n for n in graph.nodes if id(n) in members]
    return _Segment(node, nodes, list(boundary.values()))


class LayerwiseRunner:
    """Simulates an SNN-stage graph one stateful node at a time over all samples of ``x``,
    with the reference simulator's executor walking each segment.

    The samples are cut into batches (the same ones whatever the number of ranks); this
    rank simulates the batches ``local`` (its shard). ``batch(seg, b)`` simulates one
    segment on batch ``b``; ``keep(seg, b, out)`` stores its output for the later segments
    in ``store`` (bit-packed where it is a spike train; in memory up to the store's
    budget, then on disk) and ``done(seg)`` frees what no later segment reads. Without a
    store (``store=None``) nothing is kept: each segment's inputs are recomputed by
    simulating the graph from its input. Parameters (and nodes) changed by a calibration
    are picked up by ``refresh``.
    """

    def __init__(
        self,
        graph: Graph,
        ann: Graph,
        ann_names: dict[str, str],
        x: np.ndarray,
        T: int,
        batch_size: int | None = None,
        *,
        device: str | torch.device = "cpu",
        group: Group | None = None,
        store: SpillStore | None = None,
    ):
        self.graph = graph
        self.T = T
        self.device = torch.device(device)
        self.group = group or parallel.current()
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.sim = ReferenceSimulator(graph, self.device, timesteps=T)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.batch_size = bs = batch_size or default_batch_size(T, graph, self.device.type)
        self.batches = [slice(lo, min(len(x), lo + bs)) for lo in range(0, len(x), bs)]
        self.local = list(self.group.shard(len(self.batches)))
        self.segments = segments(graph)
        self.store = store
        self._kind: dict[tuple[int, int], tuple[str, tuple[int, ...]]] = {}
        self._scale: dict[int, torch.Tensor | None] = {}
        self._remaining = {id(v): 0 for v in graph.values()}
        for seg in self.segments:
            for v in seg.boundary:
                self._remaining[id(v)] += 1
        self.ann = ann
        self._ann_interp = Interpreter(ann, self.device)
        self._ann_names = ann_names
        self._ann_outputs = {id(v): i for i, v in enumerate(graph.outputs)}
        # The ANN side, with a store: each batch's ANN run advances from one target to the
        # next (its live values kept in the store between segments) instead of starting
        # from the input for every segment, which cost O(layers^2) ANN layers per batch.
        self._ann_index = {id(n): i for i, n in enumerate(ann.nodes)}
        self._ann_at: dict[int, tuple[int, list[int]]] = {}  # batch -> (index of the last ANN node run, ids of its live values)
        # Peak memory set by one batch, not by how many a layer runs (the heap's holes).
        self.heap = HeapBound()

    @property
    def samples(self) -> int:
        return len(self.x)

    def rank_samples(self) -> list[range]:
        """The sample indices of every rank's batches (contiguous), by rank."""
        spans = []
        for r in range(self.group.world):
            mine = Group(r, self.group.world).shard(len(self.batches))
            spans.append(range(self.batches[mine[0]].start, self.batches[mine[-1]].stop) if len(mine) else range(0))
        return spans

    # ------------------------------------------------------------ helpers
    def refresh(self, seg: _Segment) -> None:
        """Re-read the segment's parameters and nodes (a calibration may have inserted one)."""
        seg.nodes = _segment(self.graph, seg.node).nodes
        for n in [*seg.nodes, seg.node]:
            self.sim.refresh(n)
        self.heap.reset()

    def _input(self, b: int) -> Timed:
        return self.sim.encode(self.x[self.batches[b]], self.T)

    def _boundary(self, seg: _Segment, b: int) -> dict[int, Timed]:
        if self.store is None:
            return self._recompute(seg, b)
        env = {}
        for v in seg.boundary:
            if v.producer is None:
                env[id(v)] = self._input(b)
            else:
                kind, shape = self._kind[(id(v), b)]
                env[id(v)] = _unpack(kind, self.store.get(id(v), b), shape, self._scale[id(v)], self.device)
        return env

    def _recompute(self, seg: _Segment, b: int) -> dict[int, Timed]:
        """The segment's boundary values on batch ``b``, simulated from the graph input."""
        want = {id(v) for v in seg.boundary}
        producers = [v.producer for v in seg.boundary if v.producer is not None]
        env = {id(v): self._input(b) for v in self.graph.inputs}
        if producers:
            last = max(producers, key=self.graph.nodes.index)
            got: dict[int, Timed] = {}
            self.sim.walk(self.graph.nodes, env, observe=lambda n, out: got.__setitem__(id(n.output), out), watch=producers, stop_after=last)
            env.update(got)
        return {k: v for k, v in env.items() if k in want}

    def current(self, seg: _Segment, env: dict[int, Timed]) -> Timed:
        """The segment's input current from its boundary values (all T steps)."""
        self.sim.walk(seg.nodes, env, free=False)
        return env[id(seg.node.inputs[0])]

    def ann_target(self, seg: _Segment, b: int) -> torch.Tensor:
        """The ANN's output of the node ``seg.node`` replaced (or the graph output it reads)."""
        if seg.node.spec.has("readout"):
            value = self.ann.outputs[self._ann_outputs[id(seg.node.output)]]
        else:
            name = self._ann_names.get(seg.node.name)
            if name is None:
                raise PassError(f"calibration: no ANN counterpart recorded for {seg.node.name!r}; run the calibration passes after insert-if")
            value = self.ann.node(name).output
        target = value.producer
        if target is None:  # an ANN output that is its input
            return self._ann_interp.run(self.x[self.batches[b]])[self._ann_outputs[id(seg.node.output)]]
        if self.store is not None:
            return self._ann_advance(b, target, value)
        return self._ann_from_input(b, target)  # recompute mode: the ANN from the input, like the SNN

    def _ann_from_input(self, b: int, target: Node) -> torch.Tensor:
        """``target``'s output on batch ``b``, the ANN run from the input up to it."""
        got: list[torch.Tensor] = []
        self._ann_interp.run(self.x[self.batches[b]], observe=lambda n, out: got.append(out), watch=[target], stop_after=target)
        return got[0]

    @torch.no_grad()
    def _ann_advance(self, b: int, target: Node, value: Value) -> torch.Tensor:
        """Batch ``b``'s ANN run continued from where its last target left it up to
        ``target`` (the same node again: its kept output); the values later nodes read go
        back to the store, under the node index the run stopped at (shared by the batches).
        A target before the last one (no graph does that) is computed from the input."""
        stop = self._ann_index[id(target)]
        pos, live = self._ann_at.get(b, (-1, []))
        if stop < pos:
            return self._ann_from_input(b, target)
        if pos < 0:
            env = {id(v): Timed(self.x[self.batches[b]].to(self.device), True) for v in self.ann.inputs}
        else:
            env = {vid: Timed(torch.from_numpy(np.array(self.store.get(("ann", pos, vid), b))).to(self.device), True) for vid in live}
        if stop > pos:
            self._ann_interp.walk(self.ann.nodes[pos + 1 : stop + 1], env)
            for vid, v in env.items():
                self.store.put(("ann", stop, vid), b, v.data.cpu().numpy())
            self._ann_at[b] = (stop, list(env))
            if pos >= 0 and all(p != pos for p, _ in self._ann_at.values()):  # no batch is there any more
                for vid in live:
                    self.store.drop(("ann", pos, vid))
        return env[id(value)].data

    def batch(self, seg: _Segment, b: int) -> tuple[Timed, dict[int, Timed]]:
        """Simulate the segment on batch ``b``: its output (for a readout, its input current,
        whose time average is the readout's output) and the values it computed from (by
        value id)."""
        self.heap.step()
        env = self._boundary(seg, b)
        z = self.current(seg, env)
        if len(seg.node.inputs) > 1:  # a stateful op of several inputs (temporal matmul)
            return self.sim.run_node(seg.node, [env[id(v)] for v in seg.node.inputs]), env
        if seg.node.spec.has("readout"):
            # A readout's output after T steps is the time average of its input current:
            # hand back the current, whose average the passes take.
            return z, env
        return self.sim.run_node(seg.node, [z]), env

    def keep(self, seg: _Segment, b: int, out: Timed) -> None:
        """Store the segment's output for batch ``b`` (bit-packed spikes where possible), so
        that memory holds one dense batch at a time."""
        node = seg.node
        if node.spec.has("readout") or self.store is None:
            return
        if id(node.output) not in self._scale:
            scale = None
            if node.spec.has("neuron"):
                scale = self.sim.param(node, "threshold") if node.attr("spike_scale") == "threshold" else torch.ones(())
            elif node.spec.has("preserves_amplitude"):  # spiking max pooling passes its input's spikes on
                scale = self._scale.get(id(node.inputs[0]))
            self._scale[id(node.output)] = scale
        kind, array = _pack(out, self._scale[id(node.output)])
        self._kind[(id(node.output), b)] = (kind, tuple(out.data.shape))
        self.store.put(id(node.output), b, array)

    def done(self, seg: _Segment) -> None:
        """The segment's outputs are all kept: free the inputs no later segment reads."""
        for v in seg.boundary:
            self._remaining[id(v)] -= 1
            if self._remaining[id(v)] == 0 and self.store is not None:
                self.store.drop(id(v))
        release_free_memory()  # holes the heap could not reuse in this layer go back to the OS
        self.heap.reset()


# ------------------------------------------------------------ statistics
class ErrorStats:
    """Mean and RMS of SNN − ANN over every element, accumulated exactly (batch by batch,
    then over the ranks), so they do not depend on how the samples were split."""

    def __init__(self):
        self.acc = ExactSum(2)

    def add(self, diff: torch.Tensor) -> None:
        d = diff.double()
        self.acc.add(torch.stack([d.sum(), (d * d).sum()]), d.numel())

    def summary(self, group: Group) -> dict[str, float]:
        self.acc.reduce(group)
        s, s2 = self.acc.value()
        n = max(1, self.acc.count)
        return {"mean": float(s / n), "rms": math.sqrt(max(0.0, float(s2 / n)))}


def _per_channel_sum(d: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum over batch and positions per channel (axis 1) and the count per channel."""
    flat = channels_last(d)
    return flat.double().sum(1), flat.shape[1]


def averages(value: Timed, Ts: tuple[int, ...]) -> list[torch.Tensor]:
    """The time averages of ``value`` over its first T steps, for each T of ``Ts`` (the
    largest being the whole simulation): a spiking layer's first T steps do not depend on
    how many follow, so one simulation to max(T) serves every listed T."""
    if value.static:
        return [value.data] * len(Ts)
    steps = value.data.shape[0]
    return [value.mean() if t >= steps else value.data[:t].mean(0) for t in Ts]


def mean_correction(errs: list[np.ndarray]) -> np.ndarray:
    """The constant c minimising Σ_T (e_T − c)² (per element): the mean of the per-T
    errors (the error itself for one T)."""
    return errs[0] if len(errs) == 1 else sum(errs) / len(errs)


def potential_correction(Ts: tuple[int, ...], errs: list[np.ndarray]) -> np.ndarray:
    """The v(0) increment Δv minimising Σ_T (d_T − Δv/T)², d_T = mean(a − r_T) at T:
    Σ_T w_T·T·d_T with w_T = T⁻² / Σ_T' T'⁻² (T·d for one T, as before)."""
    if len(Ts) == 1:
        return Ts[0] * errs[0]
    inv = np.array([1.0 / t**2 for t in Ts])
    w = inv / inv.sum()
    return sum(wk * t * d for wk, t, d in zip(w, Ts, errs))


def _error_summaries(Ts: tuple[int, ...], before: list[ErrorStats], after: list[ErrorStats], group: Group) -> dict[str, Any]:
    """A layer's record: SNN − ANN ``before`` and ``after`` the correction (one T), or over
    all listed T together plus ``by_timesteps`` (several)."""
    if len(Ts) == 1:
        return {"before": before[0].summary(group), "after": after[0].summary(group)}
    rows = {str(t): {"before": b.summary(group), "after": a.summary(group)} for t, b, a in zip(Ts, before, after)}

    def pooled(side: str) -> dict[str, float]:  # every T has the same number of elements
        mean = float(np.mean([r[side]["mean"] for r in rows.values()]))
        rms = math.sqrt(float(np.mean([r[side]["rms"] ** 2 for r in rows.values()])))
        return {"mean": mean, "rms": rms}

    return {"before": pooled("before"), "after": pooled("after"), "by_timesteps": rows}


def open_store(ctx: PassContext) -> SpillStore | None:
    """Where the calibration keeps the spike trains between layers (see PassContext.store)."""
    if ctx.store == "recompute":
        return None
    budget = {"memory": None, "disk": 0}.get(ctx.store, ctx.store_memory)
    return SpillStore(budget, ctx.spill_dir)


def _weight_grid(grid: dict | None, device) -> tuple[torch.Tensor, int, int] | None:
    """A quantiser's weight grid (step, lo, hi) as tensors on ``device``, or None."""
    if grid is None:
        return None
    return torch.as_tensor(np.asarray(grid["step"]), dtype=torch.float32, device=device), int(grid["lo"]), int(grid["hi"])


def _on_grid(w: torch.Tensor, grid: tuple[torch.Tensor, int, int]) -> torch.Tensor:
    """``w`` rounded onto the grid in the forward pass, unchanged in the backward pass
    (straight-through); a step of 0 leaves the weight as it is."""
    step, lo, hi = grid
    live = step > 0
    q = torch.where(live, torch.clamp(torch.round(w / torch.where(live, step, torch.ones_like(step))), lo, hi) * step, w)
    return w + (q - w).detach()


# ----------------------------------------------------------------- passes
class FitDraw:
    """The minibatches of a weight fit: ``m`` sample indices per step, with replacement,
    from ``n`` samples, drawn from the seeded generator ``gen`` that every rank shares.

    Alone (one rank), a step draws ``m`` indices uniformly from all ``n`` samples. On
    several ranks each holds only its own samples (``spans[r]``, contiguous): rank ``r``
    draws a fixed ``counts[r]`` of its own (``m`` split in proportion to the spans, at
    least one per non-empty span), so every step's shard has the same size: shards of
    changing size (a uniform draw over all samples splits 26 to 38 of 64 on 2 ranks) leave
    holes in the heap that the reuse of freed memory (snnc.utils.memory) cannot fill. A
    rank's loss terms are divided by ``denominator`` (its count over its share of the
    samples, times ``n``), so the gradient summed over the ranks estimates the mean over
    all samples (a stratified sample); alone, ``denominator`` is ``m``."""

    def __init__(self, gen: torch.Generator, n: int, m: int, spans: list[range], rank: int):
        self.gen, self.n, self.m = gen, n, m
        self.alone = len(spans) == 1
        self.span = spans[rank]
        if self.alone:
            self.counts, self.offset, self.count, self.denominator = [m], 0, m, m
            return
        quota = [m * len(s) / n for s in spans]
        counts = [int(q) for q in quota]
        for r in sorted(range(len(spans)), key=lambda r: (counts[r] - quota[r], r))[: m - sum(counts)]:
            counts[r] += 1  # largest remainders
        self.counts = [max(c, 1) if len(s) else 0 for c, s in zip(counts, spans)]
        self.offset = sum(self.counts[:rank])
        self.count = self.counts[rank]
        self.denominator = self.count * n / len(self.span) if self.count else math.inf  # (no terms when 0)

    def next(self) -> list[int]:
        """This rank's sample indices of the next step (every rank must call it each step)."""
        if self.alone:
            return torch.randint(0, self.n, (self.m,), generator=self.gen).tolist()
        u = torch.rand(sum(self.counts), generator=self.gen, dtype=torch.float64)[self.offset : self.offset + self.count]
        return [self.span.start + min(int(x * len(self.span)), len(self.span) - 1) for x in u.tolist()]


class _Calibration(Pass):
    """Shared driver: walks the segments in forward order, calibrating the target layers.
    Each rank simulates its shard of the batches; the statistics are reduced exactly over
    the ranks before every update, so every rank applies the same correction."""

    requires_stage = "snn"
    # Whether the graded messages of an attention network (bipolar neurons) are calibrated
    # too: the mean-error passes (bias, potential) are; the weight fit, whose quantiser is
    # the ReLU-shaped one, is not.
    calibrates_bipolar = True

    @dataclass
    class Options:
        samples: int = 1024
        output: bool = True
        layers: str = ""  # only these layers (names separated by ';'; empty: every layer)

    def targets(self, seg: _Segment) -> bool:
        only = self._only()
        if only:
            return seg.node.name in only
        if seg.node.spec.has("neuron"):
            return not seg.node.attr("bipolar") or self.calibrates_bipolar
        return seg.node.spec.has("readout") and self.options.output

    def _only(self) -> set[str]:
        return {name for name in self.options.layers.split(";") if name}

    def check(self, graph: Graph) -> None:
        """Refuse, before any work, a graph this pass cannot calibrate."""
        for n in graph.having("neuron"):
            if n.attr("spike_scale") != "threshold":
                raise PassError(f"{self.name}: neuron {n.name!r} emits unit spikes; put normalize-weights after the calibration passes")
        known = {n.name for n in graph.nodes if n.spec.has("neuron") or n.spec.has("readout")}
        unknown = sorted(self._only() - known)
        if unknown:
            raise PassError(
                f"{self.name}: layers={';'.join(unknown)} names no spiking layer or readout of the graph; "
                f"known: {', '.join(sorted(known))}"
            )

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        if ctx.ann_reference is None:
            raise PassError(f"{self.name}: the ANN reference is missing; run it in the same pipeline as insert-if, after it")
        self.check(graph)
        x = ctx.require_calib(self.name)[: self.options.samples]
        self._Ts = Ts = ctx.calibrated_for
        T = Ts[-1]  # simulated once to the largest T; the others are prefixes of that run
        group = ctx.group
        sent = group.bytes_reduced
        store = open_store(ctx)
        with store or contextlib.nullcontext():
            runner = LayerwiseRunner(graph, ctx.ann_reference, ctx.ann_names, x, T, device=ctx.device, group=group, store=store)
            local = runner.local
            work = sum(2 if self.targets(s) else 1 for s in runner.segments) * len(local)
            layers = []
            t0 = time.perf_counter()
            with ctx.progress(f"{self.name} (T={','.join(map(str, Ts))})", work) as task:
                for seg in runner.segments:
                    if not self.targets(seg):
                        for b in local:
                            runner.keep(seg, b, runner.batch(seg, b)[0])
                            task.advance(1)
                        runner.done(seg)
                        continue
                    before = [ErrorStats() for _ in Ts]
                    self.begin(seg, runner)
                    for b in local:
                        out, env = runner.batch(seg, b)
                        a = runner.ann_target(seg, b)
                        rs = averages(out, Ts)
                        for stats, r in zip(before, rs):
                            stats.add(r - a)
                        self.observe(seg, b, rs, a, env)
                        task.advance(1)
                    where = self.update(graph, seg, ctx)
                    if ctx.quantizer is not None:  # hardware-aware (the quantize pass): the layer back on the target's grid
                        ctx.quantizer.project(graph, [seg.node.name])
                    runner.refresh(seg)
                    after = [ErrorStats() for _ in Ts]
                    for b in local:
                        out, _ = runner.batch(seg, b)
                        a = runner.ann_target(seg, b)
                        for stats, r in zip(after, averages(out, Ts)):
                            stats.add(r - a)
                        runner.keep(seg, b, out)
                        task.advance(1)
                    errors = _error_summaries(Ts, before, after, group)  # reduced over the ranks: every rank decides alike
                    layer = {"layer": seg.node.name, "changed": where, **errors}
                    if where and not self.keeps(errors):
                        # The correction made the layer's measured error worse: put the layer
                        # back and simulate it again (deterministic: its outputs, and errors,
                        # are those measured before the correction).
                        self.revert(graph, seg)
                        runner.refresh(seg)
                        for b in local:
                            runner.keep(seg, b, runner.batch(seg, b)[0])
                        layer.update(changed="", reverted=where, rejected=errors["after"], after=errors["before"])
                        if "by_timesteps" in errors:
                            layer["by_timesteps"] = {t: {**row, "after": row["before"]} for t, row in errors["by_timesteps"].items()}
                    runner.done(seg)
                    layers.append(layer)
            reverted = [layer["layer"] for layer in layers if "reverted" in layer]
            if reverted:
                shown = ", ".join(reverted[:4]) + (f" and {len(reverted) - 4} more" if len(reverted) > 4 else "")
                ctx.notices.append(
                    f"{self.name} kept the previous parameters of {len(reverted)} layer(s) whose correction raised the simulated "
                    f"SNN - ANN error on the calibration samples: {shown} (the report's {self.name} record lists before, rejected and after)"
                )
            record = {"timesteps": T, "samples": int(len(x)), "seconds": round(time.perf_counter() - t0, 3), "layers": layers}
            if len(Ts) > 1:
                record["calibrated_for"] = list(Ts)
            if group.distributed:
                record["ranks"] = {"world": group.world, "bytes_reduced_per_rank": group.bytes_reduced - sent}
            if store is not None:
                record["store"] = {"peak_in_memory_bytes": store.peak_in_memory, "spilled_bytes": store.spilled}
            else:
                record["store"] = "recompute"
        ctx.record(self.name, record)
        return True

    # hooks -------------------------------------------------------------
    def begin(self, seg: _Segment, runner: LayerwiseRunner) -> None:
        """Start the statistics of one layer."""
        self._acc: dict[int, ExactSum] = {}

    def observe(self, seg: _Segment, b: int, rs: list[torch.Tensor], a: torch.Tensor, env: dict[int, Timed]) -> None:  # pragma: no cover - abstract
        """Batch ``b``: SNN time-averaged outputs ``rs`` (one per T of ``self._Ts``), ANN
        target ``a``, the segment's values."""
        raise NotImplementedError

    def update(self, graph: Graph, seg: _Segment, ctx: PassContext) -> str:  # pragma: no cover - abstract
        """Apply the correction; return the name(s) of what changed."""
        raise NotImplementedError

    def keeps(self, errors: dict[str, Any]) -> bool:
        """Whether the layer's correction stays, given its SNN − ANN error ``before`` and
        ``after`` it on the calibration samples (:func:`_error_summaries`). Every correction
        stays unless a pass says otherwise."""
        return True

    def revert(self, graph: Graph, seg: _Segment) -> None:  # pragma: no cover - only for passes whose keeps() can refuse
        """Undo the last :meth:`update`."""
        raise NotImplementedError

    def _add_sum(self, s: torch.Tensor, n: int, k: int = 0) -> None:
        """Accumulate statistic ``s`` (of ``n`` elements) for the ``k``-th listed T."""
        if k not in self._acc:
            self._acc[k] = ExactSum(tuple(s.shape))
        self._acc[k].add(s, n)

    def _mean(self, ctx: PassContext, shape: tuple[int, ...], k: int = 0) -> np.ndarray:
        """The mean of what :meth:`_add_sum` accumulated for the ``k``-th T, over all ranks
        (``shape``: the statistic's shape, for a rank that saw no batch)."""
        acc = self._acc.get(k) or ExactSum(shape)
        acc.reduce(ctx.group)
        return acc.value() / max(1, acc.count)

    def _means(self, ctx: PassContext, shape: tuple[int, ...]) -> list[np.ndarray]:
        """:meth:`_mean` for every listed T, in order."""
        return [self._mean(ctx, shape, k) for k in range(len(self._Ts))]


@register_pass
class CalibrateBias(_Calibration):
    """After calibrate-bias, each spiking layer's (and, with output=true, each readout's)
    mean SNN − ANN error per channel, measured on the calibration samples at the
    conversion's T with all earlier layers calibrated (calibrated for several T: the mean
    of the per-T errors), has been subtracted from its input current. The graph stays in
    the SNN stage."""

    name = "calibrate-bias"

    @dataclass
    class Options:
        samples: int = 256
        output: bool = True
        layers: str = ""  # only these layers (names separated by ';'; empty: every layer)

    def observe(self, seg, b, rs, a, env) -> None:
        for k, r in enumerate(rs):
            self._add_sum(*_per_channel_sum(r - a), k)

    def update(self, graph, seg, ctx) -> str:
        err = mean_correction(self._means(ctx, seg.node.output.shape[:1]))
        return shift_input_current(graph, seg.node, -err, name="calib_bias").name


@register_pass
class CalibratePotential(_Calibration):
    """After calibrate-potential, each spiking neuron's initial potential has been raised
    by T times its mean ANN − SNN output error on the calibration samples (per channel, or
    per neuron with granularity=neuron), with all earlier layers calibrated (calibrated for
    several T: the mean of the per-T corrections T·d_T weighted by T⁻², the least-squares
    compromise); readouts (output=true) get the bias correction instead. The graph stays
    in the SNN stage."""

    name = "calibrate-potential"

    @dataclass
    class Options:
        samples: int = 1024
        output: bool = True
        layers: str = ""  # only these layers (names separated by ';'; empty: every layer)
        granularity: str = choice("channel", "neuron", "channel")

    def _per_channel(self, seg: _Segment) -> bool:
        return seg.node.spec.has("readout") or self.options.granularity == "channel"

    def observe(self, seg, b, rs, a, env) -> None:
        for k, r in enumerate(rs):
            if self._per_channel(seg):
                self._add_sum(*_per_channel_sum(a - r), k)
            else:
                self._add_sum((a - r).double().sum(0), r.shape[0], k)

    def update(self, graph, seg, ctx) -> str:
        node = seg.node
        errs = self._means(ctx, node.output.shape[:1] if self._per_channel(seg) else node.output.shape)
        if node.spec.has("readout"):
            return shift_input_current(graph, node, mean_correction(errs), name="calib_bias").name
        if self.options.granularity == "channel":
            errs = [err.reshape(channel_shape(node.output)) for err in errs]
        node.set_param("v_init", node.params["v_init"] + potential_correction(self._Ts, errs))
        return node.name


@register_pass
class CalibrateWeights(_Calibration):
    """After calibrate-weights, the weights of each layer's conv / linear / transposed conv
    minimise, by Adam with a cosine schedule and a straight-through floor, the squared
    error between the ANN activation and the IF neuron's response to the layer's
    time-averaged spiking input (the calibration samples at the conversion's T, earlier
    layers calibrated; calibrated for several T: the mean of that error over the T, each
    T with its own time-averaged input). Biases, thresholds and potentials are unchanged. The graph stays
    in the SNN stage. A layer whose fitted weights raise its simulated error (RMS of
    SNN − ANN, measured after the fit as before it) by more than ``guard_tolerance`` keeps
    its old weights when ``guard=true`` (off by default: every fit is kept); the record lists
    it as ``reverted``, with the ``rejected`` error."""

    name = "calibrate-weights"

    calibrates_bipolar = False

    @dataclass
    class Options:
        samples: int = 1024
        output: bool = True
        layers: str = ""  # only these layers (names separated by ';'; empty: every layer)
        iterations: int = 300
        batch: int = 64
        lr: float = 1e-3
        # guard: keep a layer's old weights when the fitted ones make its simulated error
        # (RMS of SNN − ANN on the calibration samples) more than guard_tolerance larger: the
        # fit's constant-current model can be wrong for the spiking layer (Br35H ResNet-18 at
        # T = 32: two layer4 errors grew 1.6× and 2.1×). Growth within the tolerance is the
        # fit's noise (Fashion-MNIST ResNet and VGG-BN at T = 8: one layer each, +0.2 and
        # +0.4 %). Off by default: on the Br35H ResNet-18 (calibrated for T = 32, all 444 test
        # images) it gained 2.3 and 1.1 points at T = 8 and 16 but lost 1.6 at T = 32, the T
        # the network was calibrated for (calibrate-potential had offset the worse layers).
        guard: bool = False
        guard_tolerance: float = 0.05

    def begin(self, seg: _Segment, runner: LayerwiseRunner) -> None:
        self._runner = runner
        self._store = runner.store if runner.store is not None else SpillStore(0)  # recompute mode: spill to disk

    def observe(self, seg, b, rs, a, env) -> None:
        for v in seg.boundary:
            value = env[id(v)]
            for key, avg in zip(self._fit_keys(v, value.static), averages(value, self._Ts)):
                self._store.put(("fit", key), b, avg.cpu().numpy())
        self._store.put(("fit", "target"), b, a.cpu().numpy())

    def _fit_keys(self, v: Value, static: bool | None = None) -> list[Any]:
        """The store keys of value ``v``'s time averages, one per listed T (a static value,
        or a single T: one key, ``id(v)``, shared by every T)."""
        if static is not None:
            self._static[id(v)] = static
        if len(self._Ts) == 1 or self._static.get(id(v), False):
            return [id(v)] * len(self._Ts)
        return [(id(v), t) for t in self._Ts]

    def _rows(self, key: Any, samples: list[int]) -> torch.Tensor:
        """The stored rows of the given (global) sample indices, in that order."""
        bs = self._runner.batch_size
        return torch.from_numpy(np.stack([self._store.get(("fit", key), i // bs)[i % bs] for i in samples]))

    def check(self, graph: Graph) -> None:
        super().check(graph)
        for n in graph.having("neuron"):
            if n.attr("reset") != "subtract":
                raise PassError(f"{self.name}: neuron {n.name!r} resets to zero; the fitted quantiser models soft reset (insert-if reset=subtract)")

    def update(self, graph, seg, ctx) -> str:
        """Adam on the squared error. Each step's minibatch comes from :class:`FitDraw`
        (one seeded generator that every rank shares; on several ranks a fixed share of
        each rank's own samples); each rank computes the loss terms of its share, and the
        gradients are summed over the ranks, so all ranks take the same steps."""
        o, runner, group = self.options, self._runner, ctx.group
        try:
            train = [n for n in seg.nodes if n.spec.has("synaptic") and id(n) not in self._trained]
            if not train or o.iterations <= 0:
                return ""
            # The segment's stateless nodes on time-averaged (static) values, with the
            # weights being fitted put in place of the nodes' own parameters.
            ex = Executor(graph, runner.device)
            weights = []
            for n in train:
                w = ex.param(n, "weight").clone().requires_grad_(True)
                ex.params(n)["weight"] = w
                weights.append(w)
            # Hardware-aware (the quantize pass): fit through the target's weight grid, a
            # straight-through estimator (the forward pass sees the weights on the grid).
            grids = ctx.quantizer.grid(graph, [seg.node.name]) if ctx.quantizer is not None and hasattr(ctx.quantizer, "grid") else {}
            grid = [_weight_grid(grids.get(n.name), runner.device) for n in train]
            node = seg.node
            neuron = node.spec.has("neuron")
            if neuron:
                theta, v0 = ex.param(node, "threshold"), ex.param(node, "v_init")
            gen = torch.Generator().manual_seed(ctx.seed)
            opt = torch.optim.Adam(weights, lr=o.lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=o.iterations)
            draw = FitDraw(gen, runner.samples, min(o.batch, runner.samples), runner.rank_samples(), group.rank)
            denominator = draw.denominator * int(np.prod(node.output.shape))
            Ts = self._Ts
            heap = HeapBound()
            with torch.enable_grad():
                for _ in range(o.iterations):
                    heap.step()
                    held = draw.next()
                    opt.zero_grad()
                    if held:
                        target = self._rows("target", held).to(runner.device)
                        rows: dict[Any, torch.Tensor] = {}
                        losses = []
                        for n, w, gr in zip(train, weights, grid):
                            if gr is not None:
                                ex.params(n)["weight"] = _on_grid(w, gr)
                        for k, t in enumerate(Ts):
                            env = {}
                            for v in seg.boundary:
                                key = self._fit_keys(v)[k]
                                if key not in rows:
                                    rows[key] = self._rows(key, held).to(runner.device)
                                env[id(v)] = Timed(rows[key], static=True)
                            ex.walk(seg.nodes, env, free=False)
                            z = env[id(node.inputs[0])].data
                            y = if_neuron_rate(z, theta, v0, t, straight_through=True, max_spikes=int(node.attr("max_spikes"))) if neuron else z
                            losses.append(torch.sum((y - target) ** 2) / denominator)
                        loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
                        loss.backward()
                    for w in weights:
                        if w.grad is None:
                            w.grad = torch.zeros_like(w)
                        if group.distributed:
                            w.grad = group.all_reduce(w.grad)
                    opt.step()
                    sched.step()
            self._saved = [(n, n.params["weight"]) for n in train]
            for n, w, gr in zip(train, weights, grid):
                w = w.detach()
                if gr is not None:  # within the grid's range, so the exponent (and the fitted grid) stays
                    w = torch.where(gr[0] > 0, torch.clamp(w, -gr[2] * gr[0], gr[2] * gr[0]), w)
                n.set_param("weight", group.broadcast(w).cpu().numpy())
                self._trained.add(id(n))
            return ",".join(n.name for n in train)
        finally:
            for k in {*(key for v in seg.boundary for key in self._fit_keys(v)), "target"}:
                self._store.drop(("fit", k))
            if self._store is not runner.store:
                self._store.close()

    def keeps(self, errors: dict[str, Any]) -> bool:
        o = self.options
        return not o.guard or errors["after"]["rms"] <= errors["before"]["rms"] * (1 + o.guard_tolerance)

    def revert(self, graph: Graph, seg: _Segment) -> None:
        for n, w in self._saved:
            n.set_param("weight", w)

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        self._trained: set[int] = set()  # a node shared by two layers is fitted once
        self._saved: list[tuple[Node, np.ndarray]] = []
        self._static: dict[int, bool] = {}  # boundary value id -> static (one time average for every T)
        if 1 in ctx.calibrated_for:
            ctx.notices.append(
                "calibrate-weights at T=1 fits weights through a one-level quantiser, which was measured to hurt "
                "(Fashion-MNIST VGG-BN: 29.70 % against 72.85 % with light calibration, benchmarks/low_latency); "
                "at T=1 prefer --calibration light, or a burst neuron (--neuron burst:4: 90.15 %)"
            )
        return super().run(graph, ctx)
