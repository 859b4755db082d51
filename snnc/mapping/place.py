"""Tile a spiking network's layers into core-sized blocks and place them onto chip cores.

**Blocks.** Each layer (:func:`~snnc.mapping.placement_file.layer_nodes`) is cut into boxes
of its output: first along channels (the first axis), then along rows (the second), the
fewest that let every block meet the largest core's budget: neurons, stored synapses
(every connection, or with convolutional weight sharing each kernel row once per core),
and fan-in (distinct presynaptic neurons). Channel cuts shrink the neurons and synapses of
a block; row cuts also shrink its receptive field, hence its fan-in.

**Placement** (:func:`place`). A networkx digraph of the blocks, edges weighted by the
spikes per step the destination reads from the source (measured on data, or from an
assumed rate). Blocks are taken in layer order and each goes to the open core that can
still hold it (every per-core budget, including the union of its blocks' fan-in) and that
exchanges the most traffic with it (best fit by affinity), else to a new core. Cores are
then dealt to chips in order and the chip partition refined by Kernighan-Lin swaps between
pairs of chips (networkx's ``kernighan_lin_bisection``, which keeps each chip's core
count), which lowers the spikes crossing chips. :func:`place_naive` is the baseline the
benchmark compares with: the same blocks, in layer order, filling one core after another.

**Costs.** Per core: its budgets' utilisation, synaptic operations and neuron updates per
step; per link (core to core, chip to chip): spikes per step (a spike goes once to each core
that needs it, as an axon route). Energy per step and time per step follow from the
target's ``[energy]`` and ``[timing]`` figures (docs/mapping.md gives the formulas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from snnc.errors import DataError
from snnc.ir.graph import Graph, Node
from snnc.mapping.connectivity import Box, Connectivity, Needs, box_size, box_slices, synaptic_nodes
from snnc.mapping.targets import CoreBudget, Target

BUDGETS = ("neurons", "synapses", "fan_in", "fan_out", "destinations", "layers")


class DoesNotFit(DataError):
    """The network does not fit the target: which budget, by how much, what to change."""

    def __init__(self, message: str, budget: str, need: float, have: float):
        super().__init__(message)
        self.budget, self.need, self.have = budget, need, have


@dataclass
class Block:
    id: str
    layer: str
    box: Box
    neurons: int
    synapses: int  # stored synapse entries on the core
    connections: int  # synaptic paths into the block
    needs: Needs = field(repr=False)
    routes: int = 0  # output routes if each destination block it feeds sat on another core (set by block_graph)

    @property
    def fan_in(self) -> int:
        return self.needs.fan_in()


# ------------------------------------------------------------------ tiling
def _shared_synapses(graph: Graph, node: Node, box: Box, layer_names) -> int:
    """Stored entries with convolutional weight sharing: each synaptic op's weight rows for
    the block's output channels (all of them when its channels are not the layer's)."""
    total = 0
    chans = node.output.shape[0] if node.output.shape else 1
    lo, hi = box[0] if box else (0, 1)
    for s in synaptic_nodes(graph, node, layer_names):
        w = s.params.get("weight", s.params.get("scale"))
        if w is None:
            continue
        w = np.asarray(w)
        if s.op in ("conv", "linear") and w.ndim >= 1 and w.shape[0] == chans and s.output.shape and s.output.shape[0] == chans:
            total += int(np.prod(w.shape[1:], dtype=np.int64)) * (hi - lo)
        else:
            total += int(w.size)
    return total


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    parts = max(1, min(n, parts))
    edges = [round(i * n / parts) for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts)]


def _boxes(shape: tuple[int, ...], cs: int, rs: int) -> list[Box]:
    if not shape:
        return [()]
    rows = _split(shape[1], rs) if len(shape) > 1 else [None]
    out = []
    for c in _split(shape[0], cs):
        for r in rows:
            box = (c,) if r is None else (c, r)
            out.append(box + tuple((0, s) for s in shape[len(box) :]))
    return out


def _largest(target: Target) -> CoreBudget:
    """Per budget, the largest value any core of the target has (None: unlimited)."""
    budgets = [target.budget(i) for i in range(target.cores_per_chip)]

    def top(key):
        vals = [getattr(b, key) for b in budgets]
        return None if any(v is None for v in vals) else max(vals)

    return CoreBudget(**{k: top(k) for k in ("neurons", "synapses", "fan_in", "fan_out", "destinations", "layers")})


def tile(graph: Graph, conn: Connectivity, target: Target, task=None) -> list[Block]:
    """Every layer of ``graph`` cut into blocks that each fit the largest core of ``target``:
    neurons, stored synapses and fan-in per block; then, with a fan-out budget, any layer
    whose blocks send more output routes than a core has is cut finer (rows first), which
    spreads its routes over more cores."""
    cap = _largest(target)
    names = [n.name for n in conn.layers]
    cuts: dict[str, tuple[int, int]] = {}
    per_layer: dict[str, list[Block]] = {}
    for node in conn.layers:
        per_layer[node.name], cuts[node.name] = _tile_layer(graph, conn, target, cap, node, names, None)
        if task:
            task.advance(1)
    for _ in range(64):
        blocks = [b for n in conn.layers for b in per_layer[n.name]]
        if cap.fan_out is None:
            return blocks
        _routes(blocks)
        over = {b.layer for b in blocks if b.routes > cap.fan_out}
        if not over:
            return blocks
        for name in over:
            node = next(n for n in conn.layers if n.name == name)
            cs, rs = cuts[name]
            shape = conn.shapes[name]
            rows = shape[1] if len(shape) > 1 else 1
            chans = shape[0] if shape else 1
            if rs < rows:
                rs = min(rows, rs + max(1, rs // 2))
            elif cs < chans:
                cs = min(chans, cs + max(1, cs // 2))
            else:
                worst = max(b.routes for b in per_layer[name])
                raise DoesNotFit(
                    f"layer {name!r}: one of its neurons alone is read by more cores than a {target.name} core has output "
                    f"routes ({worst:,} > {cap.fan_out:,}); use fewer channels in the layers it feeds, or another target",
                    "fan_out",
                    worst,
                    cap.fan_out,
                )
            per_layer[name], cuts[name] = _tile_layer(graph, conn, target, cap, node, names, (cs, rs))
    raise DoesNotFit("the blocks' output routes did not settle within a core's fan-out budget after 64 refinements", "fan_out", 0, cap.fan_out or 0)


def _tile_layer(graph, conn, target, cap, node, names, start) -> tuple[list[Block], tuple[int, int]]:
    shape = conn.shapes[node.name]
    chans = shape[0] if shape else 1
    rows = shape[1] if len(shape) > 1 else 1
    if start is not None:
        cs, rs = start
    else:
        size = box_size(tuple((0, s) for s in shape))
        full_box = tuple((0, s) for s in shape)
        syn = _shared_synapses(graph, node, full_box, names) if target.weight_sharing else conn.whole(node.name).connections()
        n = max(1, math.ceil(size / cap.neurons), math.ceil(syn / cap.synapses))
        if target.weight_sharing or rows == 1:  # channel cuts shrink the stored kernels
            cs = min(chans, n)
            rs = min(rows, math.ceil(n / cs))
        else:  # row cuts also shrink each block's receptive field: fewer inputs and output routes
            rs = min(rows, n)
            cs = min(chans, math.ceil(n / rs))
    while True:
        cand = []
        worst: dict[str, tuple[int, int]] = {}
        for i, box in enumerate(_boxes(shape, cs, rs)):
            needs = conn.needs(node.name, box)
            neurons = box_size(box)
            stored = _shared_synapses(graph, node, box, names) if target.weight_sharing else needs.connections()
            b = Block(f"{node.name}#{i}", node.name, box, neurons, stored, needs.connections(), needs)
            cand.append(b)
            for key, need, have in (("neurons", neurons, cap.neurons), ("synapses", stored, cap.synapses), ("fan_in", b.fan_in, cap.fan_in)):
                if have is not None and need > have and need > worst.get(key, (0, 0))[0]:
                    worst[key] = (need, have)
        if not worst:
            return cand, (cs, rs)
        rows_first = "fan_in" in worst or not target.weight_sharing
        if rows_first and rs < rows:
            rs = min(rows, rs + max(1, rs // 2))
        elif cs < chans:
            cs = min(chans, cs + max(1, cs // 2))
        elif rs < rows:
            rs = min(rows, rs + max(1, rs // 2))
        else:
            key, (need, have) = next(iter(worst.items()))
            what = {"neurons": "neurons", "synapses": "stored synapses", "fan_in": "presynaptic neurons (fan-in)"}[key]
            raise DoesNotFit(
                f"layer {node.name!r} cannot be cut to fit a {target.name} core: its smallest block "
                f"needs {need:,} {what} and the largest core holds {have:,} (over by {need - have:,}); " + _advice(key, target),
                key,
                need,
                have,
            )


def _routes(blocks: list[Block]) -> None:
    """Each block's output routes if every destination block sat on its own core."""
    by_layer: dict[str, list[Block]] = {}
    for b in blocks:
        b.routes = 0
        by_layer.setdefault(b.layer, []).append(b)
    for d in blocks:
        for src, paths in d.needs.paths.items():
            need = paths != 0
            for s in by_layer.get(src, []):
                s.routes += int(np.count_nonzero(need[box_slices(s.box)]))


