"""Pass infrastructure: the pass contract, typed options, pipelines and the pass manager.

Every pass has a short kebab-case ``name``, a dataclass of typed ``Options``, the stage it
requires, and a docstring stating the invariant it establishes. ``run`` returns whether
it changed the graph. The manager verifies the graph after every pass and names the
pass (and those before it) when verification fails.

Pipelines are strings: ``"canonicalize,fold-bn,balance-thresholds{method=mse granularity=channel},insert-if"``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from snnc import parallel
from snnc.defaults import DEFAULT_BATCH_SIZE, DEFAULT_SEED, DEFAULT_STORE_MEMORY, DEFAULT_TIMESTEPS
from snnc.errors import PassError, SnncError, VerificationError
from snnc.ir.graph import Graph, format_graph
from snnc.ir.verify import verify
from snnc.parallel import Group

log = logging.getLogger(__name__)


class _NullTask:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self, n: int = 1) -> None:
        pass


def null_progress(description: str, total: int) -> _NullTask:
    return _NullTask()


@dataclass
class PassContext:
    """Everything a pass may read besides the graph: calibration data and settings."""

    calib: np.ndarray | None = None
    timesteps: int = DEFAULT_TIMESTEPS
    # Every T the calibration aims at ("anytime" inference: one artifact for several T;
    # empty: just ``timesteps``). ``timesteps`` is then their largest, the artifact's default T.
    timesteps_all: tuple[int, ...] = ()
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "cpu"
    seed: int = DEFAULT_SEED
    progress: Callable[[str, int], Any] = null_progress
    notices: list[str] = field(default_factory=list)
    records: dict[str, Any] = field(default_factory=dict)  # per-pass results, saved in provenance
    # Set by insert-if: the ANN just before conversion (the calibration passes' target) and,
    # for each spiking node it created, the name of the ANN node it replaced.
    ann_reference: Graph | None = None
    ann_names: dict[str, str] = field(default_factory=dict)
    # The processes sharing the work (torchrun); alone by default.
    group: Group = field(default_factory=parallel.current)
    # Where the layer-wise calibration keeps spike trains between layers: "auto" (in
    # memory up to store_memory bytes, the rest in temporary files under spill_dir),
    # "memory" (no limit), "disk" (all in files) or "recompute" (nothing kept: each
    # layer's inputs are simulated again from the network input).
    store: str = "auto"
    store_memory: int = DEFAULT_STORE_MEMORY
    spill_dir: str | None = None
    # Set by the quantize pass: the target's quantiser (snnc.backend.get_quantizer); the
    # calibration passes after it put every layer they change back on its grid.
    quantizer: Any = None

    @property
    def calibrated_for(self) -> tuple[int, ...]:
        """The T values the T-dependent passes (balance-thresholds' MSE search, the
        calibration passes) aim at, sorted: ``timesteps_all``, or ``(timesteps,)``."""
        return tuple(sorted(set(self.timesteps_all))) if self.timesteps_all else (self.timesteps,)

    def record(self, pass_name: str, data: Any) -> None:
        """Store a pass's results under its name (``name#2`` for a second run)."""
        key, i = pass_name, 1
        while key in self.records:
            i += 1
            key = f"{pass_name}#{i}"
        self.records[key] = data

    def require_calib(self, pass_name: str) -> np.ndarray:
        if self.calib is None or len(self.calib) == 0:
            from snnc.errors import CalibrationError

            raise CalibrationError(
                f"pass {pass_name!r} needs calibration data: thresholds come from the network's activations. "
                "Pass --calib FILE.npz (array x: a few hundred training samples) or calib=... in the API."
            )
        return self.calib


class Pass:
    """Base class of all passes. Subclasses set ``name``, ``Options`` and ``run``."""

    name: ClassVar[str]
    requires_stage: ClassVar[str | None] = "ann"

    @dataclass
    class Options:
        pass

    def __init__(self, **options: Any):
        self.options = parse_options(self.Options, options, self.name)

    def run(self, graph: Graph, ctx: PassContext) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "options": dataclasses.asdict(self.options)}


_PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    if not cls.__doc__:
        raise TypeError(f"pass {cls.name!r} needs a docstring stating its invariant")
    if cls.name in _PASSES:
        raise TypeError(f"pass {cls.name!r} registered twice")
    _PASSES[cls.name] = cls
    return cls


def registered_passes() -> dict[str, type[Pass]]:
    return dict(_PASSES)


def get_pass(name: str) -> type[Pass]:
    try:
        return _PASSES[name]
    except KeyError:
        raise PassError(f"unknown pass {name!r}; available passes: {', '.join(sorted(_PASSES))}") from None


