"""Placed emulation: the Lava processes of a network cut into blocks, one process per block,
each on the core a placement file names (``snnc eval --placement``; docs/placement_emulation.md).

**What a core holds.** On Loihi a core holds a box of one layer's neurons and the synapses
into them; spikes travel between cores. So each block becomes **one** Lava process (an
``SnncCore<k>``, tagged with its chip and core): its in-ports receive the spikes of the
blocks it reads from, it computes the synaptic current of its layer (the layer's *segment*:
every stateless op between the upstream spikes and the layer, pooling and reshaping of
spikes included, as the composed synaptic matrix on the chip), keeps only its box of that
current, and steps the neurons of its box, whose state is the box's alone (potential, bias,
initial potential, threshold). Its out-port carries the box's spikes. A consumer block has
one in-port per upstream block and puts the boxes back together into the upstream layer's
whole output before its segment runs; nothing is summed, so the values it sees are exactly
the unplaced run's. A readout block integrates its box, and the host reads each block's box.

**What stays whole.** A spiking max pool is not affine: its gate depends on the running
spike count of its whole window. It runs as one process (with its own segment), not on a
placed core: on the chip it would need neurons of its own, which the placement file does not
list. A readout whose input does not vary over time is computed on the host, as unplaced.

**Exactness.** Every block computes the whole current of its layer with the unplaced run's
own kernels and specs (``lower``'s process plans, the fixed-point scaling included), then
keeps its box; the neuron equations are elementwise, so a box of neurons stepped alone is
the same integers (fixed point) and the same floats (float) as those elements of the whole
layer. Placed and unplaced runs are therefore bit-identical in both modes; the price is that
every block of a layer computes its layer's whole current (the emulation checks the
placement, it does not model the chip's speed).

This is a package rather than a module beside ``processes.py``: for every process it
compiles, Lava's model search executes every module file in that process's directory, and
a package directory is only imported (once). The unplaced run thus pays nothing for it.
The core process classes are made on first use, one per number of in-ports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snnc.errors import BackendError
from snnc_lava.runtime import components, error_file, run_batches

STATEFUL = ("neuron", "readout", "maxpool")


@dataclass
class CorePlan:
    """One Lava process of a placed run: a block of a layer (or a whole unplaced max pool)."""

    name: str
    unit: str  # the sink node (layer or max pool) it computes
    kind: str  # neuron | readout | maxpool
    chip: int | None  # None: not on a placed core
    core: int | None
    block: str | None  # the placement file's block id
    slices: tuple[tuple[int, int], ...]  # its box of the unit's output
    inputs: list[str]  # process names feeding its in-ports, in port order
    in_shapes: list[tuple[int, ...]]
    out_shape: tuple[int, ...]  # (batch, *box)
    spec: dict


@dataclass
class PlacedProgram:
    procs: list[CorePlan]
    readouts: dict[str, list[CorePlan]]  # readout node -> its blocks
    host_layers: list[str]  # layers of the placement computed on the host (time-invariant readouts)


def plan_placed(program, placement, graph) -> PlacedProgram:
    """The core processes for ``program`` (from :func:`snnc_lava.lower.lower`) cut as
    ``placement`` (a validated :class:`~snnc.mapping.placement_file.Placement` for ``graph``) says."""
    plans = {p.name: p for p in program.procs}
    order = {p.name: i for i, p in enumerate(program.procs)}
    shapes = {n.name: tuple(n.output.shape) for n in graph.nodes}
    units = [p for p in program.procs if p.kind in STATEFUL]
    blocks: dict[str, list[CorePlan]] = {}
    routers: dict[str, CorePlan] = {}
    procs: list[CorePlan] = []
    for u in units:
        batch = u.out_shape[0]
        segment, external = _segment(u, plans, order)
        for v in external:
            if plans[v].kind == "readout":
                raise BackendError(f"{u.name} reads the readout {v!r}; a readout has no spikes to send")
        if u.kind == "maxpool":
            cuts = [(None, None, None, tuple((0, d) for d in shapes[u.name]))]
        else:
            if u.name not in placement.layers:
                raise BackendError(f"the placement places no block of layer {u.name!r}")
            cuts = [(b.id, b.chip, b.core, b.slices) for b in placement.layers[u.name]]
        mine = []
        for bid, chip, core, slices in cuts:
            inputs, in_shapes, parts = [], [], []
            for v in external:
                ports = []
                for src in _senders(v, blocks, routers, shapes, procs):
                    ports.append([len(inputs), [list(s) for s in src.slices]])
                    inputs.append(src.name)
                    in_shapes.append(src.out_shape)
                parts.append({"shape": list(shapes[v]), "ports": ports})
            where = f"@{chip}:{core}" if chip is not None else "@host"
            name = f"{u.name}[{bid}]{where}" if bid is not None else f"{u.name}{where}"
            spec = _core_spec(u, plans, segment, external, slices, shapes[u.name], parts, name)
            box_shape = tuple(hi - lo for lo, hi in slices)
            mine.append(CorePlan(name, u.name, u.kind, chip, core, bid, slices, inputs, in_shapes, (batch, *box_shape), spec))
        blocks[u.name] = mine
        procs += mine
    on_cores = {p.unit for p in procs if p.chip is not None}
    host = [name for name in placement.layers if name not in on_cores]
    return PlacedProgram(procs, {u.name: blocks[u.name] for u in units if u.kind == "readout"}, host)


def _senders(v: str, blocks: dict[str, list[CorePlan]], routers: dict[str, CorePlan], shapes, procs: list[CorePlan]) -> list[CorePlan]:
    """The processes a reader of layer ``v`` connects to: its one block, or the router that
    gathers its blocks' boxes into the whole layer (made on first use). Routing a layer once,
    instead of connecting every block to every reader, keeps the Lava channels (each a shared
    memory buffer and its file descriptors) linear in the blocks: on a chip this is the
    network-on-chip's work, which the placement's traffic figures account for."""
    mine = blocks[v]
    if len(mine) == 1:
        return mine
    if v not in routers:
        first = mine[0]
        shape = tuple(shapes[v])
        spec = {
            "kind": "route",
            "name": f"{v}@route",
            "T": first.spec["T"],
            "batch": first.spec["batch"],
            "mode": first.spec["mode"],
            "shape": list(shape),
            "boxes": [[list(x) for x in b.slices] for b in mine],
        }
        full = tuple((0, d) for d in shape)
        routers[v] = CorePlan(f"{v}@route", v, "route", None, None, None, full, [b.name for b in mine], [b.out_shape for b in mine], (first.out_shape[0], *shape), spec)
        procs.append(routers[v])
    return [routers[v]]


def _segment(unit, plans, order) -> tuple[list[str], list[str]]:
    """The stateless op processes between ``unit`` and the stateful processes it reads
    (graph order), and those stateful processes' values (first use order)."""
    seen: set[str] = set()
    external: list[str] = []
    stack = list(reversed(unit.inputs))
    while stack:
        v = stack.pop()
        p = plans[v]
        if p.kind in STATEFUL:
            if v not in external:
                external.append(v)
        elif v not in seen:
            seen.add(v)
            stack += reversed(p.inputs)
    segment = sorted(seen, key=order.__getitem__)
    ext_order = {}
    for name in [*segment, unit.name]:  # first use, in computation order
        for v in plans[name].inputs:
            if v in external:
                ext_order.setdefault(v, len(ext_order))
    return segment, sorted(external, key=ext_order.__getitem__)