def _advice(key: str, target: Target) -> str:
    return {
        "fan_in": "a neuron reads more presynaptic neurons than a core accepts: use fewer input channels or a smaller kernel / "
        "input in that layer, or a target with a larger fan-in",
        "neurons": "use fewer neurons per channel row in that layer or another target",
        "synapses": "use fewer or smaller kernels in that layer, or a target with weight sharing or more synaptic memory",
    }.get(key, f"change the network or choose another target than {target.name}")


# --------------------------------------------------------------- placement
@dataclass
class _Core:
    index: int  # global core id (chip * cores_per_chip + slot, once dealt to chips)
    budget: CoreBudget
    blocks: list[Block] = field(default_factory=list)
    neurons: int = 0
    synapses: int = 0
    routes: int = 0  # upper bound of its output routes: as if every destination block sat on its own core
    needed: dict[str, np.ndarray] = field(default_factory=dict)  # source layer -> bool mask of what its blocks read

    def fan_in(self, extra: Block | None = None) -> int:
        total = 0
        keys = set(self.needed) | (set(extra.needs.paths) if extra else set())
        for k in keys:
            m = self.needed.get(k)
            if extra is not None and k in extra.needs.paths:
                e = extra.needs.paths[k] != 0
                m = e if m is None else (m | e)
            total += int(np.count_nonzero(m))
        return total

    def layers(self) -> set[str]:
        return {b.layer for b in self.blocks}

    def fits(self, b: Block) -> bool:
        bud = self.budget
        if self.neurons + b.neurons > bud.neurons or self.synapses + b.synapses > bud.synapses:
            return False
        if bud.fan_out is not None and self.routes + b.routes > bud.fan_out:
            return False
        if bud.layers is not None and len(self.layers() | {b.layer}) > bud.layers:
            return False
        return bud.fan_in is None or self.fan_in(b) <= bud.fan_in

    def add(self, b: Block) -> None:
        self.blocks.append(b)
        self.neurons += b.neurons
        self.synapses += b.synapses
        self.routes += b.routes
        for k, a in b.needs.paths.items():
            m = a != 0
            self.needed[k] = m if k not in self.needed else (self.needed[k] | m)


