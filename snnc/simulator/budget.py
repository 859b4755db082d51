"""Refuse a simulation this machine cannot finish, before it starts.

A run of ``T`` steps holds ``[T, B, ...]`` values (the reference simulator and SpikingJelly
run every stateless op on all steps at once), so its memory grows with T, and its time grows
with ``T x samples x`` the network's synaptic operations. ``snnc convert -T 100000`` used to
run for minutes while memory grew to gigabytes before failing. :func:`check_run_budget`
estimates both from the graph's shapes and refuses the run when

* even one sample's ``[T, 1, ...]`` working set (:data:`LIVE_VALUES` values the size of the
  widest layer) exceeds the memory available, or
* the dense synaptic operations at an optimistic rate (:data:`OPS_PER_SECOND`) would take
  longer than :data:`MAX_SECONDS`.

Measured on the Fashion-MNIST VGG-BN and ResNet (2 cores, batch 1, T = 1000 and 4000): peak
memory grew by 3.5-3.9 times the widest layer's ``T x 4`` bytes, and the reference simulator
ran 8.7e9 multiply-accumulates per second. Both limits are therefore lower bounds on what the
run needs: a refused run could not have finished.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from snnc.errors import DataError
from snnc.ir.graph import Graph
from snnc.utils.validate import available_memory

BYTES_PER_VALUE = 4  # float32
LIVE_VALUES = 3.5  # measured 3.5-3.9 (an op's input and output, a neuron's membrane, temporaries)
OPS_PER_SECOND = {"cpu": 2e10, "cuda": 2e12}  # optimistic dense multiply-accumulates per second
MAX_SECONDS = 24 * 3600.0


def graph_costs(graph: Graph) -> tuple[int, int]:
    """(the widest value's elements per sample, dense multiply-accumulates per sample per step)."""
    widest, macs = 1, 0
    for v in graph.values():
        if v.shape is not None:
            widest = max(widest, int(np.prod(v.shape)))
    for n in graph.nodes:
        w = n.params.get("weight")
        shape = n.output.shape
        if w is not None and shape:
            macs += int(w.size) * int(np.prod(shape)) // max(1, int(shape[0]))
    return widest, macs


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _duration(s: float) -> str:
    return f"{s / 3600:.0f} hours" if s >= 7200 else f"{s / 60:.0f} minutes"


def check_run_budget(
    graph: Graph,
    timesteps: int | Sequence[int],
    samples: int,
    *,
    device: str = "cpu",
    steps_in_memory: bool = True,
    what: str = "the simulation",
) -> None:
    """Raise a DataError when running ``graph`` for ``timesteps`` on ``samples`` samples
    cannot fit this machine's memory or would take longer than :data:`MAX_SECONDS`."""
    T = max(timesteps) if isinstance(timesteps, Sequence) else int(timesteps)
    widest, macs = graph_costs(graph)
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    if steps_in_memory and kind == "cpu":
        need = int(BYTES_PER_VALUE * LIVE_VALUES * widest * T)
        have = available_memory()
        if have is not None and need > have:
            raise DataError(
                f"T={T} is too large for this machine: {what} holds [T, batch, ...] values, at least {_gib(need)} for a single "
                f"sample (the widest layer has {widest:,} values), and {_gib(have)} of memory is available; use a smaller T "
                f"(at most about {max(1, int(have // (BYTES_PER_VALUE * LIVE_VALUES * widest))):,} here)"
            )
    seconds = macs * T * max(1, samples) / OPS_PER_SECOND[kind]
    if seconds > MAX_SECONDS:
        raise DataError(
            f"T={T} on {samples:,} samples would take at least {_duration(seconds)} ({macs:,} multiply-accumulates per sample and step, "
            f"at an optimistic {OPS_PER_SECOND[kind]:.0e} per second on {kind}); use a smaller T or fewer samples, "
            "or run on a GPU (--device cuda)"
        )