# ------------------------------------------------------------------ options
def parse_options(cls: type, raw: dict[str, Any], pass_name: str) -> Any:
    """Build the ``Options`` dataclass from strings or typed values, checking choices."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        key_norm = key.replace("-", "_")
        if key_norm not in fields:
            known = ", ".join(f.replace("_", "-") for f in fields) or "none"
            raise PassError(f"pass {pass_name!r} has no option {key!r} (options: {known})")
        kwargs[key_norm] = _coerce(value, hints[key_norm], fields[key_norm], pass_name, key)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, f: dataclasses.Field, pass_name: str, key: str) -> Any:
    choices = f.metadata.get("choices")
    origin = typing.get_origin(hint)
    types = typing.get_args(hint) if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) else (hint,)
    types = tuple(t for t in types if t is not type(None))
    if isinstance(value, str) and value.lower() in ("none", "null") and len(types) < len(typing.get_args(hint) or (hint,)):
        return None
    target = types[0] if types else str
    try:
        if target is bool and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            out = value.lower() in ("true", "1", "yes")
        elif target in (int, float, str) and not isinstance(value, target):
            out = target(value)
        else:
            out = value
    except (TypeError, ValueError, OverflowError):
        raise PassError(f"option {key!r} of pass {pass_name!r} must be {getattr(target, '__name__', target)}, got {value!r}") from None
    if isinstance(out, float) and not math.isfinite(out):
        raise PassError(f"option {key!r} of pass {pass_name!r} must be a finite number, got {value!r}")
    if isinstance(out, (int, float)) and not isinstance(out, bool) and out <= 0:  # counts, rates, percentiles
        raise PassError(f"option {key!r} of pass {pass_name!r} must be positive, got {value!r}")
    if choices and out not in choices:
        raise PassError(f"option {key!r} of pass {pass_name!r} must be one of {', '.join(map(str, choices))}; got {out!r}")
    return out


def choice(default: str, *choices: str) -> Any:
    return field(default=default, metadata={"choices": choices})


# ---------------------------------------------------------------- pipelines
def parse_pipeline(text: str) -> list[Pass]:
    """Parse ``"a,b{k=v k2=v2},c"`` into pass instances (options inside braces are
    separated by spaces or commas)."""
    if not isinstance(text, str):
        raise PassError(f"a pass pipeline is a string such as 'canonicalize,fold-bn,insert-if', got {type(text).__name__}")
    passes: list[Pass] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " ,\n\t":
            i += 1
        if i >= n:
            break
        j = i
        while j < n and text[j] not in ",{":
            j += 1
        name = text[i:j].strip()
        opts: dict[str, str] = {}
        if j < n and text[j] == "{":
            k = text.find("}", j)
            if k < 0:
                raise PassError(f"pipeline {text!r}: missing '}}' after options of {name!r}")
            for item in text[j + 1 : k].replace(",", " ").split():
                key, eq, val = item.partition("=")
                if not eq or not key.strip() or not val.strip() or "{" in item:
                    raise PassError(f"pipeline {text!r}: option {item!r} of {name!r} must be key=value")
                if key.strip() in opts:
                    raise PassError(f"pipeline {text!r}: option {key.strip()!r} of {name!r} is given twice")
                opts[key.strip()] = val.strip()
            j = k + 1
            while j < n and text[j] in " \n\t":
                j += 1
            if j < n and text[j] != ",":
                raise PassError(f"pipeline {text!r}: expected ',' after the options of {name!r}, found {text[j:]!r}")
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise PassError(f"pipeline {text!r}: {name!r} is not a pass name (passes are separated by commas)")
        passes.append(get_pass(name)(**opts))
        i = j
    if not passes:
        raise PassError("the pass pipeline is empty; name at least one pass (see `snnc passes`), or leave --passes out for the default pipeline")
    return passes


def format_pipeline(passes: list[Pass]) -> str:
    parts = []
    for p in passes:
        defaults = p.Options()
        changed = {k: v for k, v in dataclasses.asdict(p.options).items() if getattr(defaults, k) != v}
        opts = " ".join(f"{k.replace('_', '-')}={v}" for k, v in changed.items())
        parts.append(f"{p.name}{{{opts}}}" if opts else p.name)
    return ",".join(parts)


# -------------------------------------------------------------- the manager
@dataclass
class PassResult:
    name: str
    options: dict[str, Any]
    changed: bool
    seconds: float


def run_passes(
    graph: Graph,
    passes: list[Pass],
    ctx: PassContext,
    *,
    print_after: Callable[[str, str], None] | None = None,
) -> list[PassResult]:
    """Run ``passes`` in order on ``graph`` (in place), verifying after each one."""
    results: list[PassResult] = []
    done: list[str] = []
    for p in passes:
        if p.requires_stage is not None and graph.stage != p.requires_stage:
            raise PassError(
                f"pass {p.name!r} needs a graph in the {p.requires_stage.upper()} stage, but the graph is in the "
                f"{graph.stage.upper()} stage (after {', '.join(done) or 'no passes'}); reorder --passes"
            )
        t0 = time.perf_counter()
        try:
            changed = bool(p.run(graph, ctx))
        except SnncError:
            raise
        except Exception as e:  # a pass crashing is a bug: say where it happened
            raise PassError(f"pass {p.name!r} failed (after {', '.join(done) or 'no passes'}): {type(e).__name__}: {e}") from e
        seconds = time.perf_counter() - t0
        try:
            verify(graph)
        except VerificationError as e:
            raise PassError(f"verification failed after pass {p.name!r} (pipeline so far: {', '.join(done + [p.name])}): {e}") from e
        done.append(p.name)
        results.append(PassResult(p.name, dataclasses.asdict(p.options), changed, seconds))
        log.info("pass %s: %s in %.3f s", p.name, "changed" if changed else "no change", seconds)
        if print_after is not None:
            print_after(p.name, format_graph(graph))
    return results