def block_graph(blocks: list[Block], rates: dict[str, np.ndarray]):
    """The networkx digraph of blocks; edge weight = spikes per step the destination reads
    from the source block (its neurons that the destination needs, times their rates)."""
    import networkx as nx

    g = nx.DiGraph()
    by_layer: dict[str, list[Block]] = {}
    for b in blocks:
        g.add_node(b.id, layer=b.layer, neurons=b.neurons, synapses=b.synapses)
        by_layer.setdefault(b.layer, []).append(b)
    for d in blocks:
        for src, paths in d.needs.paths.items():
            r = rates[src]
            need = paths != 0
            for s in by_layer[src]:
                sub = need[box_slices(s.box)]
                if sub.any():
                    w = float((r[box_slices(s.box)] * sub).sum(dtype=np.float64))
                    g.add_edge(s.id, d.id, weight=w, routes=int(np.count_nonzero(sub)))
    _routes(blocks)
    return g


def _open(cores: list[_Core], target: Target, b: Block, limit: int) -> _Core:
    if not target.overrides:  # identical cores, numbered in the order they open
        if len(cores) >= limit:
            raise _Full()
        c = _Core(len(cores), target.core)
        cores.append(c)
        return c
    used = {c.index for c in cores}
    free = [i for i in range(limit) if i not in used]
    # heterogeneous cores: the smallest free core that holds the block
    ok = [i for i in free if _Core(i, target.budget(i % target.cores_per_chip)).fits(b)]
    if not ok:
        raise _Full()
    i = min(ok, key=lambda i: (target.budget(i % target.cores_per_chip).synapses, target.budget(i % target.cores_per_chip).neurons, i))
    c = _Core(i, target.budget(i % target.cores_per_chip))
    cores.append(c)
    return c


