"""Backends: the interface every target implements, and their discovery.

A backend lowers an SNN-stage graph to its target through a per-op table and runs it.
The core knows only the built-in ``reference`` backend; every other backend is a
separate package under ``backends/`` that registers itself under the entry-point group
``snnc.backends`` (name -> ``module:factory``). The core never imports a backend.

What a backend package may use from the core: this module (:class:`Backend`,
:class:`Unsupported`, :class:`SimResult`, :func:`encode`, :func:`spike_rates`) and
:mod:`snnc.ir` (the graph, its ops and their executable semantics).
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from snnc.errors import BackendError
from snnc.ir.graph import Graph
from snnc.simulator.reference import SimResult, Timed, check_timesteps, default_batch_size, encode, keep_freed_memory, simulate, spike_rates

__all__ = ["Backend", "Unsupported", "SimResult", "Timed", "encode", "spike_rates", "default_batch_size", "keep_freed_memory", "resolve_device", "check_timesteps", "get_backend", "backend_names"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "snnc.backends"


@dataclass(frozen=True)
class Unsupported:
    """A node a backend cannot run, and why."""

    node: str
    op: str
    reason: str


class Backend:
    """Interface of a backend. Subclasses set ``name`` and implement both methods."""

    name: str = ""
    description: str = ""

    def unsupported(self, graph: Graph) -> list[Unsupported]:
        """Every node of the SNN-stage ``graph`` this backend cannot run."""
        raise NotImplementedError

    def run(
        self,
        graph: Graph,
        x: np.ndarray,
        timesteps: Sequence[int],
        *,
        batch_size: int | None = None,
        encoding: str = "direct",
        seed: int = 0,
        progress=None,
    ) -> SimResult:
        raise NotImplementedError

    def check(self, graph: Graph) -> None:
        """Raise a BackendError listing every node this backend cannot run."""
        problems = self.unsupported(graph)
        if problems:
            lines = "\n".join(f"  - {p.node} ({p.op}): {p.reason}" for p in problems)
            raise BackendError(f"backend {self.name!r} cannot run {len(problems)} node(s):\n{lines}")


class ReferenceBackend(Backend):
    """snnc's own simulator (torch, CPU or CUDA): runs every SNN-stage op."""

    name = "reference"
    description = "snnc's reference simulator (torch; the semantic ground truth)"

    def __init__(self, device: str = "cpu"):
        self.device = resolve_device(device, "cpu")

    def unsupported(self, graph: Graph) -> list[Unsupported]:
        from snnc.ir.ops import SNN

        return [Unsupported(n.name, n.op, "not an SNN-stage op") for n in graph.nodes if SNN not in n.spec.stages]

    def run(self, graph, x, timesteps, *, batch_size=None, encoding="direct", seed=0, progress=None) -> SimResult:
        return simulate(graph, x, timesteps, batch_size=batch_size, device=self.device, encoding=encoding, seed=seed, progress=progress)


def resolve_device(device: str | None, default: str = "cpu") -> str:
    """A validated torch device string: ``None`` / ``"auto"`` give ``default`` ("auto":
    CUDA when available); a BackendError names the valid forms or the missing GPU."""
    import torch

    if device in (None, "auto"):
        device = default
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise BackendError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendError(f"device {device!r} was requested but torch sees no CUDA device; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackendError(f"device {device!r} does not exist: torch sees {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise BackendError(f"device {device!r} is not supported; use cpu, cuda or cuda:N")
    return str(dev)


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    """Names of the reference backend and every installed backend package."""
    return ["reference"] + sorted(n for n in _entry_points() if n != "reference")


def get_backend(name: str, **options) -> Backend:
    """Instantiate backend ``name``; a clear BackendError if it is unknown or broken."""
    if name == "reference":
        return ReferenceBackend(**options)
    eps = _entry_points()
    if name not in eps:
        raise BackendError(
            f"unknown backend {name!r}; available backends: {', '.join(backend_names())}. "
            "Backends other than 'reference' come from separate packages (see README: Backends)."
        )
    try:
        factory = eps[name].load()
        backend = factory(**options)
    except BackendError:
        raise
    except Exception as e:  # an installed backend that cannot start: say why
        raise BackendError(f"backend {name!r} is installed but cannot be used: {type(e).__name__}: {e}") from e
    return backend
