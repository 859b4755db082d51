"""Seeded mutants of a ``.snn`` artifact, and the outcome of loading and running one.

>>> base = Path("tiny.snn").read_bytes()
>>> for desc, data in mutants(seed=0, n=200, base=base):
...     path.write_bytes(data)
...     outcome = classify(path)        # "loaded", "refused:ArtifactError", "crash:KeyError", ...

The promise under test (issue 15): whatever the bytes, :func:`snnc.load` and, when it
loads, ``model.run`` end in success or an :class:`~snnc.errors.SnncError`, quickly and in
bounded memory. Mutant ``i`` of a seed depends on ``(seed, i)`` and the base only, so any
one can be regenerated alone (:func:`mutant`). The mutation families:

* ``json:*``: the manifest's values (types, numbers, strings, deletions, duplicates, deep
  nesting, the whole document), node attributes, op names, shapes, the stored T, the
  weights table; and its raw text (truncation, garbage, invalid UTF-8, duplicate keys);
* ``npz:*``: the arrays (values incl. NaN/inf, bytes, dtypes incl. pickled objects,
  shapes, extra / missing / renamed arrays, inner compression), each either left as is or
  *resealed* (the manifest's table and digest recomputed, as a deliberate tamperer would),
  so that the consistency checks behind the digest are reached too;
* ``zip:*``: the container (truncation, bit flips, member names, extra / missing /
  duplicate members, compression method and flag fields, stored members, zip bombs).
"""

from __future__ import annotations

import copy
import io
import json
import math
import random
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
RUN_TIMESTEPS = 4  # a loaded mutant runs this many steps (or its stored T when smaller)
RUN_MAX_ELEMENTS = 1 << 20  # ... on two samples, unless one is larger than this


# ------------------------------------------------------------------ outcome
def classify(path: str | Path, *, run: bool = True) -> str:
    """``"loaded"`` (loaded and, with ``run``, ran two samples), ``"refused:<ErrorClass>"``
    (an :class:`~snnc.errors.SnncError`) or ``"crash:<ExceptionClass>"`` (anything else:
    a bug). KeyboardInterrupt propagates."""
    import snnc
    from snnc.errors import SnncError

    try:
        model = snnc.load(path)
        if run:
            shape = model.snn.inputs[0].shape
            if math.prod(shape) <= RUN_MAX_ELEMENTS:
                x = np.random.default_rng(0).uniform(0, 1, (2, *shape)).astype(np.float32)
                y = model.run(x, min(RUN_TIMESTEPS, model.timesteps))
                if not isinstance(y, np.ndarray):
                    return f"crash:run returned {type(y).__name__}"
        return "loaded"
    except SnncError as e:
        return f"refused:{type(e).__name__}"
    except Exception as e:  # noqa: BLE001 - the point: anything else is a crash
        return f"crash:{type(e).__name__}"


# ------------------------------------------------------------------ the base
def base_artifact(path: str | Path) -> Path:
    """Write the fuzz's base artifact to ``path``: a small converted CNN (conv, BatchNorm,
    ReLU, MaxPool, grouped conv, AvgPool, flatten, linear) whose artifact holds the snn,
    ann and ann_reference graphs."""
    import torch
    from torch import nn

    import snnc

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 3),
    ).eval()  # fmt: skip
    x = np.random.default_rng(0).uniform(0, 1, (16, 1, 8, 8)).astype(np.float32)
    snnc.convert(net, x, timesteps=4, calibration="none").save(path)
    return Path(path)


class _Base:
    """The base artifact taken apart (it is trusted: snnc wrote it)."""

    def __init__(self, data: bytes):
        self.data = data
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            self.manifest_text = zf.read(MANIFEST)
            self.weights = zf.read(WEIGHTS)
        self.manifest = json.loads(self.manifest_text)
        with np.load(io.BytesIO(self.weights), allow_pickle=False) as z:
            self.arrays = {k: z[k] for k in z.files}
        self.nodes = [(g, i) for g, doc in self.manifest["graphs"].items() for i in range(len(doc["nodes"]))]
        self.attr_nodes = [(g, i) for g, i in self.nodes if self.manifest["graphs"][g]["nodes"][i]["attrs"]]
        self._bomb: bytes | None = None