class _Full(Exception):
    pass


def _pack(blocks: list[Block], target: Target, chips: int, g, naive: bool, count_only: bool = False) -> list[_Core]:
    limit = chips * target.cores_per_chip
    cores: list[_Core] = []
    where: dict[str, _Core] = {}
    try:
        for b in blocks:
            if naive:
                c = cores[-1] if cores and cores[-1].fits(b) else _open(cores, target, b, limit)
            else:
                # The core it exchanges the most spikes with, among those with room; the
                # latest core when it exchanges none (joining an unrelated early core would
                # tie distant layers together and scatter the chip partition).
                affinity: dict[int, float] = {}
                for u in g.predecessors(b.id):
                    if u in where:
                        affinity[id(where[u])] = affinity.get(id(where[u]), 0.0) + g.edges[u, b.id]["weight"] + 1e-9
                best, score = None, 0.0
                for c in cores:
                    a = affinity.get(id(c), 0.0)
                    if a > score and c.fits(b):
                        best, score = c, a
                if best is None and cores and cores[-1].fits(b):
                    best = cores[-1]
                c = best if best is not None else _open(cores, target, b, limit)
            if not c.fits(b):
                raise _Full()
            c.add(b)
            where[b.id] = c
    except _Full:
        if count_only:
            raise
        need = _cores_needed(blocks, target, g, naive)
        raise DoesNotFit(
            f"the network does not fit {chips} {target.name} chip{'s' if chips > 1 else ''}: its {len(blocks)} blocks need "
            f"{need} cores and {chips} chip{'s' if chips > 1 else ''} have {limit} (over by {need - limit}); "
            + (
                f"use --chips {math.ceil(need / target.cores_per_chip)}, smaller layers, or another target"
                if 0 < math.ceil(need / target.cores_per_chip) <= target.max_chips
                else f"a {target.name} system links at most {target.max_chips} chip{'s' if target.max_chips > 1 else ''}: use smaller or fewer layers, or another target"
            ),
            "cores",
            need,
            limit,
        ) from None
    return cores


def _cores_needed(blocks, target, g, naive) -> int:
    """Cores the packing would use with unlimited chips (for the error message)."""
    chips = 4 * target.max_chips if target.overrides else 10**7
    try:
        return len(_pack(blocks, target, chips, g, naive, count_only=True))
    except _Full:
        return -1


def _deal_to_chips(cores: list[_Core], target: Target, chips: int, g) -> None:
    """Assign the packed cores to chips: the least-traffic cut of the cores in layer order
    into chips, then Kernighan-Lin swaps between every pair of chips."""
    if target.overrides or chips == 1 or len(cores) <= target.cores_per_chip:
        return
    import networkx as nx
    from networkx.algorithms.community import kernighan_lin_bisection

    cg = nx.Graph()
    owner = {b.id: c.index for c in cores for b in c.blocks}
    for c in cores:
        cg.add_node(c.index)
    for u, v, w in g.edges(data="weight"):
        a, b = owner[u], owner[v]
        if a != b:
            cg.add_edge(a, b, weight=cg.edges[a, b]["weight"] + w if cg.has_edge(a, b) else w)
    per = target.cores_per_chip
    groups = _contiguous_chips(sorted(c.index for c in cores), cg, per, chips)
    # A chip's free slots are nodes without edges, so every part has a chip's size and the
    # swaps (which keep part sizes) can move a core into a free slot of another chip.
    free = -1
    for grp in groups:
        while len(grp) < per:
            cg.add_node(free)
            grp.append(free)
            free -= 1
    for _ in range(2):
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                sub = cg.subgraph(groups[i] + groups[j])
                a, b = kernighan_lin_bisection(sub, partition=(set(groups[i]), set(groups[j])), weight="weight", seed=0)
                groups[i], groups[j] = sorted(a), sorted(b)
    remap = {}
    for chip, group in enumerate(groups):
        for slot, idx in enumerate(i for i in group if i >= 0):
            remap[idx] = chip * per + slot
    for c in cores:
        c.index = remap[c.index]


