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

All three calibrate for the T of the conversion (``--timesteps``). The SNN is simulated
one layer at a time over all calibration samples: the spike trains between layers are
kept bit-packed (T·N bits per neuron), so each calibration pass costs two simulations
of the network, independent of its depth; the ANN up to each layer is re-evaluated per
batch for that layer's targets (cheap next to the SNN, but it grows with depth). Statistics
are accumulated batch by batch. Weight calibration also keeps, for the layer being
calibrated, the time-averaged inputs and the ANN targets of all samples (float32).

Each pass records, per layer, the mean and RMS of SNN − ANN output before and after
(``provenance["records"]``, shown by ``snnc convert``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from snnc.errors import PassError
from snnc.ir.executor import Executor, Interpreter, Timed
from snnc.ir.graph import Graph, Node, Value
from snnc.ir.ops import if_neuron_rate
from snnc.passes.balance import channels_last
from snnc.passes.base import Pass, PassContext, choice, register_pass
from snnc.passes.current import channel_shape, shift_input_current
from snnc.simulator.reference import ReferenceSimulator, default_batch_size, keep_freed_memory


# ------------------------------------------------------------------ storage
class _Spikes:
    """A [T, B, ...] value that is ``scale`` times a binary tensor, stored bit-packed."""

    __slots__ = ("bits", "shape", "scale")

    def __init__(self, data: torch.Tensor, scale: torch.Tensor):
        self.shape = tuple(data.shape)
        self.scale = scale
        self.bits = np.packbits((data != 0).numpy().reshape(-1))

    def unpack(self) -> torch.Tensor:
        n = int(np.prod(self.shape))
        mask = torch.from_numpy(np.unpackbits(self.bits, count=n).reshape(self.shape))
        return mask.to(torch.float32) * self.scale


def _pack(value: Timed, scale: torch.Tensor | None) -> Any:
    """Keep ``value`` compactly: bit-packed when it is ``scale`` times a spike train."""
    if value.static or scale is None:
        return value
    try:
        packed = _Spikes(value.data, scale)
        exact = torch.equal(packed.unpack(), value.data)
    except RuntimeError:  # scale does not broadcast to the value
        return value
    return packed if exact else value


def _unpack(stored: Any) -> Timed:
    if isinstance(stored, _Spikes):
        return Timed(stored.unpack(), static=False)
    return stored


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

    ``batch(seg, b)`` simulates one segment on one batch of samples; ``keep(seg, b, out)``
    stores its output for the later segments and ``done(seg)`` frees what no later segment
    reads. Parameters (and nodes) changed by a calibration are picked up by ``refresh``.
    """

    def __init__(self, graph: Graph, ann: Graph, ann_names: dict[str, str], x: np.ndarray, T: int, batch_size: int | None = None):
        self.graph = graph
        self.T = T
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.sim = ReferenceSimulator(graph, timesteps=T)
        keep_freed_memory()
        bs = batch_size or default_batch_size(T, graph)
        self.batches = [slice(lo, min(len(x), lo + bs)) for lo in range(0, len(x), bs)]
        self.segments = segments(graph)
        self._store: dict[int, list[Any]] = {}
        self._scale: dict[int, torch.Tensor | None] = {}
        self._remaining = {id(v): 0 for v in graph.values()}
        for seg in self.segments:
            for v in seg.boundary:
                self._remaining[id(v)] += 1
        self.ann = ann
        self._ann_interp = Interpreter(ann)
        self._ann_names = ann_names
        self._ann_outputs = {id(v): i for i, v in enumerate(graph.outputs)}

    # ------------------------------------------------------------ helpers
    def refresh(self, seg: _Segment) -> None:
        """Re-read the segment's parameters and nodes (a calibration may have inserted one)."""
        seg.nodes = _segment(self.graph, seg.node).nodes
        for n in [*seg.nodes, seg.node]:
            self.sim.refresh(n)

    def _boundary(self, seg: _Segment, b: int) -> dict[int, Timed]:
        env = {}
        for v in seg.boundary:
            if v.producer is None:
                env[id(v)] = self.sim.encode(self.x[self.batches[b]], self.T)
            else:
                env[id(v)] = _unpack(self._store[id(v)][b])
        return env

    def current(self, seg: _Segment, env: dict[int, Timed]) -> Timed:
        """The segment's input current from its boundary values (all T steps)."""
        self.sim.walk(seg.nodes, env, free=False)
        return env[id(seg.node.inputs[0])]

    def ann_target(self, seg: _Segment, b: int) -> torch.Tensor:
        """The ANN's output of the node ``seg.node`` replaced (or the graph output it reads)."""
        xb = self.x[self.batches[b]]
        if seg.node.spec.has("readout"):
            return self._ann_interp.run(xb)[self._ann_outputs[id(seg.node.output)]]
        name = self._ann_names.get(seg.node.name)
        if name is None:
            raise PassError(f"calibration: no ANN counterpart recorded for {seg.node.name!r}; run the calibration passes after insert-if")
        target = self.ann.node(name)
        got: list[torch.Tensor] = []
        self._ann_interp.run(xb, observe=lambda n, out: got.append(out), watch=[target], stop_after=target)
        return got[0]

    def batch(self, seg: _Segment, b: int) -> tuple[Timed, dict[int, Timed]]:
        """Simulate the segment on batch ``b``: its output (for a readout, its input current,
        whose time average is the readout's output) and the values it computed from (by
        value id)."""
        env = self._boundary(seg, b)
        z = self.current(seg, env)
        if seg.node.spec.has("readout"):
            # A readout's output after T steps is the time average of its input current:
            # hand back the current, whose average the passes take.
            return z, env
        return self.sim.run_node(seg.node, [z]), env

    def keep(self, seg: _Segment, b: int, out: Timed) -> None:
        """Store the segment's output for batch ``b`` (bit-packed spikes where possible), so
        that memory holds one dense batch at a time."""
        node = seg.node
        if node.spec.has("readout"):
            return
        if b == 0:
            scale = None
            if node.spec.has("neuron"):
                scale = self.sim.param(node, "threshold") if node.attr("spike_scale") == "threshold" else torch.ones(())
            elif node.spec.has("preserves_amplitude"):  # spiking max pooling passes its input's spikes on
                scale = self._scale.get(id(node.inputs[0]))
            self._scale[id(node.output)] = scale
            self._store[id(node.output)] = []
        self._store[id(node.output)].append(_pack(out, self._scale[id(node.output)]))

    def done(self, seg: _Segment) -> None:
        """The segment's outputs are all kept: free the inputs no later segment reads."""
        for v in seg.boundary:
            self._remaining[id(v)] -= 1
            if self._remaining[id(v)] == 0:
                self._store.pop(id(v), None)


# ------------------------------------------------------------ statistics
class ErrorStats:
    """Streaming mean and RMS of SNN − ANN over every element."""

    def __init__(self):
        self.n = 0
        self.s = 0.0
        self.s2 = 0.0

    def add(self, diff: torch.Tensor) -> None:
        d = diff.double()
        self.n += d.numel()
        self.s += float(d.sum())
        self.s2 += float((d * d).sum())

    def summary(self) -> dict[str, float]:
        n = max(1, self.n)
        return {"mean": self.s / n, "rms": math.sqrt(self.s2 / n)}


def _per_channel_sum(d: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum over batch and positions per channel (axis 1) and the count per channel."""
    flat = channels_last(d)
    return flat.double().sum(1), flat.shape[1]


# ----------------------------------------------------------------- passes
class _Calibration(Pass):
    """Shared driver: walks the segments in forward order, calibrating the target layers."""

    requires_stage = "snn"

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
            return True
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
        T = ctx.timesteps
        runner = LayerwiseRunner(graph, ctx.ann_reference, ctx.ann_names, x, T)
        nb = len(runner.batches)
        work = sum(2 if self.targets(s) else 1 for s in runner.segments) * nb
        layers = []
        t0 = time.perf_counter()
        with ctx.progress(f"{self.name} (T={T})", work) as task:
            for seg in runner.segments:
                if not self.targets(seg):
                    for b in range(nb):
                        runner.keep(seg, b, runner.batch(seg, b)[0])
                        task.advance(1)
                    runner.done(seg)
                    continue
                before = ErrorStats()
                self.begin(seg)
                for b in range(nb):
                    out, env = runner.batch(seg, b)
                    a = runner.ann_target(seg, b)
                    r = out.mean()
                    before.add(r - a)
                    self.observe(seg, r, a, env)
                    task.advance(1)
                where = self.update(graph, seg, ctx)
                runner.refresh(seg)
                after = ErrorStats()
                for b in range(nb):
                    out, _ = runner.batch(seg, b)
                    after.add(out.mean() - runner.ann_target(seg, b))
                    runner.keep(seg, b, out)
                    task.advance(1)
                runner.done(seg)
                layers.append({"layer": seg.node.name, "changed": where, "before": before.summary(), "after": after.summary()})
        ctx.record(
            self.name,
            {"timesteps": T, "samples": int(len(x)), "seconds": round(time.perf_counter() - t0, 3), "layers": layers},
        )
        return True

    # hooks -------------------------------------------------------------
    def begin(self, seg: _Segment) -> None:
        """Start the statistics of one layer."""
        self._sum: torch.Tensor | None = None
        self._count = 0

    def observe(self, seg: _Segment, r: torch.Tensor, a: torch.Tensor, env: dict[int, Timed]) -> None:  # pragma: no cover - abstract
        """One batch: SNN time-averaged output ``r``, ANN target ``a``, the segment's values."""
        raise NotImplementedError

    def update(self, graph: Graph, seg: _Segment, ctx: PassContext) -> str:  # pragma: no cover - abstract
        """Apply the correction; return the name(s) of what changed."""
        raise NotImplementedError

    def _add_sum(self, s: torch.Tensor, n: int) -> None:
        self._sum = s if self._sum is None else self._sum + s
        self._count += n

    def _mean(self) -> np.ndarray:
        return (self._sum / max(1, self._count)).numpy()


@register_pass
class CalibrateBias(_Calibration):
    """After calibrate-bias, each spiking layer's (and, with output=true, each readout's)
    mean SNN − ANN error per channel, measured on the calibration samples at the
    conversion's T with all earlier layers calibrated, has been subtracted from its input
    current. The graph stays in the SNN stage."""

    name = "calibrate-bias"

    @dataclass
    class Options:
        samples: int = 256
        output: bool = True
        layers: str = ""  # only these layers (names separated by ';'; empty: every layer)

    def observe(self, seg, r, a, env) -> None:
        self._add_sum(*_per_channel_sum(r - a))

    def update(self, graph, seg, ctx) -> str:
        return shift_input_current(graph, seg.node, -self._mean(), name="calib_bias").name


@register_pass
class CalibratePotential(_Calibration):
    """After calibrate-potential, each spiking neuron's initial potential has been raised
    by T times its mean ANN − SNN output error on the calibration samples (per channel, or
    per neuron with granularity=neuron), with all earlier layers calibrated; readouts
    (output=true) get the bias correction instead. The graph stays in the SNN stage."""

    name = "calibrate-potential"

    @dataclass
    class Options:
        samples: int = 1024
        output: bool = True
        layers: str = ""  # only these layers (names separated by ';'; empty: every layer)
        granularity: str = choice("channel", "neuron", "channel")

    def observe(self, seg, r, a, env) -> None:
        if seg.node.spec.has("readout") or self.options.granularity == "channel":
            self._add_sum(*_per_channel_sum(a - r))
        else:
            self._add_sum((a - r).double().sum(0), r.shape[0])

    def update(self, graph, seg, ctx) -> str:
        err = self._mean()
        node = seg.node
        if node.spec.has("readout"):
            return shift_input_current(graph, node, err, name="calib_bias").name
        if self.options.granularity == "channel":
            err = err.reshape(channel_shape(node.output))
        node.set_param("v_init", node.params["v_init"] + ctx.timesteps * err)
        return node.name


@register_pass
class CalibrateWeights(_Calibration):
    """After calibrate-weights, the weights of each layer's conv / linear / transposed conv
    minimise, by Adam with a cosine schedule and a straight-through floor, the squared
    error between the ANN activation and the IF neuron's response to the layer's
    time-averaged spiking input (the calibration samples at the conversion's T, earlier
    layers calibrated). Biases, thresholds and potentials are unchanged. The graph stays
    in the SNN stage."""

    name = "calibrate-weights"

    @dataclass
    class Options:
        samples: int = 1024
        output: bool = True
        layers: str = ""  # only these layers (names separated by ';'; empty: every layer)
        iterations: int = 300
        batch: int = 64
        lr: float = 1e-3

    def begin(self, seg: _Segment) -> None:
        self._inputs: list[dict[int, torch.Tensor]] = []
        self._targets: list[torch.Tensor] = []

    def observe(self, seg, r, a, env) -> None:
        self._inputs.append({id(v): env[id(v)].mean() for v in seg.boundary})
        self._targets.append(a)

    def check(self, graph: Graph) -> None:
        super().check(graph)
        for n in graph.having("neuron"):
            if n.attr("reset") != "subtract":
                raise PassError(f"{self.name}: neuron {n.name!r} resets to zero; the fitted quantiser models soft reset (insert-if reset=subtract)")

    def update(self, graph, seg, ctx) -> str:
        o = self.options
        train = [n for n in seg.nodes if n.spec.has("synaptic") and id(n) not in self._trained]
        if not train or o.iterations <= 0:
            return ""
        xs = {k: torch.cat([d[k] for d in self._inputs]) for k in self._inputs[0]}
        target = torch.cat(self._targets)
        self._inputs, self._targets = [], []
        # The segment's stateless nodes on time-averaged (static) values, with the weights
        # being fitted put in place of the nodes' own parameters.
        ex = Executor(graph)
        weights = []
        for n in train:
            w = ex.param(n, "weight").clone().requires_grad_(True)
            ex.params(n)["weight"] = w
            weights.append(w)
        node = seg.node
        neuron = node.spec.has("neuron")
        if neuron:
            theta, v0 = ex.param(node, "threshold"), ex.param(node, "v_init")
        gen = torch.Generator().manual_seed(ctx.seed)
        opt = torch.optim.Adam(weights, lr=o.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=o.iterations)
        n_samples = len(target)
        with torch.enable_grad():
            for _ in range(o.iterations):
                idx = torch.randint(0, n_samples, (min(o.batch, n_samples),), generator=gen)
                env = {k: Timed(v[idx], static=True) for k, v in xs.items()}
                ex.walk(seg.nodes, env, free=False)
                z = env[id(node.inputs[0])].data
                y = if_neuron_rate(z, theta, v0, ctx.timesteps, straight_through=True) if neuron else z
                loss = torch.mean((y - target[idx]) ** 2)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        for n, w in zip(train, weights):
            n.set_param("weight", w.detach().numpy())
            self._trained.add(id(n))
        return ",".join(n.name for n in train)

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        self._trained: set[int] = set()  # a node shared by two layers is fitted once
        return super().run(graph, ctx)