def _core_spec(unit, plans, segment, external, slices, shape, parts, name) -> dict:
    def ref(v):
        return ["in", external.index(v)] if v in external else ["op", segment.index(v)]

    whole = all(lo == 0 and hi == d for (lo, hi), d in zip(slices, shape))
    sink = unit.spec if whole else _slice_spec(unit.spec, slices, shape)
    return {
        "kind": "block",
        "name": name,
        "T": unit.spec["T"],
        "batch": unit.spec["batch"],
        "mode": unit.spec["mode"],
        "inputs": parts,
        "ops": [{"spec": plans[s].spec, "args": [ref(v) for v in plans[s].inputs]} for s in segment],
        "sink": {"spec": sink, "args": [ref(v) for v in unit.inputs], "slices": None if whole else [list(s) for s in slices]},
    }


def _slice_spec(spec: dict, slices, shape) -> dict:
    """A neuron or readout spec for the box ``slices`` of its ``shape``: the box's own
    state and constants, whatever shape they were given in (broadcast first)."""
    box = tuple(slice(lo, hi) for lo, hi in slices)
    shape = tuple(shape)
    out = dict(spec)
    out["shape"] = tuple(hi - lo for lo, hi in slices)
    for key in ("v_init", "threshold"):
        if key in spec and spec[key] is not None:
            out[key] = np.ascontiguousarray(np.broadcast_to(np.asarray(spec[key]), shape)[box])
    if spec.get("bias") is not None:
        arr, per_sample = spec["bias"]
        arr = np.asarray(arr)
        if per_sample:
            out["bias"] = (np.ascontiguousarray(np.broadcast_to(arr, (len(arr), *shape))[(slice(None), *box)]), True)
        else:
            out["bias"] = (np.ascontiguousarray(np.broadcast_to(arr, shape)[box]), False)
    if spec.get("port_weight") is not None:
        w, e = spec["port_weight"]
        out["port_weight"] = (np.ascontiguousarray(np.broadcast_to(np.asarray(w), shape)[box]), e)
    return out


