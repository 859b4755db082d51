"""The placement file (``placement.json``): which core of which chip runs each block of each layer.

Written by ``snnc map``, read by ``snnc eval --placement`` (the Lava backends run one process
per block, on the core it names: docs/placement_emulation.md). Version 1::

    {"format": "snnc-placement", "version": 1,
     "model": {"graph": "<graph name>", "digest": "sha256:<64 hex digits>"},
     "target": {"name": "loihi2", "chips": 1},
     "blocks": [{"id": "conv2.if#0", "layer": "conv2.if", "slices": [[0, 16], [0, 14], [0, 28]],
                 "chip": 0, "core": 5, ...}],
     "cores": [...], "links": [...], "summary": {...}}

A *layer* is a sink of the spiking graph (:func:`layer_nodes`: every neuron and readout
node). A block is a box of its layer's output: one half-open ``[lo, hi)`` per axis of the
node's output shape (the batch axis excluded). The blocks of a layer tile its output
exactly: no element is left out, none is in two blocks. ``model.digest`` is
:func:`graph_digest` of the graph the placement was made for; a file made for another
graph (or the same one converted again) is refused.

The file is untrusted input: :func:`load_placement` refuses (with a :class:`DataError`, CLI
exit status 2, never another exception) a file over :data:`MAX_PLACEMENT_BYTES`, JSON
nested deeper than :data:`MAX_JSON_DEPTH` or with duplicate keys, and every field it uses
that has the wrong type or range, naming the field (``blocks[3].slices[1]``). What it does
not use (``cores``, ``links``, ``summary``, the blocks' other keys: the mapper's report) is
kept as it is, in :attr:`Placement.raw`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from snnc.errors import DataError
from snnc.ir.graph import Graph, Node
from snnc.ir.serialize import graph_to_json, weights_digest
from snnc.utils.io import atomic_write, json_default, read_small_file, unique_keys

FORMAT = "snnc-placement"
VERSION = 1
MAX_PLACEMENT_BYTES = 256 << 20  # ~1 M blocks with the mapper's per-core report
MAX_JSON_DEPTH = 32  # a file written by snnc map nests <= 6 levels
MAX_BLOCKS = 1_000_000
MAX_INDEX = 2**31 - 1  # chip and core indices
MAX_ID = 256  # characters of a block id

Box = tuple[tuple[int, int], ...]
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')  # a JSON string (skipped when measuring the nesting)


def layer_nodes(graph: Graph) -> list[Node]:
    """The layers of an SNN-stage graph, in graph order: its sinks, every neuron node
    (``if_neuron``) and every readout node (op traits ``neuron`` / ``readout``)."""
    return [n for n in graph.nodes if n.spec.has("neuron") or n.spec.has("readout")]


def graph_digest(graph: Graph) -> str:
    """``sha256:<hex>`` over ``graph``'s structure and parameters: its name and stage, its
    inputs and outputs, every node's name, op, inputs, attributes, parameter names and
    output shape, and every parameter's values as saved in a ``.snn`` artifact (float32,
    :func:`~snnc.ir.serialize.weights_digest`). Metadata (``graph.meta``: where it was
    imported from, notices) does not count. The same before and after saving and loading
    the artifact; any change to a weight, a threshold or the structure changes it."""
    arrays: dict[str, np.ndarray] = {}
    doc = graph_to_json(graph, "g", arrays)
    doc.pop("meta", None)
    h = hashlib.sha256(b"snnc-graph-v1\0")
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=json_default).encode()
    h.update(len(text).to_bytes(8, "little") + text)
    h.update(weights_digest({ref: np.ascontiguousarray(a, dtype="<f4") for ref, a in arrays.items()}).encode())
    return "sha256:" + h.hexdigest()


def placement_header(graph: Graph, target: str, chips: int) -> dict[str, Any]:
    """The head of a placement file for ``graph`` on ``chips`` chips of ``target``; the
    mapper adds ``blocks`` (and its report: ``cores``, ``links``, ``summary``)."""
    return {"format": FORMAT, "version": VERSION, "model": {"graph": graph.name, "digest": graph_digest(graph)}, "target": {"name": target, "chips": int(chips)}}


@dataclass(frozen=True)
class PlacedBlock:
    """One block of a layer: the box of its output it holds, and where it runs."""

    id: str
    layer: str
    slices: Box  # per axis of the layer's output shape: (lo, hi), half-open
    chip: int
    core: int

    @property
    def box(self) -> tuple[slice, ...]:
        """The block as an index into the layer's per-sample output."""
        return tuple(slice(lo, hi) for lo, hi in self.slices)

    @property
    def size(self) -> int:
        return int(np.prod([hi - lo for lo, hi in self.slices], dtype=np.int64)) if self.slices else 1

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(hi - lo for lo, hi in self.slices)


