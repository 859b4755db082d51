"""The reference simulator: the semantic ground truth for every backend.

It implements exactly the discrete-time equations in the op docstrings of
:mod:`snnc.ir.ops`. Execution is layer by layer: a value that varies over time is held as
one ``[T, B, ...]`` tensor, a stateless (linear) op runs on all T steps at once as a
``[T*B, ...]`` batch, and only the neurons loop over time. Values that do not vary over
time (the analog input and whatever is computed from it alone under direct coding) are
computed once and broadcast. Results are deterministic: no randomness except the
seeded Poisson encoder.

Because every op is causal and the direct-coded input is constant, the outputs after
``t`` steps of a run of ``T`` steps are exactly those of a run of ``t`` steps: one run to
the largest requested T yields every smaller T.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from snnc.errors import DataError
from snnc.ir.graph import Graph, Node
from snnc.ir.interpreter import check_input, iter_batches, last_uses, param_tensors
from snnc.ir.ops import get_op, readout_sequence, spiking_max_pool_sequence
from snnc.ir.verify import verify

ENCODINGS = ("direct", "poisson")


@dataclass
class SimResult:
    """Time-averaged graph outputs for each requested T, and spike statistics."""

    outputs: dict[int, list[np.ndarray]]  # T -> one array per graph output, [N, ...]
    spike_rates: dict[str, float] = field(default_factory=dict)  # if_neuron name -> spikes / neuron / step (at max T)
    samples: int = 0
    details: dict = field(default_factory=dict)  # backend-specific facts (JSON-able), e.g. a deployment report

    def output(self, timesteps: int, index: int = 0) -> np.ndarray:
        return self.outputs[timesteps][index]


class Timed:
    """A value over time: ``data`` is [T, B, ...] or, when ``static``, [B, ...] for every step."""

    __slots__ = ("data", "static")

    def __init__(self, data: torch.Tensor, static: bool):
        self.data = data
        self.static = static

    def dense(self, T: int) -> torch.Tensor:
        if self.static:
            return self.data.unsqueeze(0).expand(T, *self.data.shape)
        return self.data


class ReferenceSimulator:
    """Simulates an SNN-stage graph. Construct once, call :meth:`run` per batch."""

    def __init__(self, graph: Graph, device: str | torch.device = "cpu"):
        verify(graph, "snn")
        self.graph = graph
        self.device = torch.device(device)
        self._params = {id(n): param_tensors(n, self.device) for n in graph.nodes}
        self._last_use = last_uses(graph)

    @torch.no_grad()
    def run(
        self,
        x: torch.Tensor,
        timesteps: Sequence[int],
        *,
        encoding: str = "direct",
        generator: torch.Generator | None = None,
        spike_counts: dict[str, float] | None = None,
    ) -> dict[int, list[torch.Tensor]]:
        """Simulate one batch for max(timesteps) steps; return the time-averaged outputs
        after each requested number of steps."""
        steps = check_timesteps(timesteps)
        T = steps[-1]
        env: dict[int, Timed] = {id(self.graph.inputs[0]): self.encode(x, T, encoding, generator)}
        results: dict[int, list[torch.Tensor]] = {t: [] for t in steps}
        readouts: dict[int, dict[int, torch.Tensor]] = {}
        for i, node in enumerate(self.graph.nodes):
            ins = [env[id(v)] for v in node.inputs]
            if node.op == "readout":
                readouts[id(node.output)] = _readout(ins[0], steps)
            out = self.step(node, ins, T, spike_counts)
            env[id(node.output)] = out
            for v in node.inputs:
                if self._last_use.get(id(v)) == i:
                    env.pop(id(v), None)
        for v in self.graph.outputs:
            per_t = readouts[id(v)]
            for t in steps:
                results[t].append(per_t[t])
        return results

    def step(self, node: Node, ins: list[Timed], T: int, spike_counts: dict[str, float] | None = None) -> Timed:
        """Execute one node on its inputs' values over all T steps (a readout passes its
        input through; the caller averages it)."""
        if node.op == "readout":
            return ins[0]
        if node.op == "if_neuron":
            return self._if_neuron(node, ins[0], T, spike_counts)
        if node.op == "spiking_max_pool":
            return _spiking_max_pool(node, ins[0], T)
        return self._stateless(node, ins, T)

    def refresh(self, node: Node) -> None:
        """Re-read ``node``'s parameters after a pass changed them."""
        self._params[id(node)] = param_tensors(node, self.device)

    def param(self, node: Node, key: str) -> torch.Tensor:
        """``node``'s parameter as the tensor the simulation uses."""
        return self._params[id(node)][key]

    def encode(self, x: torch.Tensor, T: int, encoding: str = "direct", generator: torch.Generator | None = None) -> Timed:
        """The graph input over T steps (see :func:`encode`)."""
        return encode(x.to(self.device), T, encoding, generator)

    # ----------------------------------------------------------------- ops

    def _stateless(self, node: Node, ins: list[Timed], T: int) -> Timed:
        compute = node.spec.compute
        params = self._params[id(node)]
        if all(v.static for v in ins):
            return Timed(compute([v.data for v in ins], node, params), static=True)
        flat = [v.dense(T).reshape(-1, *v.data.shape[(0 if v.static else 1) + 1 :]) for v in ins]
        y = compute(flat, node, params)
        return Timed(y.reshape(T, -1, *y.shape[1:]), static=False)

    def _if_neuron(self, node: Node, z: Timed, T: int, spike_counts: dict[str, float] | None) -> Timed:
        p = self._params[id(node)]
        theta, v0 = p["threshold"], p["v_init"]
        shape = z.data.shape if z.static else z.data.shape[1:]  # [B, *neuron shape]
        # Flatten every neuron of the batch into one axis and run the whole T loop on
        # chunks small enough to stay in cache: v never leaves it between steps.
        th = theta.expand(shape).reshape(-1)
        v_all = (torch.zeros(shape, device=self.device) + v0).reshape(-1)
        zf = z.data.reshape(-1) if z.static else z.data.reshape(T, -1)
        spikes = torch.empty((T, th.numel()), device=self.device)
        chunk = _IF_CHUNK if self.device.type == "cpu" else th.numel()
        subtract = node.attr("reset") == "subtract"
        for lo in range(0, th.numel(), chunk):
            hi = min(th.numel(), lo + chunk)
            _integrate_and_fire(zf[lo:hi] if z.static else zf[:, lo:hi], v_all[lo:hi], th[lo:hi], spikes[:, lo:hi], subtract, z.static)
        if spike_counts is not None:
            spike_counts[node.name] = spike_counts.get(node.name, 0.0) + float(spikes.sum(dtype=torch.float64))
        out = spikes.reshape(T, *shape)
        if node.attr("spike_scale") == "threshold":
            out.mul_(theta)
        return Timed(out, static=False)


