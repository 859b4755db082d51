"""Chip targets as data: what one core and one chip of a neuromorphic target hold.

A target is a TOML file (schema and units: docs/targets.md). snnc ships ``loihi2``, ``speck``,
``spinnaker2`` and ``generic`` (a template to copy) in the :mod:`snnc.targets` package; a user
passes the path of their own file instead. Every number in a shipped file has its source in a
comment on its own line or the line above; :attr:`Target.sources` carries those comments, keyed
by the dotted key (``"core.neurons"``, ``"core_overrides[3].synapses"``), for reports.

A user's file is untrusted input, so the loader checks all of it and answers a bad file with a
:class:`~snnc.errors.DataError` (CLI exit status 2) naming the file, the key and what to do:
unknown keys (a typo must not silently fall back to a default), missing keys, wrong types,
non-positive counts, negative or non-finite energies and times, absurd sizes, override indices
outside the chip, files over :data:`MAX_FILE_BYTES` or not TOML.

Standard library only: the mapper imports this before any model is loaded.
"""

from __future__ import annotations

import difflib
import importlib.resources
import math
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from typing import Any

from snnc.errors import DataError
from snnc.utils.io import read_small_file

MAX_FILE_BYTES = 1 << 20  # a target file is a few KiB; refuse anything over 1 MiB before reading it
MAX_COUNT = 10**12  # cores, neurons, synapses, chips: more than any chip or system has
MAX_AMOUNT = 1e12  # pJ or ns per event
MAX_BITS = 64
MAX_NAME = 64
MAX_DESCRIPTION = 1000
TOPOLOGIES = ("mesh", "chain", "full")
PACKAGE = "snnc.targets"

CORE_KEYS = ("neurons", "synapses", "fan_in", "fan_out", "destinations", "layers")
BITS_KEYS = ("weight", "state", "bias", "spike_payload")
ENERGY_KEYS = ("synop_pj", "neuron_update_pj", "core_hop_pj", "chip_hop_pj")
TIMING_KEYS = ("synop_ns", "neuron_update_ns", "core_hop_ns", "chip_hop_ns", "step_barrier_ns")

# table -> key -> (kind, required). Kinds: "count" a positive integer <= MAX_COUNT; "bits" an
# integer 1..MAX_BITS; "amount" a finite number 0..MAX_AMOUNT (0: not applicable / not charged);
# "bool"; "topology" one of TOPOLOGIES; "name" and "text" strings.
SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {
    "chip": {"cores": ("count", True), "neurons": ("count", False), "synapses": ("count", False)},
    "core": {k: ("count", k in ("neurons", "synapses")) for k in CORE_KEYS},
    "storage": {"weight_sharing": ("bool", True)},
    "bits": {k: ("bits", True) for k in BITS_KEYS},
    "board": {"max_chips": ("count", True), "topology": ("topology", True)},
    "energy": {k: ("amount", True) for k in ENERGY_KEYS},
    "timing": {k: ("amount", True) for k in TIMING_KEYS},
}
TOP_KEYS: dict[str, tuple[str, bool]] = {"name": ("name", True), "description": ("text", True)}
OVERRIDES = "core_overrides"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass(frozen=True)
class CoreBudget:
    """What one core holds. ``None``: no such limit on this target."""

    neurons: int  # neurons (compartments)
    synapses: int  # stored synapse entries (kernel entries where the target shares weights)
    fan_in: int | None = None  # distinct presynaptic neurons (input axons)
    fan_out: int | None = None  # output routes: (source neuron, destination core) pairs
    destinations: int | None = None  # distinct destination cores
    layers: int | None = None  # distinct layers


