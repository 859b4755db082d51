"""Backends: the interface every target implements, and their discovery.

A backend lowers an SNN-stage graph to its target through a declared per-op table, a
:class:`LoweringTable` of :class:`Rule` objects (op -> whether it can lower a node, why not,
and how), and runs it. ``unsupported()`` and ``snnc check`` are derived from that table; a
backend that can run any stateless op on torch tensors gives a default rule that takes the
op's own ``compute`` from the op set, so new ops run there without being listed.

The core knows only the built-in ``reference`` backend; every other backend is a separate
package under ``backends/`` that registers itself under the entry-point group
``snnc.backends`` (name -> ``module:factory``). The core never imports a backend.

What a backend package may use from the core: this module (:class:`Backend`,
:class:`LoweringTable`, :class:`Rule`, :class:`Unsupported`, :class:`SimResult`,
:func:`encode`, :func:`spike_rates`, ...) and :mod:`snnc.ir` (the graph, the op set with its
executable forms, and the :class:`~snnc.ir.executor.Executor`).
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from snnc.errors import BackendError
from snnc.ir.executor import Timed
from snnc.ir.graph import Graph, Node
from snnc.ir.ops import SNN, TEMPORAL_TARGET
from snnc.simulator.reference import SimResult, check_timesteps, default_batch_size, encode, simulate, spike_rates
from snnc.utils.memory import keep_freed_memory

__all__ = [
    "Backend", "LoweringTable", "Rule", "Unsupported", "SimResult", "Timed", "encode", "spike_rates", "default_batch_size",
    "keep_freed_memory", "resolve_device", "check_timesteps", "get_backend", "backend_names", "get_quantizer", "QUANTIZE_TARGETS",
]  # fmt: skip

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "snnc.backends"


@dataclass(frozen=True)
class Unsupported:
    """A node a backend cannot run, and why."""

    node: str
    op: str
    reason: str


def _can(node: Node) -> str | None:
    return None


@dataclass(frozen=True)
class Rule:
    """How a backend lowers one op: ``check(node)`` says why it cannot lower that node (None
    when it can), ``lower(node, *context)`` builds the backend's object for it (None: the
    backend executes the op set's own form)."""

    lower: Callable[..., Any] | None = None
    check: Callable[[Node], str | None] = _can


class LoweringTable:
    """A backend's declared per-op table: ``rules`` for the ops it lowers specially, and the
    ``stateless`` / ``stateful`` rules for every other op of the SNN stage (None: such ops are
    not supported). Everything a backend says it cannot run comes from here."""

    def __init__(self, backend: str, rules: Mapping[str, Rule] | None = None, *, stateless: Rule | None = None, stateful: Rule | None = None):
        self.backend = backend
        self.rules = dict(rules or {})
        self.stateless = stateless
        self.stateful = stateful

    def rule(self, node: Node) -> Rule | None:
        """The rule for ``node``: its op's own, else the default for its kind, else None."""
        if node.op in self.rules:
            return self.rules[node.op]
        return self.stateful if node.spec.stateful else self.stateless

    def why_not(self, node: Node) -> str | None:
        """Why this backend cannot run ``node`` (None when it can)."""
        if SNN not in node.spec.stages:
            return "not an SNN-stage op"
        rule = self.rule(node)
        if rule is None:
            if node.op in TEMPORAL_TARGET:
                return f"no {self.backend} process runs it; a target needs a {TEMPORAL_TARGET[node.op]}"
            return f"no {self.backend} lowering for op {node.op!r}"
        return rule.check(node)

    def unsupported(self, graph: Graph) -> list[Unsupported]:
        out = []
        for n in graph.nodes:
            reason = self.why_not(n)
            if reason is not None:
                out.append(Unsupported(n.name, n.op, reason))
        return out

    def lower(self, node: Node, *context: Any) -> Any:
        """The backend's object for ``node`` (None where the op set's form is executed);
        ``context`` is passed on to the rule (what the backend's lowering keeps)."""
        reason = self.why_not(node)
        if reason is not None:
            raise BackendError(f"backend {self.backend!r} cannot run node {node.name!r} ({node.op}): {reason}")
        rule = self.rule(node)
        return rule.lower(node, *context) if rule.lower is not None else None


class Backend:
    """Interface of a backend. Subclasses set ``name`` and ``table`` and implement ``run``."""

    name: str = ""
    description: str = ""
    table: LoweringTable
    # True when a run holds [T, batch, ...] values (all steps at once), so its memory grows
    # with T; False for backends that step through time (Lava).
    steps_in_memory: bool = True
    # True when ``run`` takes ``placement=`` (a placement file's blocks on chip cores,
    # :mod:`snnc.mapping.placement_file`) and emulates it; others refuse a placement.
    runs_placement: bool = False

    def unsupported(self, graph: Graph) -> list[Unsupported]:
        """Every node of the SNN-stage ``graph`` this backend cannot run: the per-op table's
        verdicts, then :meth:`graph_problems` (constraints no single op shows)."""
        problems = self.table.unsupported(graph)
        return problems if problems else self.graph_problems(graph)

    def graph_problems(self, graph: Graph) -> list[Unsupported]:
        """Constraints of the whole graph (e.g. fixed-point ranges); none by default."""
        return []

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
        placement=None,  # only where runs_placement
    ) -> SimResult:
        raise NotImplementedError

    def quantizer(self, timesteps: int) -> Any:
        """The backend's fake quantiser for hardware-aware calibration (``snnc convert
        --quantize``), for runs of ``timesteps`` steps: an object with ``target``,
        ``project(graph, layers=None)`` (put those layers of the float graph, in place, on the
        grid the backend's lowering maps them to, so that lowering it again is lossless),
        ``describe()`` and optionally ``grid(graph, layers)`` (each weight's step, for
        calibrate-weights' straight-through fit). Optional: a BackendError where the backend
        has none."""
        raise BackendError(f"backend {self.name!r} has no quantiser; --quantize takes {', '.join(QUANTIZE_TARGETS)}")

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
    table = LoweringTable("reference", stateless=Rule(), stateful=Rule())  # every SNN-stage op, from the op set

    def __init__(self, device: str = "cpu"):
        self.device = resolve_device(device, "cpu")

    def run(self, graph, x, timesteps, *, batch_size=None, encoding="direct", seed=0, progress=None) -> SimResult:
        return simulate(graph, x, timesteps, batch_size=batch_size, device=self.device, encoding=encoding, seed=seed, progress=progress)


# Hardware targets of ``--quantize`` -> the backend whose quantiser models them (a backend's
# own name is accepted as well).
QUANTIZE_TARGETS = {"loihi2": "lava-fixed"}


def get_quantizer(target: str, timesteps: int) -> Any:
    """The quantiser of ``target`` (``loihi2``, or a backend's name) for runs of ``timesteps``
    steps: :meth:`Backend.quantizer` of that backend; a BackendError names what is missing."""
    name = QUANTIZE_TARGETS.get(target, target)
    if name not in QUANTIZE_TARGETS.values() and name not in backend_names():
        raise BackendError(f"unknown quantisation target {target!r}; --quantize takes {', '.join(QUANTIZE_TARGETS)} (or a backend with a quantiser)")
    return get_backend(name).quantizer(timesteps)


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