def check_timesteps(timesteps: Sequence[int]) -> list[int]:
    """The sorted distinct T values; a DataError unless they are positive integers."""
    steps = sorted(set(int(t) for t in timesteps))
    if not steps or steps[0] < 1:
        raise DataError(f"timesteps must be positive integers, got {list(timesteps)}")
    return steps


def encode(x: torch.Tensor, T: int, encoding: str = "direct", generator: torch.Generator | None = None) -> Timed:
    """The graph input over T steps, on ``x``'s device: the analog input every step
    (direct; static) or seeded Poisson spikes drawn from ``generator``. Every backend
    encodes through this function, so a seed gives every backend the same spikes."""
    x = x.to(torch.float32)
    if encoding == "direct":
        return Timed(x, static=True)
    if encoding == "poisson":
        p = x.abs().clamp(max=1.0)
        rnd = torch.rand((T, *x.shape), generator=generator, device=x.device)
        return Timed((rnd < p).float() * torch.sign(x), static=False)
    raise DataError(f"unknown input encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")


_IF_CHUNK = 1 << 15  # neurons per chunk on CPU: v, θ and one step's z stay in L2


def _integrate_and_fire(z: torch.Tensor, v: torch.Tensor, theta: torch.Tensor, out: torch.Tensor, subtract: bool, static: bool) -> None:
    """The if_neuron equations for one chunk of neurons, all T steps; updates v in place
    and writes the binary spikes into ``out`` ([T, n])."""
    spiked = torch.empty(v.shape, dtype=torch.bool, device=v.device)
    for t in range(out.shape[0]):
        v.add_(z if static else z[t])
        torch.ge(v, theta, out=spiked)
        out[t].copy_(spiked)
        if subtract:
            v.addcmul_(out[t], theta, value=-1.0)
        else:
            v.masked_fill_(spiked, 0.0)