@dataclass
class Placement:
    """A validated placement: per layer (graph order) its blocks (file order), the file's
    whole content (``raw``, the mapper's report included) and where it came from."""

    layers: dict[str, list[PlacedBlock]]
    raw: dict[str, Any]
    source: str = "<placement>"

    @property
    def blocks(self) -> list[PlacedBlock]:
        return [b for bs in self.layers.values() for b in bs]

    @property
    def cores(self) -> set[tuple[int, int]]:
        """Every (chip, core) that holds a block."""
        return {(b.chip, b.core) for b in self.blocks}

    @property
    def chips(self) -> set[int]:
        return {b.chip for b in self.blocks}

    @property
    def target(self) -> str:
        return str(self.raw.get("target", {}).get("name", "?"))


# ------------------------------------------------------------------- writing
def save_placement(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    """Write a placement file atomically (never a partial file; a DataError naming the
    path and what to do when it cannot be written). ``format`` and ``version`` come first
    (added when missing); numpy numbers and arrays become JSON numbers and lists."""
    if not isinstance(data, Mapping):
        raise DataError(f"a placement is a dict (the placement file's body), got {type(data).__name__}")
    for key, want in (("format", FORMAT), ("version", VERSION)):
        if key in data and data[key] != want:
            raise DataError(f"cannot save a placement with {key} {data[key]!r}: snnc writes {key} {want!r}")
    body = {"format": FORMAT, "version": VERSION, **{k: v for k, v in data.items() if k not in ("format", "version")}}
    text = json.dumps(body, indent=1, default=json_default)
    with atomic_write(path, "w") as fh:
        fh.write(text)
        fh.write("\n")


# ------------------------------------------------------------------- reading
class _Bad(Exception):
    """Internal: a schema error (``str`` is the detail, naming the field)."""


def load_placement(path: str | os.PathLike, graph: Graph) -> Placement:
    """Read and validate a placement file for ``graph`` (see the module docstring); every
    problem is a DataError saying what is wrong and what to do."""
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"a placement file is given by its path, got {type(path).__name__}")
    name = os.fspath(path)
    data = read_small_file(name, f"placement file {name!r}", MAX_PLACEMENT_BYTES, missing="write one with `snnc map`", kind="the JSON file `snnc map` wrote")
    try:
        doc = _parse(data)
    except _Bad as e:
        raise DataError(f"placement file {name!r} is not valid JSON ({e}); write it with `snnc map`") from None
    return validate_placement(doc, graph, name)


