"""Graph <-> JSON + arrays, and the ``.snn`` artifact container.

A ``.snn`` file is a zip archive holding exactly two members:

* ``manifest.json``: ``{"format": "snnc-artifact", "format_version": 2, "snnc_version",
  "graphs": {name: graph-json}, "provenance": {...}, "weights": {"digest": "sha256:...",
  "arrays": {ref: {"dtype": "float32", "shape": [...]}}}}``;
* ``weights.npz``: every parameter as ``<graph>/<node>/<param>`` (numpy, no pickle).

**Trust model.** An artifact is untrusted input: the loader refuses (with an
:class:`~snnc.errors.ArtifactError`, never another exception) anything a file written by
:func:`save_artifact` cannot contain, before the work that could go wrong:

1. *container*, before anything is decompressed: the zip directory is at most
   :data:`MAX_ZIP_DIRECTORY` bytes; exactly the two members above; each stored or deflated,
   not encrypted; ``manifest.json`` at most :data:`MAX_MANIFEST_BYTES`; ``weights.npz`` at
   most :data:`MAX_WEIGHTS_BYTES` and, above :data:`RATIO_FLOOR` bytes, at most
   :data:`MAX_RATIO` times its compressed size;
2. *manifest*: its JSON nests at most :data:`MAX_JSON_DEPTH` levels (scanned before
   parsing), has no duplicate keys, and every field the loader reads has its type and range
   (a schema; errors name the field, e.g. ``graphs.snn.nodes[3].attrs.groups``). The
   provenance's ``timesteps`` is an integer in ``1..MAX_TIMESTEPS``;
3. *consistency*, before any weight is read: each node's op exists, its attributes are in
   range and its parameters' declared shapes fit them and its inputs
   (:meth:`~snnc.ir.ops.OpSpec.validate`), and its recorded output shape is the one its op
   computes (shapes re-inferred without allocating, :func:`~snnc.ir.verify.verify_consistency`);
4. *weights*: ``weights.npz`` holds exactly the arrays the graphs use, each ``.npy``
   header matching the shape and dtype (float32) the manifest declares, its size at most
   the declared bytes plus :data:`NPY_OVERHEAD` per array; arrays are read one at a time
   into buffers of their declared size, with no pickle and no object dtype; then the
   sha256 digest over every array (names, dtypes, shapes, bytes) must equal the manifest's,
   and every value must be finite;
5. the graphs pass the IR verifier (:func:`~snnc.ir.verify.verify`).

Peak memory when loading is therefore the graphs' parameter bytes (each array is held
once, plus 1 MiB read buffers) plus a constant bounded by the manifest limit; see
``tests/test_artifact_trust.py`` for the measured numbers. The digest detects corruption
and edits that did not also recompute it; it is not a signature (anyone can recompute a
sha256), so a deliberately modified artifact is caught only by the checks above: it can
compute something else, but cannot crash or exhaust snnc.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from snnc.errors import ArtifactError, VerificationError
from snnc.ir.graph import Graph, Node
from snnc.ir.verify import STAGES, verify, verify_consistency
from snnc.utils.io import atomic_write, check_zip_member, json_default, read_npy_header, unique_keys

FORMAT = "snnc-artifact"
# Version 2 added the ``weights`` table (declared shapes and the digest). Version 1 files
# are refused with the usual "re-run snnc convert" message: without the table their
# arrays cannot be bounded before they are read.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"

MAX_MANIFEST_BYTES = 16 << 20  # a 1,000-layer network's manifest is ~2 MB
MAX_JSON_DEPTH = 64  # a manifest written by snnc nests <= 8 levels (provenance records)
MAX_ZIP_DIRECTORY = 64 << 10  # the central directory of two members is ~200 bytes
# weights.npz's directory has one entry per array (RegNetX-400MF: 633 entries, 66,961 bytes): on top
# of MAX_ZIP_DIRECTORY it may take, per array the manifest lists, a 46-byte header, the
# array's name + ".npy" and 64 bytes of zip64 extras.
DIRECTORY_ENTRY_OVERHEAD = 46 + 4 + 64
MAX_WEIGHTS_BYTES = 64 << 30  # 16 G float32 parameters
MAX_RATIO = 100  # float32 weights deflate to >= ~85 % of their size (ratio < 1.2); see _check_members
RATIO_FLOOR = 1 << 20  # a member this small cannot be a bomb, whatever its ratio
NPY_OVERHEAD = 4096  # bytes per array in weights.npz beyond its data: .npy header + zip headers
MAX_TIMESTEPS = 100_000  # a stored default T beyond this is not a conversion snnc made
MAX_RANK = 8
MAX_DIM = 2**31 - 1
_READ_CHUNK = 1 << 20  # reads (and zipfile's forward seeks) go by 1 MiB: no large transient copies
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_READ_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError, struct.error, OverflowError,
)  # fmt: skip


# ------------------------------------------------------------------ writing
def graph_to_json(graph: Graph, prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    nodes = []
    for n in graph.nodes:
        params = {}
        for key, arr in n.params.items():
            ref = f"{prefix}/{n.name}/{key}"
            arrays[ref] = arr
            params[key] = ref
        nodes.append(
            {
                "name": n.name,
                "op": n.op,
                "inputs": [v.name for v in n.inputs],
                "attrs": n.attrs,
                "params": params,
                "shape": list(n.output.shape) if n.output.shape is not None else None,
            }
        )
    return {
        "name": graph.name,
        "stage": graph.stage,
        "inputs": [{"name": v.name, "shape": list(v.shape)} for v in graph.inputs],
        "outputs": [v.name for v in graph.outputs],
        "nodes": nodes,
        "meta": graph.meta,
    }


def weights_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """``sha256:<hex>`` over every array in name order: its name, dtype, shape and bytes
    (C order), each record length-prefixed. Stored at save, checked at load."""
    h = hashlib.sha256(b"snnc-weights-v1\0")
    for ref in sorted(arrays):
        a = np.ascontiguousarray(arrays[ref])
        head = json.dumps([ref, a.dtype.str, list(a.shape)]).encode()
        h.update(len(head).to_bytes(8, "little") + head)
        h.update(a.reshape(-1).view(np.uint8))
    return "sha256:" + h.hexdigest()


def save_artifact(path: str | os.PathLike, graphs: dict[str, Graph], provenance: dict[str, Any]) -> None:
    """Write graphs + provenance atomically to ``path`` (refused: non-float32 or non-finite
    parameters, which no loader would accept)."""
    from snnc import __version__

    arrays: dict[str, np.ndarray] = {}
    docs = {name: graph_to_json(g, name, arrays) for name, g in graphs.items()}
    for ref, arr in arrays.items():
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
            raise ArtifactError(f"cannot save parameter {ref!r}: it must be a float32 array")
        if not np.isfinite(arr).all():
            raise ArtifactError(f"cannot save parameter {ref!r}: it has NaN or infinite values")
    arrays = {ref: np.ascontiguousarray(a, dtype="<f4") for ref, a in arrays.items()}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "snnc_version": __version__,
        "graphs": docs,
        "provenance": provenance,
        "weights": {
            "digest": weights_digest(arrays),
            "arrays": {ref: {"dtype": "float32", "shape": list(a.shape)} for ref, a in arrays.items()},
        },
    }
    wbuf = io.BytesIO()
    # Stored, not deflated: float32 weights deflate to ~93 % of their size (the Br35H
    # ResNet-18's 44.7 MB), and deflating them took 12 s of a ResNet-18 conversion.
    np.savez(wbuf, **arrays)
    text = json.dumps(manifest, indent=1, default=json_default)
    if len(text.encode()) > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"cannot save: the manifest would exceed {MAX_MANIFEST_BYTES >> 20} MiB (provenance too large)")
    with atomic_write(path, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(MANIFEST, text)
            zf.writestr(WEIGHTS, wbuf.getvalue(), compress_type=zipfile.ZIP_STORED)  # read in place, no re-decompression


# ------------------------------------------------------------------ reading
class _Corrupt(Exception):
    """Internal: the artifact is inconsistent (``str`` is the detail)."""


def load_artifact(path: str | os.PathLike) -> tuple[dict[str, Graph], dict[str, Any]]:
    """Read a ``.snn`` file; returns ``(graphs, manifest)``. Every problem is an
    ArtifactError (see the module docstring for what is checked)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ArtifactError(f"an artifact is given by its path (a str or os.PathLike), got {type(path).__name__}")
    path = Path(path)
    name = str(path)
    try:
        st = path.stat()
    except OSError:
        raise ArtifactError(f"artifact {name!r} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactError(f"artifact {name!r} is not a regular file")
    try:
        with open(path, "rb") as fh:
            return _load(fh, st.st_size, name)
    except _Corrupt as e:
        raise ArtifactError(f"the artifact {name!r} is corrupt or was modified: {e}; re-create it with `snnc convert`") from None
    except PermissionError as e:
        raise ArtifactError(f"cannot read artifact {name!r}: {e.strerror}") from None
    except _READ_ERRORS as e:
        raise ArtifactError(f"{name!r} is not a snnc artifact ({_one_line(e)}); create one with `snnc convert`") from None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _load(fh, size: int, name: str) -> tuple[dict[str, Graph], dict[str, Any]]:
    _check_zip_directory(fh, size, 2, "the file")
    with zipfile.ZipFile(fh) as zf:
        _check_members(zf, size)
        try:
            manifest = _read_manifest(zf, name)
        except _READ_ERRORS as e:  # a zip that opens but whose member does not read back
            raise _Corrupt(f"{MANIFEST} cannot be read ({_one_line(e)})") from None
        table = _check_manifest(manifest, name)
        graphs = {}
        refs: dict[str, tuple[str, Node, str]] = {}  # ref -> (graph, node, param)
        for gname, doc in manifest["graphs"].items():
            graphs[gname] = _graph_from_doc(doc, table, f"graphs.{gname}", refs, gname)
        unused = sorted(set(table) - set(refs))
        if unused:
            raise _Corrupt(f"weights.arrays lists {len(unused)} array(s) no node uses (first: {unused[0]!r})")
        try:
            arrays = _read_weights(zf, table)
        except _READ_ERRORS as e:
            raise _Corrupt(f"{WEIGHTS} cannot be read ({_one_line(e)})") from None
    if weights_digest(arrays) != manifest["weights"]["digest"]:
        raise _Corrupt("weights digest mismatch (the weights are not the ones the artifact was saved with)")
    for ref, (_, n, k) in refs.items():
        n.params[k] = arrays[ref]
    for gname, g in graphs.items():
        try:
            verify(g)
        except VerificationError as e:
            raise _Corrupt(f"graph {gname!r}: {e}") from None
    return graphs, manifest


def _check_zip_directory(fh, size: int, max_entries: int, what: str, extra_bytes: int = 0) -> None:
    """Read the zip's end-of-directory record (zip64 too) and refuse a directory with more
    than ``max_entries`` entries or larger than MAX_ZIP_DIRECTORY + ``extra_bytes``, before zipfile
    parses (and holds in memory) the whole directory."""
    tail_len = min(size, 22 + 0xFFFF)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or len(tail) - i < 22:
        raise zipfile.BadZipFile(f"{what} is not a zip archive")
    _, _, _, _, entries, cd_size, cd_offset, _ = struct.unpack("<4s4H2LH", tail[i : i + 22])
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:  # zip64
        loc = size - tail_len + i - 20
        if loc < 0:
            raise zipfile.BadZipFile(f"{what}: zip64 directory locator missing")
        fh.seek(loc)
        sig, _, rec_offset, _ = struct.unpack("<4sLQL", fh.read(20))
        if sig != b"PK\x06\x07" or rec_offset > size - 56:
            raise zipfile.BadZipFile(f"{what}: bad zip64 directory locator")
        fh.seek(rec_offset)
        rec = fh.read(56)
        if len(rec) < 56 or rec[:4] != b"PK\x06\x06":
            raise zipfile.BadZipFile(f"{what}: bad zip64 directory record")
        entries, cd_size = struct.unpack("<QQ", rec[32:48])
    limit = MAX_ZIP_DIRECTORY + extra_bytes
    if entries > max_entries or cd_size > limit:
        raise _Corrupt(f"{what}'s zip directory lists {entries} entries in {cd_size:,} bytes (at most {max_entries} entries, {limit:,} bytes)")


def _check_member_kind(info: zipfile.ZipInfo, what: str) -> None:
    try:
        check_zip_member(info, what)
    except ValueError as e:
        raise _Corrupt(str(e)) from None


def _check_members(zf: zipfile.ZipFile, size: int) -> None:
    """The outer zip holds manifest.json and weights.npz, within the size and ratio limits.

    Why MAX_RATIO = 100: weights.npz is float32 arrays, which deflate barely at all
    (ratio < 1.2 for trained weights; ~2-5 for a small model whose .npy headers dominate;
    a 90 %-pruned network stays under ~10). Deflate reaches ~1000 on zeros, so a bomb's
    ratio is far above any artifact snnc writes; beyond 100 the file is refused before
    a byte is decompressed, so memory is also bounded by 100 x the file's size."""
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if sorted(names) != sorted([MANIFEST, WEIGHTS]):
        shown = ", ".join(repr(n[:60]) for n in names[:4]) + (", ..." if len(names) > 4 else "")
        raise _Corrupt(f"it must hold exactly {MANIFEST} and {WEIGHTS}, holds {shown or 'nothing'}")
    for info in infos:
        _check_member_kind(info, info.filename)
        if info.header_offset + info.compress_size > size:
            raise _Corrupt(f"{info.filename} extends past the end of the file (truncated)")
    m, w = zf.getinfo(MANIFEST), zf.getinfo(WEIGHTS)
    if m.file_size > MAX_MANIFEST_BYTES:
        raise _Corrupt(f"{MANIFEST} is {m.file_size:,} bytes; the limit is {MAX_MANIFEST_BYTES:,}")
    if w.file_size > MAX_WEIGHTS_BYTES:
        raise _Corrupt(f"{WEIGHTS} is {w.file_size:,} bytes; the limit is {MAX_WEIGHTS_BYTES:,}")
    if w.file_size > RATIO_FLOOR and w.file_size > MAX_RATIO * w.compress_size:
        raise _Corrupt(
            f"{WEIGHTS} would decompress {w.file_size / max(1, w.compress_size):,.0f}x ({w.compress_size:,} -> {w.file_size:,} bytes); "
            f"float32 weights compress < 2x and the limit is {MAX_RATIO}x (a zip bomb?)"
        )


def _read_manifest(zf: zipfile.ZipFile, name: str) -> Any:
    with zf.open(MANIFEST) as f:
        data = f.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:  # pragma: no cover - file_size was checked; zipfile caps reads at it
        raise _Corrupt(f"{MANIFEST} exceeds {MAX_MANIFEST_BYTES:,} bytes")
    depth = _json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise _Corrupt(f"{MANIFEST} nests {depth} levels deep; the limit is {MAX_JSON_DEPTH}")
    try:
        return json.loads(data, object_pairs_hook=unique_keys)
    except RecursionError:  # pragma: no cover - the depth scan comes first
        raise _Corrupt(f"{MANIFEST} nests too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, duplicate keys, huge integers
        raise _Corrupt(f"{MANIFEST} is not valid JSON ({_one_line(e)})") from None


# Possessive quantifiers: each byte is consumed one way, so both scans are linear.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_JSON_TEXT = re.compile(rb'(?:"(?:[^"\\]++|\\.)*+"|[^"]++)*+', re.DOTALL)


def _json_depth(data: bytes) -> int:
    """The deepest nesting of ``[`` / ``{`` in a JSON text (strings skipped), without
    parsing it: linear time, memory a copy of the text plus 1 MiB blocks."""
    if _JSON_TEXT.fullmatch(data) is None:
        raise _Corrupt(f"{MANIFEST} is not valid JSON (an unterminated string)")
    skeleton = _JSON_STRING.sub(b"", data)
    depth = level = 0
    block = 1 << 20
    for start in range(0, len(skeleton), block):
        a = np.frombuffer(skeleton, dtype=np.uint8, count=min(block, len(skeleton) - start), offset=start)
        step = (a == ord("[")).astype(np.int32) + (a == ord("{")) - (a == ord("]")) - (a == ord("}"))
        levels = np.cumsum(step) + level
        depth, level = max(depth, int(levels.max())), int(levels[-1])
    return depth


# ------------------------------------------------------------------ schema
def _type_name(v: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null", int: "an integer", float: "a number"}
    return names.get(type(v), type(v).__name__)


def _expect(cond: bool, where: str, what: str, v: Any) -> None:
    if not cond:
        shown = repr(v) if isinstance(v, (int, float, bool, type(None))) or (isinstance(v, str) and len(v) <= 40) else _type_name(v)
        raise _Corrupt(f"{where}: expected {what}, got {shown}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _obj(v: Any, where: str) -> dict[str, Any]:
    _expect(isinstance(v, dict), where, "an object", v)
    return v


def _str(v: Any, where: str, *, empty: bool = True) -> str:
    _expect(isinstance(v, str) and (empty or v != "") and len(v) <= 4096, where, "a string" if empty else "a non-empty string", v)
    return v


def _int(v: Any, where: str, lo: int, hi: int) -> int:
    _expect(_is_int(v) and lo <= v <= hi, where, f"an integer from {lo} to {hi:,}", v)
    return v


def _shape(v: Any, where: str, lo: int) -> tuple[int, ...]:
    _expect(isinstance(v, list) and len(v) <= MAX_RANK, where, f"a list of at most {MAX_RANK} sizes", v)
    for i, d in enumerate(v):
        _expect(_is_int(d) and lo <= d <= MAX_DIM, f"{where}[{i}]", "a positive integer" if lo else "an integer >= 0", d)
    return tuple(v)


def _str_list(v: Any, where: str) -> list[str]:
    _expect(isinstance(v, list), where, "a list of strings", v)
    for i, s in enumerate(v):
        _str(s, f"{where}[{i}]")
    return v


def _check_manifest(manifest: Any, name: str) -> dict[str, tuple[int, ...]]:
    """Check the manifest's schema; returns the weights table (ref -> declared shape)."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        if isinstance(manifest, dict):
            what = f"format {str(manifest.get('format'))[:40]!r}"
        else:
            what = f"its {MANIFEST} is {_type_name(manifest)}, not an object"
        raise ArtifactError(f"{name!r} is not a snnc artifact ({what}); create one with `snnc convert`")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or not _is_int(version):
        shown = version if _is_int(version) else repr(version)[:40]
        raise ArtifactError(
            f"{name!r} uses artifact format version {shown}; this snnc reads version {FORMAT_VERSION}. "
            "Re-run `snnc convert` with this snnc, or install the snnc version that wrote it "
            f"({str(manifest.get('snnc_version'))[:40]})."
        )
    if "snnc_version" in manifest:
        _str(manifest["snnc_version"], "snnc_version")
    graphs = _obj(manifest.get("graphs"), "graphs")
    _expect(len(graphs) > 0, "graphs", "at least one graph", graphs)
    for name, doc in graphs.items():
        _str(name, "graphs (a name)", empty=False)
        _obj(doc, f"graphs.{name}")
    if "provenance" in manifest:
        _check_provenance(_obj(manifest["provenance"], "provenance"))
    weights = _obj(manifest.get("weights"), "weights")
    digest = weights.get("digest")
    _expect(isinstance(digest, str) and _DIGEST.fullmatch(digest) is not None, "weights.digest", "'sha256:' and 64 hex digits", digest)
    table = {}
    total = 0
    for ref, entry in _obj(weights.get("arrays"), "weights.arrays").items():
        where = f"weights.arrays[{ref[:80]!r}]"
        _str(ref, where, empty=False)
        entry = _obj(entry, where)
        _expect(entry.get("dtype") == "float32", f"{where}.dtype", "'float32'", entry.get("dtype"))
        table[ref] = _shape(entry.get("shape"), f"{where}.shape", 0)
        total += 4 * math.prod(table[ref])
    if total > MAX_WEIGHTS_BYTES:
        raise _Corrupt(f"weights.arrays declares {total:,} bytes of parameters; the limit is {MAX_WEIGHTS_BYTES:,}")
    return table


_PROVENANCE_TYPES: dict[str, tuple[type, ...]] = {
    "pipeline": (str,), "calibration": (str,), "created": (str,), "source": (dict,), "import_check": (dict,),
    "conversion_check": (dict,), "records": (dict,), "ann_names": (dict,), "recalibrated": (dict,), "passes": (list,),
    "notices": (list,), "calibration_samples": (int,), "seed": (int,), "convert_seconds": (int, float),
}  # fmt: skip
# Fields its readers take as absent when null (``prov.get(key) or {}``); the others must not be.
_PROVENANCE_NULLABLE = {
    "import_check", "conversion_check", "records", "ann_names", "recalibrated", "pipeline", "calibration", "calibration_samples", "seed", "created",
}  # fmt: skip


def _number(v: Any, where: str) -> float:
    _expect(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), where, "a finite number", v)
    return v


def _check_record(key: str, rec: Any) -> None:
    """A pass's record in ``provenance.records`` as the summary, the report and ``snnc
    calibrate`` read it: balance-thresholds' per-layer statistics, the calibration passes'
    per-layer SNN - ANN errors before and after."""
    where = f"provenance.records.{key[:80]}"
    rec = _obj(rec, where)
    if key.startswith("balance-thresholds"):
        if "method" in rec:
            _str(rec["method"], f"{where}.method")
        for layer, stats in _obj(rec.get("layers") or {}, f"{where}.layers").items():
            for field, v in _obj(stats, f"{where}.layers.{layer[:80]}").items():
                if v is not None:
                    _number(v, f"{where}.layers.{layer[:80]}.{field}")
    elif key.startswith("calibrate-"):
        _int(rec.get("timesteps"), f"{where}.timesteps", 1, MAX_TIMESTEPS)
        _int(rec.get("samples"), f"{where}.samples", 0, MAX_DIM)
        _number(rec.get("seconds"), f"{where}.seconds")
        layers = rec.get("layers")
        _expect(isinstance(layers, list), f"{where}.layers", "a list", layers)
        for i, layer in enumerate(layers):
            lw = f"{where}.layers[{i}]"
            _str(_obj(layer, lw).get("layer"), f"{lw}.layer")
            for side in ("before", "after"):
                stats = _obj(layer.get(side), f"{lw}.{side}")
                for field in ("mean", "rms"):
                    _number(stats.get(field), f"{lw}.{side}.{field}")


def _check_provenance(prov: dict[str, Any]) -> None:
    """The provenance fields snnc reads, by type (unknown fields are kept unread)."""
    if "timesteps" in prov:
        _int(prov["timesteps"], "provenance.timesteps", 1, MAX_TIMESTEPS)
    for key, types in _PROVENANCE_TYPES.items():
        if key in prov and not (prov[key] is None and key in _PROVENANCE_NULLABLE):
            v = prov[key]
            _expect(isinstance(v, types) and not isinstance(v, bool), f"provenance.{key}", " or ".join(_type_name(t()) for t in types), v)
    _str_list(prov.get("notices") or [], "provenance.notices")
    for i, rec in enumerate(prov.get("passes") or []):
        _str(_obj(rec, f"provenance.passes[{i}]").get("name"), f"provenance.passes[{i}].name")
    for k, v in (prov.get("ann_names") or {}).items():
        _str(v, f"provenance.ann_names.{k}")
    for key in ("conversion_check", "recalibrated"):
        sub = prov.get(key) or {}
        for field in ("timesteps", "from_timesteps"):
            if field in sub:
                _int(sub[field], f"provenance.{key}.{field}", 1, MAX_TIMESTEPS)
    for i, rec in enumerate(prov.get("passes") or []):
        for field in ("changed",):
            if field in rec:
                _expect(isinstance(rec[field], bool), f"provenance.passes[{i}].{field}", "true or false", rec[field])
        if "seconds" in rec:
            _number(rec["seconds"], f"provenance.passes[{i}].seconds")
    for key, rec in (prov.get("records") or {}).items():
        _check_record(key, rec)
    cc = prov.get("conversion_check") or {}
    if "samples" in cc:
        _int(cc["samples"], "provenance.conversion_check.samples", 0, MAX_DIM)
    for k, v in _obj(cc.get("spike_rates") or {}, "provenance.conversion_check.spike_rates").items():
        number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        _expect(number, f"provenance.conversion_check.spike_rates.{k}", "a number", v)


def _check_meta(meta: Any, where: str) -> dict[str, Any]:
    meta = _obj(meta, where)
    for key in ("notices", "output_sources"):
        if key in meta:
            _str_list(meta[key], f"{where}.{key}")
    if "source" in meta:
        _obj(meta["source"], f"{where}.source")
    return meta


def _graph_from_doc(
    doc: Any, table: Mapping[str, tuple[int, ...]], where: str, refs: dict[str, tuple[str, Node, str]], gname: str
) -> Graph:
    """Check a graph description's schema and consistency and build it with shape-only
    placeholder parameters (zero-stride views: nothing allocated) under ``refs``."""
    from snnc.ir.ops import all_ops

    doc = _obj(doc, where)
    ops = all_ops()
    stage = doc.get("stage")
    _expect(stage in STAGES and isinstance(stage, str), f"{where}.stage", " or ".join(map(repr, STAGES)), stage)
    g = Graph(_str(doc.get("name"), f"{where}.name"), stage)
    g.meta = dict(_check_meta(doc.get("meta", {}), f"{where}.meta"))
    env = {}
    inputs = doc.get("inputs")
    _expect(isinstance(inputs, list) and len(inputs) > 0, f"{where}.inputs", "a non-empty list", inputs)
    for i, inp in enumerate(inputs):
        w = f"{where}.inputs[{i}]"
        inp = _obj(inp, w)
        name = _str(inp.get("name"), f"{w}.name", empty=False)
        _expect(name not in env, f"{w}.name", "a name not used before", name)
        env[name] = g.add_input(name, _shape(inp.get("shape"), f"{w}.shape", 1))
    nodes = doc.get("nodes")
    _expect(isinstance(nodes, list), f"{where}.nodes", "a list", nodes)
    for i, nd in enumerate(nodes):
        w = f"{where}.nodes[{i}]"
        nd = _obj(nd, w)
        name = _str(nd.get("name"), f"{w}.name", empty=False)
        _expect(name not in env, f"{w}.name", "a name not used before", name)
        op = _str(nd.get("op"), f"{w}.op")
        if op not in ops:
            raise _Corrupt(f"{w}.op: unknown op {op[:60]!r} (node {name!r})")
        ins = nd.get("inputs")
        _expect(isinstance(ins, list), f"{w}.inputs", "a list of value names", ins)
        values = []
        for j, v in enumerate(ins):
            _expect(isinstance(v, str) and v in env, f"{w}.inputs[{j}]", "the name of a graph input or an earlier node", v)
            values.append(env[v])
        attrs = _obj(nd.get("attrs", {}), f"{w}.attrs")
        params = _obj(nd.get("params", {}), f"{w}.params")
        for key, ref in params.items():
            _expect(isinstance(ref, str) and ref in table, f"{w}.params.{key}", "the name of an array in weights.arrays", ref)
            if ref in refs:
                raise _Corrupt(f"{w}.params.{key}: array {ref!r} is already used by node {refs[ref][1].name!r}")
        node = g.add_node(op, values, attrs, None, name, shape=_shape(nd.get("shape"), f"{w}.shape", 1))
        for key, ref in params.items():
            node.params[key] = np.broadcast_to(np.float32(0), table[ref])
            refs[ref] = (gname, node, key)
        env[name] = node.output
    outs = doc.get("outputs")
    _expect(isinstance(outs, list) and len(outs) > 0, f"{where}.outputs", "a non-empty list of value names", outs)
    for j, o in enumerate(outs):
        _expect(isinstance(o, str) and o in env, f"{where}.outputs[{j}]", "the name of a graph input or node", o)
    g.set_outputs(env[o] for o in outs)
    try:
        verify_consistency(g)
    except VerificationError as e:
        raise _Corrupt(f"{where}: {e}") from None
    return g


class _Slice:
    """Bytes ``[start, start + size)`` of an open file as a seekable file object: a stored
    member read in place (seeking is free, unlike in zipfile's member streams)."""

    def __init__(self, fh, start: int, size: int):
        self._fh, self._start, self._size, self._pos = fh, start, size, 0

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        pos = (offset, self._pos + offset, self._size + offset)[whence]
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def read(self, n: int | None = -1) -> bytes:
        n = self._size - self._pos if n is None or n < 0 else min(n, self._size - self._pos)
        if n <= 0:
            return b""
        self._fh.seek(self._start + self._pos)
        data = self._fh.read(n)
        self._pos += len(data)
        return data

    def close(self) -> None:
        pass


def _member_stream(zf: zipfile.ZipFile, info: zipfile.ZipInfo):
    """A seekable stream of a member: the bytes in place when stored, else zipfile's
    decompressing stream (whose backward seeks decompress again from the start)."""
    if info.compress_type == zipfile.ZIP_STORED:
        fh = zf.fp
        fh.seek(info.header_offset)
        head = fh.read(30)
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"bad local header for {info.filename}")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        return _Slice(fh, info.header_offset + 30 + name_len + extra_len, info.file_size)
    stream = zf.open(info)
    stream.MAX_SEEK_READ = _READ_CHUNK  # it seeks forward by reading 16 MiB blocks otherwise
    return stream


def _read_weights(zf: zipfile.ZipFile, table: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The arrays of ``table`` from weights.npz, each checked against its declared shape
    before it is read; nothing else in the file is decompressed into memory."""
    info = zf.getinfo(WEIGHTS)
    declared = sum(4 * math.prod(s) for s in table.values())
    # deflate can grow incompressible data by ~0.01 %; headers take < NPY_OVERHEAD per array
    allowed = declared + declared // 1000 + NPY_OVERHEAD * len(table) + 2 * sum(len(r.encode()) for r in table) + 1024
    if info.file_size > allowed:
        raise _Corrupt(
            f"{WEIGHTS} holds {info.file_size:,} bytes; the {len(table)} arrays the graphs use take {declared:,} (data no node uses?)"
        )
    want = {ref + ".npy": ref for ref in table}
    arrays: dict[str, np.ndarray] = {}
    stream = _member_stream(zf, info)
    try:
        directory_names = sum(DIRECTORY_ENTRY_OVERHEAD + len(k.encode("utf-8")) for k in table)
        _check_zip_directory(stream, info.file_size, len(table), WEIGHTS, directory_names)
        with zipfile.ZipFile(stream) as inner:
            infos = inner.infolist()
            names = [i.filename for i in infos]
            if len(set(names)) != len(names) or set(names) != set(want):
                missing = sorted(set(want) - set(names))
                detail = f"lacks array {want[missing[0]]!r}" if missing else "holds arrays the graphs do not use, or duplicates"
                raise _Corrupt(f"{WEIGHTS} {detail}")
            for zi in infos:
                _check_member_kind(zi, f"array {want[zi.filename]!r}")
                if zi.header_offset + zi.compress_size > info.file_size:
                    raise _Corrupt(f"array {want[zi.filename]!r} extends past the end of {WEIGHTS}")
            raw = sum(zi.file_size for zi in infos)
            packed = min(info.file_size, sum(zi.compress_size for zi in infos))  # members may not overlap to inflate it
            if raw > RATIO_FLOOR and raw > MAX_RATIO * packed:
                raise _Corrupt(
                    f"the arrays in {WEIGHTS} would decompress {raw / max(1, packed):,.0f}x ({packed:,} -> {raw:,} bytes); "
                    f"float32 weights compress < 2x and the limit is {MAX_RATIO}x (a zip bomb?)"
                )
            for zi in sorted(infos, key=lambda z: z.header_offset):  # in file order: no re-decompression
                ref = want[zi.filename]
                arrays[ref] = _read_array(inner, zi, ref, table[ref])
    finally:
        stream.close()
    return arrays


def _read_array(inner: zipfile.ZipFile, zi: zipfile.ZipInfo, ref: str, shape: tuple[int, ...]) -> np.ndarray:
    what = f"array {ref!r}"  # its member kind was checked by _read_weights
    nbytes = 4 * math.prod(shape)
    if zi.file_size > nbytes + NPY_OVERHEAD or zi.file_size < nbytes:
        raise _Corrupt(f"{what} is {zi.file_size:,} bytes in {WEIGHTS}; its declared shape {list(shape)} needs {nbytes:,} plus a header")
    with inner.open(zi) as f:
        try:
            hshape, fortran, dtype = read_npy_header(f, what)
        except ValueError as e:
            raise _Corrupt(str(e)) from None
        if dtype != np.dtype("<f4") or tuple(hshape) != shape:
            raise _Corrupt(f"{what} is {dtype} {list(hshape)} in {WEIGHTS}; the manifest declares float32 {list(shape)}")
        if zi.file_size != f.tell() + nbytes:
            raise _Corrupt(f"{what}'s member holds {zi.file_size - f.tell():,} data bytes; shape {list(shape)} needs {nbytes:,}")
        flat = np.empty(math.prod(shape), dtype="<f4")
        buf = memoryview(flat).cast("B")
        pos = 0
        while pos < nbytes:
            chunk = f.read(min(_READ_CHUNK, nbytes - pos))
            if not chunk:
                raise _Corrupt(f"{what} is truncated")
            buf[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
    if fortran:
        return np.ascontiguousarray(flat.reshape(shape, order="F"))
    return flat.reshape(shape)