def _readout(x: Timed, steps: list[int]) -> dict[int, torch.Tensor]:
    if x.static:
        return {t: x.data for t in steps}
    means = readout_sequence(x.data)
    return {t: means[t - 1] for t in steps}


def _spiking_max_pool(node: Node, x: Timed, T: int) -> Timed:
    """Gate each window by the running sum of its inputs (see the op's docstring)."""
    if x.static:  # a constant input: the gate picks the plain maximum
        return Timed(get_op("max_pool").compute([x.data], node, {}), static=True)
    attrs = {k: node.attr(k) for k in ("kernel", "strides", "pads", "dilations", "ceil_mode")}
    return Timed(spiking_max_pool_sequence(x.data, **attrs), static=False)


def simulate(
    graph: Graph,
    x: np.ndarray,
    timesteps: int | Sequence[int],
    *,
    batch_size: int | None = None,
    device: str = "cpu",
    encoding: str = "direct",
    seed: int = 0,
    progress=None,
) -> SimResult:
    """Simulate ``graph`` on every sample of ``x``; see :class:`SimResult`."""
    steps = [timesteps] if isinstance(timesteps, int) else list(timesteps)
    check_input(graph, x)
    sim = ReferenceSimulator(graph, device)
    T = max(steps)
    if batch_size is None:
        batch_size = default_batch_size(T, graph, str(torch.device(device).type))
    if torch.device(device).type == "cpu":
        keep_freed_memory()
    gen = torch.Generator(device=device).manual_seed(seed)
    counts: dict[str, float] = {}
    outs: dict[int, list[list[np.ndarray]]] = {t: [[] for _ in graph.outputs] for t in steps}
    task = progress(f"simulating T={T}", len(x)) if progress else None
    for xb in iter_batches(x, batch_size):
        res = sim.run(xb, steps, encoding=encoding, generator=gen, spike_counts=counts)
        for t in steps:
            for acc, y in zip(outs[t], res[t]):
                acc.append(y.cpu().numpy())
        if task:
            task.advance(len(xb))
    return SimResult({t: [np.concatenate(a, 0) for a in outs[t]] for t in steps}, spike_rates(graph, counts, len(x), T), len(x))


def spike_rates(graph: Graph, counts: dict[str, float], samples: int, timesteps: int) -> dict[str, float]:
    """Spikes per neuron per step for every ``if_neuron`` of ``graph``, from the total spike
    ``counts`` over ``samples`` samples of ``timesteps`` steps."""
    neurons = {n.name: int(np.prod(n.output.shape)) for n in graph.find("if_neuron")}
    return {name: counts.get(name, 0.0) / (size * samples * timesteps) for name, size in neurons.items()}


_CPU_VALUE_BYTES = 30 << 20  # keep one [T, B, ...] value under glibc's largest mmap threshold


def default_batch_size(timesteps: int, graph: Graph | None = None, device: str = "cpu") -> int:
    """Samples per batch.

    On CPU the batch is sized so that the largest ``[T, B, ...]`` value stays under 30 MiB:
    with :func:`keep_freed_memory` such buffers are recycled by malloc instead of being
    mapped and page-faulted afresh for every layer and batch, which measured 2.4x faster
    on the Fashion-MNIST ResNet (2 cores). Elsewhere, T x B is kept near 4096.
    """
    if device == "cpu" and graph is not None:
        widest = max(int(np.prod(v.shape)) for v in graph.values())
        return int(max(1, min(256, _CPU_VALUE_BYTES // (4 * timesteps * max(1, widest)))))
    return int(max(1, min(256, 4096 // max(1, timesteps))))


_MALLOC_TUNED = False


def keep_freed_memory() -> None:
    """Ask glibc to serve allocations up to 32 MiB from its heap and not to return freed
    memory to the OS, so per-layer buffers are reused (no page faults on every layer).
    A no-op where glibc is not the allocator."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):  # not glibc
        pass
