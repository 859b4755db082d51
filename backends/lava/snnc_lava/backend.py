"""The ``lava`` (float) and ``lava-fixed`` (Loihi fixed point) backends."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from snnc.backend import Backend, SimResult, Unsupported, check_timesteps, spike_rates
from snnc.errors import BackendError, DataError
from snnc.ir.executor import check_input
from snnc.ir.graph import Graph
from snnc_lava.runtime import components, error_file, run_batches

INSTALL_HINT = (
    "install it with `pip install --no-deps --ignore-requires-python lava-nc==0.10.0 \"asteval<0.10\" && pip install networkx` "
    "(`make setup` does this)"
)

# Loihi 2 per-chip figures (Intel's Loihi 2 brief; docs/lava.md): 128 neuro cores, up to
# 1 M neurons and 120 M synapses; 128 KiB of synaptic SRAM per core.
LOIHI2 = {"cores_per_chip": 128, "neurons_per_chip": 1_000_000, "synapses_per_chip": 120_000_000, "neurons_per_core": 8192, "synapse_bytes_per_core": 128 * 1024}
DEFAULT_BATCH = 64


def require_lava() -> str:
    """Lava's version; a BackendError saying how to install it when it is missing."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("lava-nc")
    except importlib.metadata.PackageNotFoundError:
        raise BackendError(f"Lava (lava-nc) is not installed; {INSTALL_HINT}") from None
    try:
        from snnc_lava import processes  # noqa: F401  (applies the Python 3.11 shim, imports Lava)
    except ImportError as e:
        raise BackendError(f"lava-nc {version} cannot be imported ({e}); {INSTALL_HINT}") from e
    return version


class LavaBackend(Backend):
    """snnc's processes on Lava's CPU simulator, floating point."""

    steps_in_memory = False  # Lava steps through time
    runs_placement = True  # run(..., placement=): one process per placed block (snnc_lava.placed)
    name = "lava"
    fixed = False

    def __init__(self, device: str | None = None):
        if device not in (None, "cpu", "auto"):
            raise BackendError(f"the {self.name} backend runs on the CPU (Lava's simulator); got device {device!r}")
        self.version = require_lava()
        from snnc_lava.lower import TABLE

        self.table = TABLE
        kind = "Loihi fixed point (bit-accurate model)" if self.fixed else "floating point"
        self.description = f"Lava {self.version} processes on its CPU simulator, {kind}"

    def graph_problems(self, graph: Graph) -> list[Unsupported]:
        """Fixed point: the scaling of the whole network must map onto Loihi's integers."""
        if not self.fixed:
            return []
        from snnc_lava.lower import Unmappable, lower

        try:
            x = np.zeros((1, *graph.inputs[0].shape), dtype=np.float32)
            lower(graph, x, 1, 1, fixed=True)
        except Unmappable as e:
            return [Unsupported(e.node, e.op, e.reason)]
        except BackendError as e:
            return [Unsupported(graph.name, "graph", str(e))]
        return []

    def run(self, graph, x, timesteps: Sequence[int], *, batch_size=None, encoding="direct", seed=0, progress=None, placement=None) -> SimResult:
        from snnc_lava.lower import lower

        if encoding != "direct":
            raise DataError(f"the {self.name} backend takes direct-coded input (the analog input as bias current); got encoding {encoding!r}")
        steps = check_timesteps(timesteps)
        check_input(graph, x)
        # ``placement``: a Placement validated for this graph (snnc.model validates the user's file
        # or dict before it gets here; the backends depend on the IR only, not on snnc.mapping)
        T = steps[-1]
        n = len(x)
        B = int(batch_size or min(DEFAULT_BATCH, n))
        program = lower(graph, x, T, B, self.fixed)
        for p in program.procs:
            p.spec["samples"] = n
        outs = {t: {name: np.empty((n, *graph.outputs[i].shape), np.float32) for i, (name, _) in enumerate(program.outputs)} for t in steps}
        t0 = time.perf_counter()
        if placement is None:
            counts, busy = _simulate(program, n, B, steps, progress, outs, self.name)
        else:
            from snnc_lava.placed import simulate_placed

            counts, busy, placed = simulate_placed(graph, program, placement, n, B, steps, progress, outs, self.name)
        wall = time.perf_counter() - t0
        for t in steps:
            for name, arr in program.static_outputs.items():
                outs[t][name][:] = arr
        result = SimResult({t: [outs[t][name] for name, _ in program.outputs] for t in steps}, spike_rates(graph, counts, n, T), n)
        if self.fixed:
            result.details["deployment"] = deployment(graph, program)
        if placement is not None:
            result.details["placement"] = placed
        result.details["lava"] = {
            "processes": len(program.procs) if placement is None else placed["processes"],
            "batch": B,
            "lava_runs": math.ceil(n / B) * len(steps),
            "wall_seconds": wall,
            "compute_seconds": busy,  # per process: time inside its kernel (the rest is Lava's messaging and sync)
        }
        return result