_BASES: dict[int, _Base] = {}


def _base(data: bytes) -> _Base:
    key = hash(data)
    if key not in _BASES:
        _BASES.clear()
        _BASES[key] = _Base(data)
    return _BASES[key]


# Every zip member gets this timestamp, so a seed gives the same bytes whenever it runs
# (zipfile and np.savez stamp members with the current time otherwise).
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def _member(name: str, method: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = method
    return info


def _zip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in members:
            zf.writestr(_member(name, method), data)
    return buf.getvalue()


def _npz(arrays: dict[str, Any], compressed: bool = False) -> bytes:
    """An NPZ file as ``np.savez`` / ``np.savez_compressed`` writes it (object arrays
    pickled, as numpy does), with fixed member timestamps."""
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method, allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(_member(f"{key}.npy", method), "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=True)
    return buf.getvalue()


def _artifact(manifest: Any, weights: bytes, *, text: bytes | None = None) -> bytes:
    return _zip([(MANIFEST, text if text is not None else json.dumps(manifest).encode()), (WEIGHTS, weights)])


def _reseal(manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The manifest with its weights table and digest recomputed for ``arrays``."""
    from snnc.ir.serialize import weights_digest

    m = copy.deepcopy(manifest)
    m["weights"] = {
        "digest": weights_digest(arrays),
        "arrays": {k: {"dtype": "float32", "shape": list(np.shape(a))} for k, a in arrays.items()},
    }
    return m


# ------------------------------------------------------------------ JSON helpers
def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) to a value in ``doc``, the root excluded."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append(prefix + (k,))
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append(prefix + (i,))
            out.extend(_paths(v, prefix + (i,)))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for k in path:
        doc = doc[k]
    return doc


def _set(doc: Any, path: tuple, value: Any) -> None:
    _get(doc, path[:-1])[path[-1]] = value


def _show(path: tuple) -> str:
    return ".".join(str(p) for p in path)[-80:]


_ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2, 3, 7, 2**31, 2**63, -(2**31), 10**30, 0.5, -2.5, 1e308, float("nan"), float("inf"),
    "", "x", "conv", "snn", "../../etc/passwd", "\u00e9\u6f22", [], {}, [0], [1, 1], [-1, 2], [0, 0, 0, 0], [1, 1, 1, 1, 1],
    [[1]], {"a": 1}, [None], ["x"], [1.5, 2.5],
]  # fmt: skip


def _odd_value(rng: random.Random) -> Any:
    return copy.deepcopy(rng.choice(_ODD_VALUES))


def _tweak_number(rng: random.Random, v: float) -> Any:
    return rng.choice([v + 1, v - 1, -v, v * 2, v * 1000, 0, v + 0.5, float(v), int(v) if math.isfinite(v) else 0, 2**31 - 1, 2**40])


def _nested(depth: int, leaf: Any = 1) -> Any:
    out = leaf
    for _ in range(depth):
        out = [out]
    return out


# ------------------------------------------------------------------ mutations
Mutation = Callable[[random.Random, _Base], tuple[str, bytes]]


def _json_value(rng, b):
    m = copy.deepcopy(b.manifest)
    path = rng.choice(_paths(m))
    value = _odd_value(rng)
    _set(m, path, value)
    return f"json:value {_show(path)} = {value!r:.40}", _artifact(m, b.weights)


def _json_number(rng, b):
    m = copy.deepcopy(b.manifest)
    paths = [p for p in _paths(m) if isinstance(_get(m, p), (int, float)) and not isinstance(_get(m, p), bool)]
    path = rng.choice(paths)
    value = _tweak_number(rng, _get(m, path))
    _set(m, path, value)
    return f"json:number {_show(path)} = {value!r:.40}", _artifact(m, b.weights)


def _json_string(rng, b):
    m = copy.deepcopy(b.manifest)
    paths = [p for p in _paths(m) if isinstance(_get(m, p), str)]
    path = rng.choice(paths)
    old = _get(m, path)
    names = [n["name"] for doc in m["graphs"].values() for n in doc["nodes"]]
    value = rng.choice(["", old + "x", old[:-1], old.upper(), rng.choice(names), "\x00", "a" * 5000, "snn/" + old, 1])
    _set(m, path, value)
    return f"json:string {_show(path)} = {value!r:.40}", _artifact(m, b.weights)


def _json_delete(rng, b):
    m = copy.deepcopy(b.manifest)
    path = rng.choice(_paths(m))
    parent = _get(m, path[:-1])
    del parent[path[-1]]
    return f"json:delete {_show(path)}", _artifact(m, b.weights)


def _json_duplicate(rng, b):
    m = copy.deepcopy(b.manifest)
    lists = [p for p in _paths(m) if isinstance(_get(m, p), list) and _get(m, p)]
    path = rng.choice(lists)
    lst = _get(m, path)
    i = rng.randrange(len(lst))
    lst.insert(rng.randrange(len(lst) + 1), copy.deepcopy(lst[i]))
    return f"json:duplicate {_show(path)}[{i}]", _artifact(m, b.weights)


def _json_swap(rng, b):
    m = copy.deepcopy(b.manifest)
    lists = [p for p in _paths(m) if isinstance(_get(m, p), list) and len(_get(m, p)) > 1]
    path = rng.choice(lists)
    lst = _get(m, path)
    i, j = rng.sample(range(len(lst)), 2)
    lst[i], lst[j] = lst[j], lst[i]
    return f"json:swap {_show(path)}[{i}]<->[{j}]", _artifact(m, b.weights)


def _json_nest(rng, b):
    m = copy.deepcopy(b.manifest)
    path = rng.choice(_paths(m))
    depth = rng.choice([2, 10, 63, 65, 1000, 100_000])
    if depth >= 500:  # too deep for json.dumps: write the text by hand
        text = json.dumps(m).replace('"provenance": {', '"provenance": {"deep": ' + "[" * depth + "]" * depth + ", ", 1)
        return f"json:nest provenance.deep {depth} levels", _artifact(None, b.weights, text=text.encode())
    _set(m, path, _nested(depth, _get(m, path)))
    return f"json:nest {_show(path)} {depth} levels", _artifact(m, b.weights)


def _json_document(rng, b):
    doc = rng.choice([[], [b.manifest], "snnc-artifact", None, 1, 1.5, True, {}, {"format": "snnc-artifact"}])
    return f"json:document {type(doc).__name__}", _artifact(doc, b.weights)


def _json_text(rng, b):
    text = b.manifest_text
    kind = rng.choice(["truncate", "garbage", "utf8", "dupkey", "nan", "bigint", "empty", "bom"])
    if kind == "truncate":
        text = text[: rng.randrange(len(text))]
    elif kind == "garbage":
        i = rng.randrange(len(text))
        text = text[:i] + bytes([rng.randrange(256)]) + text[i:]
    elif kind == "utf8":
        i = text.index(b'"name"') + 9
        text = text[:i] + b"\xff\xfe" + text[i:]
    elif kind == "dupkey":
        text = text.replace(b'"format"', b'"format": "other", "format"', 1)
    elif kind == "nan":
        text = text.replace(b'"timesteps": ', b'"timesteps": NaN, "x": ', 1)
    elif kind == "bigint":
        text = text.replace(b'"timesteps": ', b'"timesteps": ' + b"9" * 5000 + b', "x": ', 1)
    elif kind == "empty":
        text = b""
    else:
        text = b"\xef\xbb\xbf" + text
    return f"json:text {kind}", _artifact(None, b.weights, text=text)


_BAD_ATTRS: list[Any] = [0, -1, 1, 2, 3, 5, 1000, 2**31, 1.5, "2", None, True, [], [0], [1], [0, 0], [-1, -1], [1, 1], [2, 2], [3, 3], [100, 100], [2**31, 1], [0, 0, 0, 0], [-1, 0, 0, 0], [50, 50, 50, 50], [1, 1, 1, 1, 1, 1], [8], [65], [4, 16], [2, 2, 2], "nearest", "zero", "bilinear", [[1.0], [0.5]], [1.0], [float("nan"), 1.0]]  # fmt: skip


def _json_attr(rng, b):
    m = copy.deepcopy(b.manifest)
    g, i = rng.choice(b.attr_nodes)
    node = m["graphs"][g]["nodes"][i]
    key = rng.choice(sorted(node["attrs"]) + ["groups", "bogus"])
    value = copy.deepcopy(rng.choice(_BAD_ATTRS))
    node["attrs"][key] = value
    return f"json:attr {g}.{node['name']}.{key} = {value!r:.40}", _artifact(m, b.weights)


def _json_op(rng, b):
    from snnc.ir.ops import all_ops

    m = copy.deepcopy(b.manifest)
    g, i = rng.choice(b.nodes)
    node = m["graphs"][g]["nodes"][i]
    node["op"] = rng.choice(sorted(all_ops()) + ["Conv", "bogus", ""])
    return f"json:op {g}.{node['name']} -> {node['op']}", _artifact(m, b.weights)


def _json_shape(rng, b):
    m = copy.deepcopy(b.manifest)
    g = rng.choice(sorted(m["graphs"]))
    doc = m["graphs"][g]
    targets = [("inputs", 0, "shape")] + [("nodes", i, "shape") for i in range(len(doc["nodes"]))]
    targets += [("nodes", i, "attrs", "shape") for i, n in enumerate(doc["nodes"]) if n["op"] == "reshape"]
    path = rng.choice(targets)
    shape = list(_get(doc, path))
    kind = rng.choice(["dim+1", "dim*2", "drop", "add", "zero", "huge", "swap"])
    if kind == "dim+1" and shape:
        shape[rng.randrange(len(shape))] += 1
    elif kind == "dim*2" and shape:
        shape[rng.randrange(len(shape))] *= 2
    elif kind == "drop" and shape:
        shape.pop()
    elif kind == "add":
        shape.append(1)
    elif kind == "zero" and shape:
        shape[0] = 0
    elif kind == "huge" and shape:
        shape[0] = rng.choice([2**31 - 1, 2**20, 10**12])
    elif kind == "swap" and len(shape) > 1:
        shape[0], shape[-1] = shape[-1], shape[0]
    _set(doc, path, shape)
    return f"json:shape {g}.{_show(path)} {kind} -> {shape}", _artifact(m, b.weights)


def _json_timesteps(rng, b):
    m = copy.deepcopy(b.manifest)
    value = rng.choice([0, -1, 1, 2, 10**9, 100_000, 100_001, "8", 8.5, None, True, [8], float("nan")])
    m.setdefault("provenance", {})["timesteps"] = value
    return f"json:timesteps {value!r}", _artifact(m, b.weights)


def _json_table(rng, b):
    m = copy.deepcopy(b.manifest)
    ref = rng.choice(sorted(m["weights"]["arrays"]))
    entry = m["weights"]["arrays"][ref]
    kind = rng.choice(["shape+1", "huge", "dtype", "drop", "extra", "digest"])
    if kind == "shape+1":
        entry["shape"] = list(entry["shape"]) + [1]
    elif kind == "huge":
        entry["shape"] = [100_000, 100_000]
    elif kind == "dtype":
        entry["dtype"] = rng.choice(["float64", "object", "<f4", None])
    elif kind == "drop":
        del m["weights"]["arrays"][ref]
    elif kind == "extra":
        m["weights"]["arrays"]["snn/ghost/weight"] = {"dtype": "float32", "shape": [4]}
    else:
        m["weights"]["digest"] = "sha256:" + "0" * 64
    return f"json:table {ref} {kind}", _artifact(m, b.weights)


def _arrays_variant(rng, b) -> tuple[str, dict[str, Any], bool]:
    arrays = {k: v.copy() for k, v in b.arrays.items()}
    ref = rng.choice(sorted(arrays))
    a = arrays[ref]
    kinds = ["nan", "inf", "scale", "zero", "bitflip", "dtype", "reshape", "grow", "shrink", "transpose", "extra", "missing", "rename", "scalar"]
    kind = rng.choice(kinds)
    if kind == "nan" and a.size:
        a.reshape(-1)[rng.randrange(a.size)] = np.nan
    elif kind == "inf" and a.size:
        a.reshape(-1)[rng.randrange(a.size)] = -np.inf
    elif kind == "scale":
        arrays[ref] = a * np.float32(rng.choice([-1.0, 0.5, 2.0, 1e30]))
    elif kind == "zero":
        arrays[ref] = np.zeros_like(a)
    elif kind == "bitflip" and a.size:
        raw = a.view(np.uint8).reshape(-1)
        raw[rng.randrange(raw.size)] ^= 1 << rng.randrange(8)
    elif kind == "dtype":
        dtype = rng.choice([np.float64, np.float16, np.int32, np.bool_, np.complex64, ">f4", object])
        arrays[ref] = a.astype(dtype)
    elif kind == "reshape" and a.size > 1:
        arrays[ref] = a.reshape(-1)
    elif kind == "grow":
        arrays[ref] = np.concatenate([a.reshape(-1), np.ones(rng.choice([1, 4, 100]), np.float32)])
    elif kind == "shrink" and a.size > 1:
        arrays[ref] = a.reshape(-1)[:-1]
    elif kind == "transpose" and a.ndim > 1:
        arrays[ref] = np.ascontiguousarray(a.T) if rng.random() < 0.5 else np.asfortranarray(a)
    elif kind == "extra":
        arrays["snn/ghost/weight"] = np.ones(rng.choice([4, 1000]), np.float32)
    elif kind == "missing":
        del arrays[ref]
    elif kind == "rename":
        arrays[ref + "_"] = arrays.pop(ref)
    elif kind == "scalar":
        arrays[ref] = np.float32(1.0)
    return f"{ref} {kind}", arrays, any(v.dtype == object for v in map(np.asarray, arrays.values()))


def _npz_arrays(rng, b):
    desc, arrays, pickled = _arrays_variant(rng, b)
    weights = _npz({k: np.asarray(v) for k, v in arrays.items()})  # object arrays are pickled: the loader must refuse them
    reseal = rng.random() < 0.5 and not pickled
    manifest = b.manifest
    if reseal:
        try:
            manifest = _reseal(b.manifest, {k: np.asarray(v) for k, v in arrays.items()})
        except (TypeError, ValueError):
            reseal = False
    return f"npz:{'resealed ' if reseal else ''}{desc}", _artifact(manifest, weights)


def _npz_container(rng, b):
    kind = rng.choice(["compressed", "method", "encrypted", "truncate", "bitflip", "dup", "notzip", "empty"])
    w = b.weights
    if kind == "compressed":
        w = _npz(b.arrays, compressed=True)
    elif kind == "method":
        w = _patch_headers(w, method=rng.choice([1, 12, 14, 93, 99]))
    elif kind == "encrypted":
        w = _patch_headers(w, flags=rng.choice([0x1, 0x20, 0x40]))
    elif kind == "truncate":
        w = w[: rng.randrange(len(w))]
    elif kind == "bitflip":
        w = _flip(rng, w, rng.choice([1, 4]))
    elif kind == "dup":
        name = rng.choice(sorted(b.arrays)) + ".npy"
        with zipfile.ZipFile(io.BytesIO(w)) as zf:
            members = [(i.filename, zf.read(i)) for i in zf.infolist()]
        members.append((name, zf_read(w, name)))
        w = _zip_quiet(members, zipfile.ZIP_STORED)
    elif kind == "notzip":
        w = b"\x93NUMPY" + w[6:]
    else:
        w = b""
    return f"npz:container {kind}", _artifact(b.manifest, w)


def zf_read(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.read(name)


def _zip_quiet(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        return _zip(members, method)


def _patch_headers(data: bytes, *, method: int | None = None, flags: int | None = None, which: int | None = None) -> bytes:
    """Set the compression method / general-purpose flags in every (or the ``which``-th)
    local and central header of a zip."""
    out = bytearray(data)
    for sig, m_off, f_off in ((b"PK\x03\x04", 8, 6), (b"PK\x01\x02", 10, 8)):
        pos, k = out.find(sig), 0
        while pos >= 0:
            if which is None or which == k:
                if method is not None:
                    struct.pack_into("<H", out, pos + m_off, method)
                if flags is not None:
                    struct.pack_into("<H", out, pos + f_off, struct.unpack_from("<H", out, pos + f_off)[0] | flags)
            pos, k = out.find(sig, pos + 4), k + 1
    return bytes(out)


def _flip(rng: random.Random, data: bytes, n: int) -> bytes:
    out = bytearray(data)
    for _ in range(n):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _zip_bytes(rng, b):
    kind = rng.choice(["truncate", "bitflip", "bitflips", "tail", "empty", "notzip", "prefix"])
    data = b.data
    if kind == "truncate":
        data = data[: rng.randrange(len(data))]
    elif kind == "bitflip":
        data = _flip(rng, data, 1)
    elif kind == "bitflips":
        data = _flip(rng, data, rng.choice([2, 8, 32]))
    elif kind == "tail":
        data = data[:-22] + _flip(rng, data[-22:], 2)
    elif kind == "empty":
        data = b""
    elif kind == "notzip":
        data = b"not a zip at all" * rng.choice([1, 100])
    else:
        data = b"junk" * 10 + data
    return f"zip:bytes {kind}", data


def _zip_members(rng, b):
    kind = rng.choice(["rename", "extra", "missing", "duplicate", "order", "stored", "dir", "traversal"])
    members = [(MANIFEST, b.manifest_text), (WEIGHTS, b.weights)]
    method = zipfile.ZIP_DEFLATED
    if kind == "rename":
        i = rng.randrange(2)
        members[i] = (members[i][0].upper(), members[i][1])
    elif kind == "extra":
        members.append((rng.choice(["extra.bin", "weights.npz/x", "manifest.json.bak"]), b"x" * rng.choice([1, 10_000])))
    elif kind == "missing":
        members.pop(rng.randrange(2))
    elif kind == "duplicate":
        members.append(members[rng.randrange(2)])
    elif kind == "order":
        members.reverse()
    elif kind == "stored":
        method = zipfile.ZIP_STORED
    elif kind == "dir":
        members.append(("dir/", b""))
    else:
        members[0] = ("../" + MANIFEST, members[0][1])
    return f"zip:members {kind}", _zip_quiet(members, method)


def _zip_headers(rng, b):
    which = rng.choice([None, 0, 1])
    if rng.random() < 0.5:
        method = rng.choice([0, 1, 12, 14, 93, 95, 99])
        return f"zip:method {method} member {which}", _patch_headers(b.data, method=method, which=which)
    flags = rng.choice([0x1, 0x8, 0x20, 0x40, 0x800, 0x2000])
    return f"zip:flags {flags:#x} member {which}", _patch_headers(b.data, flags=flags, which=which)


def _zip_bomb(rng, b):
    """weights.npz with 64 MiB of zeros (~64 KiB deflated): unreferenced, referenced by a
    resealed table, or as a huge stored member."""
    kind = rng.choice(["unused", "resealed", "manifest"])
    if kind == "manifest":
        text = b'{"format": "snnc-artifact", "pad": "' + b" " * (24 << 20) + b'"}'
        return "zip:bomb manifest 24 MiB", _artifact(None, b.weights, text=text)
    if b._bomb is None:
        arrays = dict(b.arrays)
        arrays["snn/bomb/weight"] = np.zeros(16 << 20, np.float32)
        b._bomb = _npz(arrays)
    if kind == "unused":
        return "zip:bomb unused 64 MiB array", _artifact(b.manifest, b._bomb)
    m = copy.deepcopy(b.manifest)
    m["weights"]["arrays"]["snn/bomb/weight"] = {"dtype": "float32", "shape": [16 << 20]}
    return "zip:bomb declared 64 MiB array", _artifact(m, b._bomb)


_FAMILIES: list[tuple[Mutation, int]] = [
    (_json_value, 6), (_json_number, 4), (_json_string, 3), (_json_delete, 4), (_json_duplicate, 2), (_json_swap, 2),
    (_json_nest, 2), (_json_document, 1), (_json_text, 3), (_json_attr, 8), (_json_op, 3), (_json_shape, 4),
    (_json_timesteps, 2), (_json_table, 3), (_npz_arrays, 8), (_npz_container, 3), (_zip_bytes, 5), (_zip_members, 3),
    (_zip_headers, 3), (_zip_bomb, 1),
]  # fmt: skip


def mutant(seed: int, index: int, base: bytes) -> tuple[str, bytes]:
    """Mutant ``index`` of ``seed``: ``(description, file bytes)``."""
    b = _base(base)
    rng = random.Random(f"snnc-artifact-fuzz:{seed}:{index}")
    family = rng.choices([f for f, _ in _FAMILIES], weights=[w for _, w in _FAMILIES])[0]
    desc, data = family(rng, b)
    return f"#{index} {desc}", data


def mutants(seed: int, n: int, base: bytes) -> Iterator[tuple[str, bytes]]:
    """``n`` seeded mutants of the artifact ``base`` (the bytes of a ``.snn`` file):
    ``(description, file bytes)``, reproducible from ``(seed, index)``."""
    for i in range(n):
        yield mutant(seed, i, base)


# ------------------------------------------------------------------ for golden tests
def rebuild(
    base: bytes,
    *,
    manifest: Callable[[dict[str, Any]], Any] | None = None,
    arrays: Callable[[dict[str, np.ndarray]], dict[str, Any]] | None = None,
    reseal: bool = False,
    method: int = zipfile.ZIP_DEFLATED,
) -> bytes:
    """The artifact ``base`` with its manifest and/or arrays edited: ``manifest(doc)`` and
    ``arrays(dict)`` edit copies in place or return replacements. With ``reseal`` the
    weights table and digest are recomputed after the edits (a deliberate tamperer)."""
    b = _base(base)
    doc = copy.deepcopy(b.manifest)
    arr = {k: v.copy() for k, v in b.arrays.items()}
    if arrays is not None:
        arr = arrays(arr) or arr
    if reseal:
        doc = _reseal(doc, {k: np.asarray(v) for k, v in arr.items()})
    if manifest is not None:
        out = manifest(doc)
        doc = doc if out is None else out
    weights = b.weights if arrays is None else _npz(arr)
    return _zip([(MANIFEST, json.dumps(doc).encode()), (WEIGHTS, weights)], method)


def patch_zip_headers(data: bytes, *, method: int | None = None, flags: int | None = None, which: int | None = None) -> bytes:
    """Set the compression method and/or OR in general-purpose flag bits in the local and
    central headers of every member (or of member ``which``)."""
    return _patch_headers(data, method=method, flags=flags, which=which)