@dataclass(frozen=True)
class Target:
    """A chip target, checked (see :func:`load_target`)."""

    name: str
    description: str
    path: str  # the file it came from
    cores_per_chip: int
    core: CoreBudget  # the default core
    overrides: dict[int, CoreBudget]  # per core index: complete budgets (their missing keys inherit ``core``)
    chip_neurons: int | None
    chip_synapses: int | None
    weight_sharing: bool
    bits: dict[str, int]  # weight, state, bias, spike_payload
    max_chips: int
    topology: str  # mesh | chain | full
    energy: dict[str, float]  # synop_pj, neuron_update_pj, core_hop_pj, chip_hop_pj
    timing: dict[str, float]  # synop_ns, neuron_update_ns, core_hop_ns, chip_hop_ns, step_barrier_ns
    sources: dict[str, str] = field(default_factory=dict)  # dotted key -> its source comment

    def budget(self, core: int) -> CoreBudget:
        """The budget of core ``core`` (an index within one chip)."""
        return self.overrides.get(core, self.core)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (override indices become strings in JSON)."""
        return asdict(self)


# ----------------------------------------------------------------------------- finding targets
def available_targets() -> list[str]:
    """The shipped target names, sorted."""
    return sorted(p.name[: -len(".toml")] for p in importlib.resources.files(PACKAGE).iterdir() if p.name.endswith(".toml") and p.is_file())


def _looks_like_path(s: str) -> bool:
    return s.endswith(".toml") or os.sep in s or bool(os.altsep and os.altsep in s) or os.path.exists(s)


def load_target(name_or_path: str | os.PathLike) -> Target:
    """A shipped target by name (``"loihi2"``) or a user's target file by path.

    A shipped name wins over a file of the same name in the working directory; write
    ``./loihi2`` (or any path with a separator, or ending in ``.toml``) to read that file.
    Raises :class:`~snnc.errors.DataError` for an unknown name or a bad file."""
    try:
        s = os.fspath(name_or_path)
    except TypeError:
        raise DataError(f"a target is a name or a path, not {type(name_or_path).__name__}") from None
    if not isinstance(s, str):
        s = os.fsdecode(s)
    names = available_targets()
    if s in names:
        res = importlib.resources.files(PACKAGE).joinpath(f"{s}.toml")
        return _parse(res.read_bytes(), str(res))
    if s and _looks_like_path(s):
        return _parse(_read_file(s), s)
    raise DataError(
        f"unknown target {s!r}: snnc ships {', '.join(names)}; or give the path of your own target file "
        "(copy the generic one: see docs/targets.md)"
    )


def _read_file(path: str) -> bytes:
    return read_small_file(
        path, f"target file {path!r}", MAX_FILE_BYTES, missing=f"give a shipped target name ({', '.join(available_targets())}) or an existing .toml file", kind="a .toml file"
    )


# ----------------------------------------------------------------------------- checking
class _Check:
    """Checks one parsed file; every message names the file and the key."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, where: str, problem: str) -> DataError:
        return DataError(f"target file {self.path!r}: {where}{': ' if where else ''}{problem} (schema: docs/targets.md)")

    def table(self, doc: dict, key: str, where: str) -> dict:
        t = doc.get(key)
        if not isinstance(t, dict):
            raise self.fail(where, f"is {_kind(t)}, not a table; write it as [{key}] with its keys below it")
        return t

    def keys(self, t: dict, allowed: dict[str, tuple[str, bool]], where: str) -> None:
        unknown = [k for k in t if k not in allowed]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, list(allowed), n=1, cutoff=0.6)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise self.fail(where, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; the keys of {where or 'the file'} are {', '.join(allowed)}")
        missing = [k for k, (_, req) in allowed.items() if req and k not in t]
        tables = [f"[{k}]" for k in missing if allowed[k][0] == "table"]
        if tables:
            raise self.fail(where, f"missing table{'s' if len(tables) > 1 else ''} {', '.join(tables)}")
        if missing:
            raise self.fail(where, f"missing required key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")

    def value(self, v: Any, kind: str, where: str) -> Any:
        if kind in ("count", "bits", "index"):
            if isinstance(v, bool) or not isinstance(v, int):
                raise self.fail(where, f"must be an integer, got {_kind(v)} {_show(v)}")
            lo, hi = {"count": (1, MAX_COUNT), "bits": (1, MAX_BITS), "index": (0, MAX_COUNT)}[kind]
            if v < lo:
                raise self.fail(where, f"must be {'positive' if lo == 1 else '>= 0'}, got {v:,}")
            if v > hi:
                raise self.fail(where, f"is {v:,}: at most {hi:,}" + {"count": " (no chip has more)", "bits": " bits"}.get(kind, ""))
            return v
        if kind == "amount":
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise self.fail(where, f"must be a number, got {_kind(v)} {_show(v)}")
            if not math.isfinite(v):
                raise self.fail(where, f"must be a finite number, got {v}")
            if v < 0:
                raise self.fail(where, f"must be >= 0 (0: not applicable), got {v}")
            if v > MAX_AMOUNT:
                raise self.fail(where, f"is {v:g}: at most {MAX_AMOUNT:g} per event")
            return float(v)
        if kind == "bool":
            if not isinstance(v, bool):
                raise self.fail(where, f"must be true or false, got {_kind(v)} {_show(v)}")
            return v
        if not isinstance(v, str):
            raise self.fail(where, f"must be a string, got {_kind(v)} {_show(v)}")
        if kind == "topology":
            if v not in TOPOLOGIES:
                raise self.fail(where, f"is {v!r}; one of {', '.join(repr(t) for t in TOPOLOGIES)}")
        elif kind == "name":
            if len(v) > MAX_NAME or not _NAME.fullmatch(v):
                raise self.fail(where, f"is {_show(v)}; a name is 1-{MAX_NAME} letters, digits, '_', '-', '.' or '+', starting with a letter or digit")
        elif len(v) > MAX_DESCRIPTION or not v.isprintable():
            raise self.fail(where, f"must be one printable line of at most {MAX_DESCRIPTION} characters")
        return v


def _kind(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a table"}.get(type(v), type(v).__name__) if v is not None else "missing"


def _show(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _parse(data: bytes, path: str) -> Target:
    chk = _Check(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise chk.fail("", f"is not UTF-8 text (byte {e.start}); a target file is TOML") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise chk.fail("", f"is not valid TOML: {e}") from None

    allowed_top = {**TOP_KEYS, **{t: ("table", True) for t in SCHEMA}, OVERRIDES: ("tables", False)}
    chk.keys(doc, allowed_top, "")
    top = {k: chk.value(doc[k], kind, k) for k, (kind, _) in TOP_KEYS.items()}
    tables: dict[str, dict[str, Any]] = {}
    for name, schema in SCHEMA.items():
        t = chk.table(doc, name, f"[{name}]")
        chk.keys(t, schema, f"[{name}]")
        tables[name] = {k: chk.value(t[k], kind, f"[{name}] {k}") for k, (kind, _) in schema.items() if k in t}

    cores = tables["chip"]["cores"]
    core = CoreBudget(**tables["core"])
    overrides: dict[int, CoreBudget] = {}
    raw = doc.get(OVERRIDES, [])
    if isinstance(raw, dict):
        raise chk.fail(f"[{OVERRIDES}]", f"must be an array of tables: write [[{OVERRIDES}]] (double brackets), one per core")
    if not isinstance(raw, list) or not all(isinstance(o, dict) for o in raw):
        raise chk.fail(OVERRIDES, f"must be an array of tables: one [[{OVERRIDES}]] per core")
    over_schema = {"index": ("index", True), **{k: (kind, False) for k, (kind, _) in SCHEMA["core"].items()}}
    for n, o in enumerate(raw, 1):
        where = f"[[{OVERRIDES}]] #{n}"
        chk.keys(o, over_schema, where)
        i = chk.value(o["index"], "index", f"{where} index")
        if i >= cores:
            raise chk.fail(f"{where} index", f"{i:,} is out of range: the chip has {cores:,} cores, indices 0 to {cores - 1:,}")
        if i in overrides:
            raise chk.fail(f"{where} index", f"core {i:,} is overridden twice; merge the two tables")
        vals = {k: chk.value(o[k], kind, f"{where} (core {i}) {k}") for k, (kind, _) in over_schema.items() if k in o and k != "index"}
        overrides[i] = CoreBudget(**{**asdict(core), **vals})

    return Target(
        name=top["name"],
        description=top["description"],
        path=path,
        cores_per_chip=cores,
        core=core,
        overrides=dict(sorted(overrides.items())),
        chip_neurons=tables["chip"].get("neurons"),
        chip_synapses=tables["chip"].get("synapses"),
        weight_sharing=tables["storage"]["weight_sharing"],
        bits=dict(tables["bits"]),
        max_chips=tables["board"]["max_chips"],
        topology=tables["board"]["topology"],
        energy=dict(tables["energy"]),
        timing=dict(tables["timing"]),
        sources=_comment_sources(text, [o.get("index") for o in raw]),
    )


# ----------------------------------------------------------------------------- sources
_HEADER = re.compile(r"\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*(#.*)?")
_KEYVAL = re.compile(r"\s*([A-Za-z0-9_-]+)\s*=\s*(.*)")
_STRING_THEN = re.compile(r'"(?:[^"\\]|\\.)*"\s*(#.*)?')


def _comment_sources(text: str, override_indices: list) -> dict[str, str]:
    """Each key's source: the comment lines right above it and its trailing comment.

    Best effort, for reports (the checked values come from tomllib, not from here): plain
    ``key = value`` lines are read; a key inside a multi-line value or a dotted key is skipped."""
    out: dict[str, str] = {}
    table, ordinal, pending = "", -1, []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            pending = []
            continue
        if s.startswith("#"):
            pending.append(s.lstrip("#").strip())
            continue
        m = _HEADER.fullmatch(line)
        if m:
            table = m.group(2)
            if m.group(1) == "[[" and table == OVERRIDES:
                ordinal += 1
            pending = []
            continue
        m = _KEYVAL.fullmatch(line)
        if m:
            key, rest = m.groups()
            trailing = ""
            if rest.startswith('"'):
                sm = _STRING_THEN.match(rest)
                trailing = (sm.group(1) or "") if sm else ""
            elif "#" in rest:
                trailing = rest.split("#", 1)[1]
            if table == OVERRIDES:
                idx = override_indices[ordinal] if 0 <= ordinal < len(override_indices) else None
                path = f"{OVERRIDES}[{idx if idx is not None else '?'}].{key}"
            else:
                path = f"{table}.{key}" if table else key
            src = " ".join([*pending, trailing.lstrip("#").strip()]).strip()
            if src:
                out[path] = src
        pending = []
    return out