class LavaFixedBackend(LavaBackend):
    """snnc's processes on Lava's CPU simulator in Loihi fixed point."""

    name = "lava-fixed"
    fixed = True

    def quantizer(self, timesteps: int):
        """Fake quantisation onto this backend's Loihi grid (snnc_lava.quantize)."""
        from snnc_lava.quantize import LoihiQuantizer

        return LoihiQuantizer(timesteps)


def _simulate(program, n: int, B: int, steps: list[int], progress, outs, label: str) -> tuple[dict[str, float], dict[str, float]]:
    """Run every connected part of the process network over all sample batches (Lava
    compiles what is connected to the process it runs; parts that meet only at the
    analog input, which is bias, are separate networks)."""
    counts: dict[str, float] = {}
    busy: dict[str, float] = {}
    parts = components(program.procs)
    task = progress(f"{label} T={steps[-1]}", n * len(parts)) if progress else None
    with error_file(program.procs) as errors:
        for part in parts:
            c, b = _simulate_part(part, program, n, B, steps, task, outs, errors)
            counts.update(c)
            busy.update(b)
    return counts, busy


def _simulate_part(plans, program, n, B, steps, task, outs, error_file):
    """Build one connected Lava network, run every sample batch, collect its readouts and
    spike counts; the runtime is stopped however this ends (success, error, Ctrl-C)."""
    from lava.magma.core.run_configs import Loihi2SimCfg

    from snnc_lava.processes import NODE_PROCESSES, SnncReadout

    procs = {}
    for p in plans:
        if p.kind == "readout":
            procs[p.name] = SnncReadout(in_shape=p.in_shapes[0], spec=p.spec, name=p.name)
        else:
            procs[p.name] = NODE_PROCESSES[len(p.inputs)](in_shapes=p.in_shapes, out_shape=p.out_shape, spec=p.spec, name=p.name)
    for p in plans:
        for i, v in enumerate(p.inputs):
            procs[v].out.connect(getattr(procs[p.name], f"in{i}"))
    any_proc = procs[plans[0].name]
    cfg = Loihi2SimCfg(select_tag="fixed_pt" if plans[0].spec["mode"] == "fixed" else "floating_pt")
    readouts = {name: ro for name, ro in program.outputs if ro is not None and ro in procs}

    def read(t, lo, hi):
        for out_name, ro in readouts.items():
            val = np.asarray(procs[ro].value.get(), dtype=np.float64)[: hi - lo]
            outs[t][out_name][lo:hi] = val / program.output_scale[ro] / t

    def finish():
        counts = {p.name: float(procs[p.name].spikes.get()[0]) for p in plans if p.kind == "neuron"}
        return counts, {p.name: float(procs[p.name].busy.get()[0]) for p in plans}

    return run_batches(procs, any_proc, cfg, n, B, steps, error_file, read, task, finish)


def deployment(graph: Graph, program) -> dict:
    """Per-layer fixed-point scaling and a Loihi 2 resource estimate."""
    nodes = {n.name: n for n in graph.nodes}
    layers = []
    totals = {"neurons": 0, "connections": 0, "cores": 0}
    for rep in program.layers:
        sink = nodes[rep["layer"]]
        neurons = int(np.prod(sink.output.shape))
        synapses, fan_in = 0, 0
        for s in rep["synapses"]:
            owner = nodes[s["node"]]
            if owner.spec.has("synaptic"):
                w = owner.params["weight"]
                per_out = int(np.prod(w.shape[1:])) if owner.op != "conv_transpose" else int(w.shape[0] * np.prod(w.shape[2:]))
                outs = int(np.prod(owner.output.shape))
            else:  # elementwise synapses
                per_out, outs = 1, int(np.prod(owner.output.shape if owner.op != sink.op else sink.inputs[0].shape))
            synapses += per_out * outs
            fan_in += per_out
        cores = max(math.ceil(neurons / LOIHI2["neurons_per_core"]), math.ceil(synapses / LOIHI2["synapse_bytes_per_core"]))
        layers.append({**rep, "neurons": neurons, "connections": synapses, "max_fan_in": fan_in, "cores": cores})
        totals["neurons"] += neurons
        totals["connections"] += synapses
        totals["cores"] += cores
    chips = max(1, math.ceil(totals["cores"] / LOIHI2["cores_per_chip"]))
    return {
        "layers": layers,
        "resources": {
            **totals,
            "chips": chips,
            "fits_one_chip": totals["cores"] <= LOIHI2["cores_per_chip"] and totals["neurons"] <= LOIHI2["neurons_per_chip"] and totals["connections"] <= LOIHI2["synapses_per_chip"],
            "limits": LOIHI2,
        },
    }
