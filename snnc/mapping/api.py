"""``map_model``: the whole of ``snnc map`` as one call (CLI, Python API, benchmark)."""

from __future__ import annotations

from typing import Any

import numpy as np

from snnc.ir.graph import Graph
from snnc.mapping.connectivity import Connectivity
from snnc.mapping.place import place, tile
from snnc.mapping.targets import Target, load_target
from snnc.mapping.traffic import DEFAULT_RATE, assumed_rates, measured_rates


def map_model(
    graph: Graph,
    target: str | Target,
    *,
    chips: int = 1,
    x: np.ndarray | None = None,
    timesteps: int = 32,
    rate: float = DEFAULT_RATE,
    naive: bool = False,
    compare_naive: bool = True,
    progress=None,
) -> dict[str, Any]:
    """Tile ``graph``'s layers into blocks and place them on ``chips`` chips of ``target``.

    Spike traffic is measured on the samples ``x`` at ``timesteps`` (or assumed at ``rate``
    messages per neuron per step). Returns the placement file's body: ``blocks``, ``cores``,
    ``links``, ``summary`` (and ``naive``: the baseline's summary, when ``compare_naive``);
    raises :class:`snnc.mapping.place.DoesNotFit` (a DataError) naming the failing budget."""
    t = target if isinstance(target, Target) else load_target(target)
    conn = Connectivity(graph)
    if x is not None:
        rates = measured_rates(graph, x, timesteps)
        traffic = {"source": "measured", "samples": int(len(x)), "timesteps": int(timesteps)}
    else:
        rates = assumed_rates(graph, rate)
        traffic = {"source": "assumed", "rate": float(rate)}
    blocks = tile(graph, conn, t, task=progress("cutting layers into blocks", len(conn.layers)) if progress else None)
    report = place(graph, t, chips, rates, naive=naive, conn=conn, blocks=blocks)
    report["traffic"] = traffic
    report["target"] = {"name": t.name, "chips": int(chips), "cores_per_chip": t.cores_per_chip, "file": t.path}
    if compare_naive and not naive:
        try:
            base = place(graph, t, chips, rates, naive=True, conn=conn, blocks=blocks)
            report["naive"] = base["summary"]
        except Exception as e:  # noqa: BLE001 - the baseline not fitting is a result, not an error
            report["naive"] = {"fits": False, "reason": str(e)}
    return report