def _parse(data: bytes) -> Any:
    """The parsed JSON; its nesting is measured first, without parsing (linear time)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Bad(f"not UTF-8 text: {e.reason} at byte {e.start}") from None
    skeleton = np.frombuffer(_JSON_STRING.sub(b"", data), dtype=np.uint8)
    step = (skeleton == ord("[")).astype(np.int32) + (skeleton == ord("{")) - (skeleton == ord("]")) - (skeleton == ord("}"))
    if step.size and int(np.cumsum(step).max()) > MAX_JSON_DEPTH:
        raise _Bad(f"it nests more than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except (ValueError, RecursionError) as e:
        raise _Bad(str(e).splitlines()[0][:200]) from None


def _shown(v: Any) -> str:
    if isinstance(v, (bool, int, float, type(None))) or (isinstance(v, str) and len(v) <= 60):
        return repr(v)
    if isinstance(v, list) and len(v) <= 4 and all(isinstance(x, (bool, int, float, type(None))) or (isinstance(x, str) and len(x) <= 20) for x in v):
        return repr(v)
    names = {dict: "an object", list: "a list", str: "a long string"}
    return names.get(type(v), type(v).__name__)


def _expect(cond: bool, where: str, what: str, v: Any) -> None:
    if not cond:
        raise _Bad(f"{where}: expected {what}, got {_shown(v)}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_placement(doc: Any, graph: Graph, source: str = "<placement>") -> Placement:
    """A :class:`Placement` for ``graph`` from a placement file's parsed body (what
    :func:`load_placement` does after reading and parsing); DataErrors as it."""
    try:
        return _validate(doc, graph, source)
    except _Bad as e:
        raise DataError(f"placement file {source!r} is malformed: {e}; write it with `snnc map`") from None


def _validate(doc: Any, graph: Graph, source: str) -> Placement:
    _expect(isinstance(doc, dict), "the file", "a JSON object", doc)
    if doc.get("format") != FORMAT:
        raise DataError(f"{source!r} is not a snnc placement file (format {_shown(doc.get('format'))}, expected {FORMAT!r}); write one with `snnc map`")
    version = doc.get("version")
    if not _is_int(version) or version != VERSION:
        raise DataError(f"placement file {source!r} has version {_shown(version)}; this snnc reads version {VERSION}: re-run `snnc map` with this snnc")
    model = doc.get("model")
    _expect(isinstance(model, dict), "model", "an object", model)
    _expect(isinstance(model.get("graph"), str), "model.graph", "a string", model.get("graph"))
    _expect(isinstance(model.get("digest"), str), "model.digest", "a string ('sha256:...')", model.get("digest"))
    digest = graph_digest(graph)
    if model["digest"] != digest:
        made_for = f"graph {model['graph'][:60]!r}" if model["graph"] != graph.name else f"another version of graph {graph.name!r}"
        raise DataError(
            f"{source} was made for another model/graph ({made_for}, digest {model['digest'][:19]}..., this one is {digest[:19]}...): "
            "re-run snnc map on this artifact"
        )
    target = doc.get("target")
    _expect(isinstance(target, dict), "target", "an object", target)
    _expect(isinstance(target.get("name"), str), "target.name", "a string", target.get("name"))
    chips = target.get("chips")
    _expect(chips is None or (_is_int(chips) and 1 <= chips <= MAX_INDEX), "target.chips", "a positive integer", chips)
    per_chip = target.get("cores_per_chip")
    _expect(per_chip is None or (_is_int(per_chip) and 1 <= per_chip <= MAX_INDEX), "target.cores_per_chip", "a positive integer", per_chip)
    raw_blocks = doc.get("blocks")
    _expect(isinstance(raw_blocks, list), "blocks", "a list", raw_blocks)
    if len(raw_blocks) > MAX_BLOCKS:
        raise _Bad(f"blocks: {len(raw_blocks):,} blocks, more than {MAX_BLOCKS:,}")
    layers = {n.name: n for n in layer_nodes(graph)}
    nodes = {n.name for n in graph.nodes}
    per_layer: dict[str, list[PlacedBlock]] = {name: [] for name in layers}
    ids: dict[str, int] = {}
    for i, b in enumerate(raw_blocks):
        where = f"blocks[{i}]"
        _expect(isinstance(b, dict), where, "an object", b)
        bid = b.get("id")
        _expect(isinstance(bid, str) and 0 < len(bid) <= MAX_ID, f"{where}.id", f"a non-empty string of at most {MAX_ID} characters", bid)
        if bid in ids:
            raise DataError(f"placement file {source!r}: blocks[{ids[bid]}] and {where} have the same id {bid!r}; every block needs its own id: re-run snnc map")
        ids[bid] = i
        where = f"{where} ({bid!r})"
        layer = b.get("layer")
        _expect(isinstance(layer, str), f"{where}.layer", "a layer name", layer)
        if layer not in layers:
            what = "is not a layer (a neuron or readout node)" if layer in nodes else "is not in the graph"
            raise DataError(f"placement file {source!r}: {where} is placed on layer {layer[:80]!r}, which {what} of {graph.name!r}: re-run snnc map on this artifact")
        for key in ("chip", "core"):
            v = b.get(key)
            _expect(_is_int(v) and 0 <= v <= MAX_INDEX, f"{where}.{key}", f"an integer from 0 to {MAX_INDEX:,}", v)
        if chips is not None and b["chip"] >= chips:
            raise _Bad(f"{where}.chip: chip {b['chip']} on a target of {chips} chip(s) (chips are numbered from 0)")
        if per_chip is not None and b["core"] >= per_chip:
            raise _Bad(f"{where}.core: core {b['core']} on a chip of {per_chip} cores (cores are numbered from 0 on each chip)")
        shape = layers[layer].output.shape
        slices = b.get("slices")
        _expect(isinstance(slices, list) and len(slices) == len(shape), f"{where}.slices", f"a list of {len(shape)} [lo, hi] pairs (layer {layer!r} has shape {list(shape)})", slices)
        box = []
        for ax, (s, dim) in enumerate(zip(slices, shape)):
            ok = isinstance(s, list) and len(s) == 2 and all(_is_int(v) for v in s) and 0 <= s[0] < s[1] <= dim
            _expect(ok, f"{where}.slices[{ax}]", f"[lo, hi] with 0 <= lo < hi <= {dim} (axis {ax} of layer {layer!r}, shape {list(shape)})", s)
            box.append((s[0], s[1]))
        per_layer[layer].append(PlacedBlock(bid, layer, tuple(box), b["chip"], b["core"]))
    missing = [name for name, bs in per_layer.items() if not bs]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"placement file {source!r} places no block of layer(s) {shown}; every layer must be placed: re-run snnc map on this artifact")
    for name, bs in per_layer.items():
        _check_tiling(layers[name], bs, source)
    return Placement(per_layer, doc, source)


def _check_tiling(node: Node, blocks: list[PlacedBlock], source: str) -> None:
    """The blocks tile the layer's output exactly; else a DataError naming an element left
    out or two blocks that share one. At most twice the layer's size in work: a block is
    checked against the blocks before it as it is painted, so the painted volume never
    exceeds the layer's size before the first overlap is found."""
    shape = node.output.shape
    owner = np.zeros(shape, dtype=np.int32)  # block index + 1, 0: no block yet
    for i, b in enumerate(blocks):
        region = owner[b.box]
        if region.any():
            at = tuple(int(j) for j in np.argwhere(region != 0)[0])
            elem = tuple(lo + j for (lo, _), j in zip(b.slices, at))
            other = blocks[int(region[at]) - 1]
            raise DataError(
                f"placement file {source!r}: blocks {other.id!r} and {b.id!r} of layer {node.name!r} overlap, e.g. at element "
                f"{list(elem)} (shape {list(shape)}); each element belongs to exactly one block: re-run snnc map"
            )
        owner[b.box] = i + 1
    holes = owner == 0
    if holes.any():
        at = [int(j) for j in np.argwhere(holes)[0]]
        raise DataError(
            f"placement file {source!r}: the blocks of layer {node.name!r} leave {int(holes.sum()):,} of its {owner.size:,} elements "
            f"out, e.g. element {at} (shape {list(shape)}); its blocks must cover it exactly: re-run snnc map"
        )


def as_placement(placement: Any, graph: Graph) -> Placement:
    """A validated :class:`Placement` for ``graph`` from a Placement (re-validated against
    ``graph``), a path to a placement file, or a placement file's body (a dict)."""
    if isinstance(placement, Placement):
        return validate_placement(placement.raw, graph, placement.source)
    if isinstance(placement, Mapping):
        return validate_placement(dict(placement), graph)
    if isinstance(placement, (str, os.PathLike)):
        return load_placement(placement, graph)
    raise DataError(f"placement must be a placement file's path, its content (a dict) or a Placement, got {type(placement).__name__}")


__all__ = [
    "FORMAT", "VERSION", "MAX_PLACEMENT_BYTES", "Placement", "PlacedBlock", "layer_nodes", "graph_digest", "placement_header",
    "save_placement", "load_placement", "validate_placement", "as_placement",
]  # fmt: skip