# ---------------------------------------------------------------- processes
_CLASSES: dict[tuple[int, bool], type] = {}


def core_process(k: int, readout: bool):
    """The Lava process class of a core with ``k`` in-ports: ``SnncCore<k>`` (out-port
    ``out``: its box's spikes) or ``SnncCoreReadout<k>`` (Var ``value``: its box's
    integral), with float and fixed process models; made on first use and kept in this
    module, where Lava's model search finds them."""
    key = (k, readout)
    if key in _CLASSES:
        return _CLASSES[key]
    from lava.magma.core.decorator import implements, requires, tag
    from lava.magma.core.model.py.model import PyLoihiProcessModel
    from lava.magma.core.model.py.ports import PyInPort, PyOutPort
    from lava.magma.core.model.py.type import LavaPyType
    from lava.magma.core.process.ports.ports import InPort, OutPort
    from lava.magma.core.process.process import AbstractProcess
    from lava.magma.core.process.variable import Var
    from lava.magma.core.resources import CPU
    from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

    from snnc_lava.processes import _SnncModelMixin

    def __init__(self, *, in_shapes, out_shape, spec, chip=None, core=None, name=None):
        AbstractProcess.__init__(self, spec=spec, chip=chip, core=core, name=name)
        for i, shape in enumerate(in_shapes):
            setattr(self, f"in{i}", InPort(shape=tuple(shape)))
        if readout:
            self.value = Var(shape=tuple(out_shape), init=0)
        else:
            self.out = OutPort(shape=tuple(out_shape))
        self.spikes = Var(shape=(1,), init=0)
        self.busy = Var(shape=(1,), init=0)

    label = f"SnncCore{'Readout' if readout else ''}{k}"
    doc = f"One placed block: {k} in-port(s) (the blocks it reads), " + ("its box of the readout in `value`." if readout else "its box's spikes on `out`.")
    proc = type(label, (AbstractProcess,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})
    for mode, dtype in (("floating_pt", np.float32), ("fixed_pt", np.int64)):
        attrs = {f"in{i}": LavaPyType(PyInPort.VEC_DENSE, dtype) for i in range(k)}
        notes = {f"in{i}": PyInPort for i in range(k)}
        if readout:
            attrs["value"], notes["value"] = LavaPyType(np.ndarray, np.float64), np.ndarray
        else:
            attrs["out"], notes["out"] = LavaPyType(PyOutPort.VEC_DENSE, dtype), PyOutPort
        attrs["spikes"] = attrs["busy"] = LavaPyType(np.ndarray, np.float64)
        notes["spikes"] = notes["busy"] = np.ndarray
        attrs.update(n_inputs=k, __module__=__name__, __annotations__=notes)
        model = type(f"Py{label}{'Float' if mode == 'floating_pt' else 'Fixed'}", (_SnncModelMixin, PyLoihiProcessModel), attrs)
        model = tag(mode)(requires(CPU)(implements(proc=proc, protocol=LoihiProtocol)(model)))
        globals()[model.__name__] = model
    globals()[label] = proc
    _CLASSES[key] = proc
    return proc