def _contiguous_chips(order: list[int], cg, per: int, chips: int) -> list[list[int]]:
    """Cut the cores, in the order they were opened (layer order), into at most ``chips``
    contiguous runs of at most ``per`` cores with the least traffic between runs (dynamic
    programming over the cut points: exact among contiguous partitions)."""
    n = len(order)
    pos = {c: i for i, c in enumerate(order)}
    w = np.zeros((n, n))
    for u, v, x in cg.edges(data="weight"):
        w[pos[u], pos[v]] += x
        w[pos[v], pos[u]] += x
    cum = np.zeros((n + 1, n + 1))
    cum[1:, 1:] = w.cumsum(0).cumsum(1)

    def cross(p: int, i: int) -> float:  # traffic between cores [p, i) and cores [0, p)
        return float(cum[i, p] - cum[p, p])

    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(chips + 1)]
    back = [[-1] * (n + 1) for _ in range(chips + 1)]
    best[0][0] = 0.0
    for j in range(1, chips + 1):
        for i in range(1, n + 1):
            for p in range(max(0, i - per), i):
                if best[j - 1][p] < inf:
                    c = best[j - 1][p] + cross(p, i)
                    if c < best[j][i] - 1e-12:
                        best[j][i], back[j][i] = c, p
    j = min(range(1, chips + 1), key=lambda k: (best[k][n], k))
    cuts, i = [], n
    while j > 0:
        p = back[j][i]
        cuts.append(order[p:i])
        i, j = p, j - 1
    return cuts[::-1]


def place(graph: Graph, target: Target, chips: int, rates: dict[str, np.ndarray], *, naive: bool = False, conn: Connectivity | None = None, blocks: list[Block] | None = None) -> dict:
    """Tile and place ``graph`` on ``chips`` chips of ``target``; the placement report as a
    plain dict (the placement file's body: see :mod:`snnc.mapping.placement_file`).
    Raises :class:`DoesNotFit` naming the failing budget."""
    if chips < 1:
        raise DataError(f"--chips must be at least 1, got {chips}")
    conn = conn or Connectivity(graph)
    blocks = blocks if blocks is not None else tile(graph, conn, target)
    g = block_graph(blocks, rates)
    if naive:
        cores = _pack(blocks, target, chips, g, naive=True)
        report = _costs(graph, conn, target, chips, cores, rates)
        _check_routes(report, target)
        report["algorithm"] = "naive: layers in order, filling cores, chips in order"
        return report
    # Two packings (by traffic affinity; filling in layer order), each dealt to chips by the
    # least-traffic contiguous cut and Kernighan-Lin swaps; the one with the fewest spikes
    # between chips wins (then between cores, then fewer cores).
    best, errors = None, []
    for fill in (False, True):
        try:
            cores = _pack(blocks, target, chips, g, naive=fill)
        except DoesNotFit as e:
            errors.append(e)
            continue
        _deal_to_chips(cores, target, chips, g)
        report = _costs(graph, conn, target, chips, cores, rates)
        s = report["summary"]
        key = (round(s["spikes_per_step_between_chips"], 6), round(s["spikes_per_step_between_cores"], 6), s["cores_used"])
        report["algorithm"] = ("layer-order fill" if fill else "traffic-affinity best fit") + " + least-traffic chip cuts + Kernighan-Lin swaps"
        if best is None or key < best[0]:
            best = (key, report)
    if best is None:
        raise errors[0]
    _check_routes(best[1], target)
    return best[1]


def _costs(graph: Graph, conn: Connectivity, target: Target, chips: int, cores: list[_Core], rates) -> dict:
    per = target.cores_per_chip
    owner: dict[str, np.ndarray] = {n: np.full(conn.shapes[n] or (1,), -1, dtype=np.int64) for n in conn.shapes}
    for c in cores:
        for b in c.blocks:
            owner[b.layer][box_slices(b.box)] = c.index
    links: dict[tuple[int, int], float] = {}
    routes: dict[int, int] = {}
    dests: dict[int, set[int]] = {}
    for c in cores:
        for src, need in c.needed.items():
            own = owner[src][need]
            r = rates[src][need]
            for a in np.unique(own):
                links[(int(a), c.index)] = links.get((int(a), c.index), 0.0) + float(r[own == a].sum(dtype=np.float64))
                routes[int(a)] = routes.get(int(a), 0) + int(np.count_nonzero(own == a))
                dests.setdefault(int(a), set()).add(c.index)
    core_rows = []
    total_synops = 0.0
    time_core = 0.0
    for c in sorted(cores, key=lambda c: c.index):
        synops = sum(float((rates[k] * a).sum(dtype=np.float64)) for b in c.blocks for k, a in b.needs.paths.items())
        total_synops += synops
        t = synops * target.timing["synop_ns"] + c.neurons * target.timing["neuron_update_ns"]
        time_core = max(time_core, t)
        bud = c.budget
        used = {"neurons": c.neurons, "synapses": c.synapses, "fan_in": c.fan_in(), "fan_out": routes.get(c.index, 0), "destinations": len(dests.get(c.index, ())), "layers": len(c.layers())}
        util = {k: (used[k] / getattr(bud, k) if getattr(bud, k) else None) for k in BUDGETS}
        core_rows.append(
            {
                "chip": c.index // per,
                "core": c.index % per,
                "blocks": [b.id for b in c.blocks],
                "layers": sorted(c.layers(), key=lambda n: [x.name for x in conn.layers].index(n)),
                "used": used,
                "budget": {k: getattr(bud, k) for k in BUDGETS},
                "utilisation": util,
                "synops_per_step": synops,
            }
        )
    link_rows = [
        {"src": [a // per, a % per], "dst": [b // per, b % per], "spikes_per_step": w, "crosses": "chip" if a // per != b // per else ("core" if a != b else "none")}
        for (a, b), w in sorted(links.items())
    ]
    core_traffic = sum(x["spikes_per_step"] for x in link_rows if x["crosses"] == "core")
    chip_traffic = sum(x["spikes_per_step"] for x in link_rows if x["crosses"] == "chip")
    chip_pair: dict[tuple[int, int], float] = {}
    for x in link_rows:
        if x["crosses"] == "chip":
            k = (x["src"][0], x["dst"][0])
            chip_pair[k] = chip_pair.get(k, 0.0) + x["spikes_per_step"]
    neurons = sum(c.neurons for c in cores)
    e = target.energy
    energy_pj = total_synops * e["synop_pj"] + neurons * e["neuron_update_pj"] + core_traffic * e["core_hop_pj"] + chip_traffic * e["chip_hop_pj"]
    tm = target.timing
    busiest_chip_link = max(chip_pair.values(), default=0.0)
    time_ns = time_core + busiest_chip_link * tm["chip_hop_ns"] + tm["core_hop_ns"] + tm["step_barrier_ns"]
    blocks = [
        {"id": b.id, "layer": b.layer, "slices": [list(s) for s in b.box], "chip": c.index // per, "core": c.index % per, "neurons": b.neurons, "synapses": b.synapses, "connections": b.connections, "fan_in": b.fan_in}
        for c in sorted(cores, key=lambda c: c.index)
        for b in c.blocks
    ]
    chips_used = len({c.index // per for c in cores})
    return {
        "layers": [n.name for n in conn.layers],
        "blocks": blocks,
        "cores": core_rows,
        "links": link_rows,
        "summary": {
            "layers": len(conn.layers),
            "blocks": len(blocks),
            "cores_used": len(cores),
            "chips": chips,
            "chips_used": chips_used,
            "neurons": neurons,
            "synapses": sum(c.synapses for c in cores),
            "synops_per_step": total_synops,
            "spikes_per_step_between_cores": core_traffic,
            "spikes_per_step_between_chips": chip_traffic,
            "chip_links": [{"src": a, "dst": b, "spikes_per_step": w} for (a, b), w in sorted(chip_pair.items())],
            "energy_per_step_nj": energy_pj / 1e3,
            "time_per_step_us": time_ns / 1e3,
            "max_utilisation": {k: max((r["utilisation"][k] for r in core_rows if r["utilisation"][k] is not None), default=None) for k in BUDGETS},
        },
    }


def _check_routes(report: dict, target: Target) -> None:
    """The budgets known only after placement: output routes and destination cores."""
    for row in report["cores"]:
        for key, what in (("fan_out", "output axon routes (fan-out)"), ("destinations", "destination cores")):
            have = row["budget"][key]
            need = row["used"][key]
            if have is not None and need > have:
                raise DoesNotFit(
                    f"core {row['chip']}:{row['core']} (layers {', '.join(row['layers'])}) needs {need:,} {what} and a "
                    f"{target.name} core has {have:,} (over by {need - have:,}): the layers it feeds are spread over too many "
                    "cores; use fewer, larger layers after it, or another target",
                    key,
                    need,
                    have,
                )