# ---------------------------------------------------------------------- run
def simulate_placed(graph, program, placement, n: int, B: int, steps: list[int], progress, outs, label: str):
    """Run ``program`` cut as ``placement``: every connected part of the core processes
    over all sample batches. Returns (spike counts per layer, busy seconds per process,
    the placement's details for the result)."""
    placed = plan_placed(program, placement, graph)
    for p in placed.procs:
        p.spec["samples"] = n
    parts = components(placed.procs)
    counts: dict[str, float] = {}
    busy: dict[str, float] = {}
    task = progress(f"{label} T={steps[-1]} placed", n * len(parts)) if progress else None
    with error_file(placed.procs) as errors:
        for part in parts:
            c, b = _simulate_part(part, placed, program, n, B, steps, task, outs, errors)
            for unit, v in c.items():
                counts[unit] = counts.get(unit, 0.0) + v
            busy.update(b)
    on_cores = [p for p in placed.procs if p.chip is not None]
    info = {
        "file": placement.source,
        "target": placement.target,
        "blocks": len(on_cores),
        "cores": len({(p.chip, p.core) for p in on_cores}),
        "chips": len({p.chip for p in on_cores}),
        "processes": len(placed.procs),
        "lava_networks": len(parts),
        "not_on_cores": [p.unit for p in placed.procs if p.kind == "maxpool"],  # whole processes: spiking max pools
        "routers": sum(p.kind == "route" for p in placed.procs),  # one per layer cut into several blocks that something reads
        "host_layers": placed.host_layers,
    }
    return counts, busy, info


def _simulate_part(plans: list[CorePlan], placed: PlacedProgram, program, n, B, steps, task, outs, error_file):
    from lava.magma.core.run_configs import Loihi2SimCfg


    procs = {}
    for p in plans:
        cls = core_process(len(p.inputs), p.kind == "readout")
        procs[p.name] = cls(in_shapes=p.in_shapes, out_shape=p.out_shape, spec=p.spec, chip=p.chip, core=p.core, name=p.name)
    for p in plans:
        for i, v in enumerate(p.inputs):
            procs[v].out.connect(getattr(procs[p.name], f"in{i}"))
    any_proc = procs[plans[0].name]
    cfg = Loihi2SimCfg(select_tag="fixed_pt" if plans[0].spec["mode"] == "fixed" else "floating_pt")
    names = {p.name for p in plans}
    readouts = [(out_name, placed.readouts[ro]) for out_name, ro in program.outputs if ro is not None and ro in placed.readouts and placed.readouts[ro][0].name in names]

    def read(t, lo, hi):
        for out_name, blocks in readouts:
            scale = program.output_scale[blocks[0].unit]
            for blk in blocks:
                val = np.asarray(procs[blk.name].value.get(), dtype=np.float64)[: hi - lo]
                outs[t][out_name][(slice(lo, hi), *(slice(a, z) for a, z in blk.slices))] = val / scale / t

    def finish():
        counts: dict[str, float] = {}
        for p in plans:
            if p.kind == "neuron":
                counts[p.unit] = counts.get(p.unit, 0.0) + float(procs[p.name].spikes.get()[0])
        return counts, {p.name: float(procs[p.name].busy.get()[0]) for p in plans}

    return run_batches(procs, any_proc, cfg, n, B, steps, error_file, read, task, finish)

