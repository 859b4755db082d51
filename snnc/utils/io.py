"""File helpers: atomic writes and NPZ data loading with clear errors."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import io
import json
import os
import secrets
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from snnc.errors import DataError
from snnc.utils import interrupts
from snnc.utils.paths import check_output_path, file_kind, temp_prefix  # noqa: F401  (check_output_path: re-exported)
from snnc.utils.validate import check_finite


def _read_umask() -> int:
    mask = os.umask(0o022)  # read once at import, before any threads write files
    os.umask(mask)
    return mask


_UMASK = _read_umask()
FILE_MODE = 0o666 & ~_UMASK  # the mode a plain open() gives a new file


def json_default(o: Any) -> Any:
    """``json.dumps(..., default=json_default)``: numpy scalars and arrays as Python values."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# Outputs staged by all_or_nothing(): (temporary file, destination), renamed together at its end.
_STAGED: contextvars.ContextVar[list[tuple[str, Path]] | None] = contextvars.ContextVar("snnc_staged_outputs", default=None)

_WRITE_HINTS = {
    errno.ENOSPC: "the disk is full; free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is exceeded; free some space or write elsewhere",
    errno.EFBIG: "the file is too large for this file system; write elsewhere",
    errno.EACCES: "permission denied; choose a location you can write to",
    errno.EPERM: "permission denied; choose a location you can write to",
    errno.EROFS: "the file system is read-only; choose another location",
    errno.ENAMETOOLONG: "the name is too long; use a shorter one",
    errno.ENOTDIR: "a file is in the way of its directory; give a path in an existing directory",
    errno.EEXIST: "a file is in the way of its directory; give a path in an existing directory",
    errno.EISDIR: "it is a directory; give a file name",
    errno.EIO: "input/output error; check the disk",
}


def write_error(path: str | os.PathLike, e: OSError) -> DataError:
    """An OSError while writing ``path`` as a one-line DataError with what to do."""
    reason = e.strerror or str(e)
    hint = _WRITE_HINTS.get(e.errno or 0, "choose another location")
    return DataError(f"cannot write {os.fspath(path)!r} ({reason}): {hint}; nothing was written")


def _refuse_non_regular(path: Path) -> None:
    """Defence in depth: never replace a device, FIFO, socket or directory."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:
        raise write_error(path, e) from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"cannot write {str(path)!r}: it is {file_kind(st.st_mode)}, not a regular file; snnc writes only regular files, give another path")


def _new_temp(path: Path) -> tuple[str, int]:
    """Create ``.NAME.XXXXXXXX.tmp`` beside ``path`` (mode 0600, O_EXCL)."""
    prefix = os.path.join(os.fspath(path.parent), temp_prefix(path))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = f"{prefix}{secrets.token_hex(4)}.tmp"
        try:
            return tmp, os.open(tmp, flags, 0o600)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", prefix)


def _discard(tmp: str | None) -> None:
    if tmp is not None:
        with interrupts.deferred(), contextlib.suppress(OSError):
            os.unlink(tmp)


def _commit(tmp: str, path: Path) -> None:
    os.replace(tmp, path)
    if interrupts.installed():
        interrupts.written.append(str(path))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    On any error (or SIGINT / SIGTERM under the ``snnc`` command) the temporary file is
    removed and ``path`` is untouched: snnc never leaves a partial output file. An existing
    ``path`` that is not a regular file (a device, a FIFO, a directory) is refused, and
    every OSError (disk full, permission denied, name too long, read-only file system)
    becomes a one-line :class:`DataError`. Missing parent directories are created (scripts
    write into their own result folders); snnc's commands check their outputs first with
    :func:`check_output_path`, which wants the directory to exist. Inside
    :func:`all_or_nothing` the rename waits for the end of that block.
    """
    path = Path(path)
    _refuse_non_regular(path)
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None
    staged = _STAGED.get()
    tmp: str | None = None
    try:
        with interrupts.deferred():  # the name is known before anything could interrupt
            tmp, fd = _new_temp(path)
        try:
            st = os.stat(path)
            file_mode = st.st_mode & 0o7777
        except OSError:
            file_mode = FILE_MODE  # the mode a plain open() would give (mkstemp makes 0600)
        os.fchmod(fd, file_mode)
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        with interrupts.deferred():
            if staged is not None:
                staged.append((tmp, path))
            else:
                _commit(tmp, path)
            tmp = None
    except OSError as e:
        _discard(tmp)
        raise write_error(path, e) from e
    except BaseException:
        _discard(tmp)
        raise


@contextlib.contextmanager
def all_or_nothing() -> Iterator[None]:
    """Outputs written with :func:`atomic_write` inside the block are renamed into place
    together when it ends without an error, and all discarded otherwise: a command that
    writes an artifact and a report never leaves one without the other. (Every write,
    where a full disk shows, happens before the first rename; only the renames remain.)"""
    if _STAGED.get() is not None:  # nested: the outer block commits
        yield
        return
    staged: list[tuple[str, Path]] = []
    token = _STAGED.set(staged)
    try:
        yield
    except BaseException:
        for tmp, _ in staged:
            _discard(tmp)
        raise
    finally:
        _STAGED.reset(token)
    with interrupts.deferred():
        for i, (tmp, path) in enumerate(staged):
            try:
                _commit(tmp, path)
            except OSError as e:
                for rest, _ in staged[i:]:
                    _discard(rest)
                done = ", ".join(repr(str(p)) for _, p in staged[:i])
                err = write_error(path, e)
                if done:
                    err = DataError(str(err).replace("nothing was written", f"{done} was written already"))
                raise err from e


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False)
        fh.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())


NPY_MAGIC = b"\x93NUMPY"


def check_zip_member(info: zipfile.ZipInfo, what: str) -> None:
    """A ValueError unless the zip member is what numpy and snnc write: stored or deflated,
    not encrypted, no patched data, a stored member's two sizes equal."""
    if info.flag_bits & 0x1 or info.flag_bits & 0x40:
        raise ValueError(f"{what} is encrypted; snnc writes plain members")
    if info.flag_bits & 0x20:
        raise ValueError(f"{what} uses compressed patched data; snnc writes stored or deflated members")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(f"{what} uses compression method {info.compress_type}; snnc writes stored (0) or deflated (8) members")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise ValueError(f"{what} is stored but its sizes differ ({info.compress_size:,} vs {info.file_size:,} bytes)")


NPY_MAX_HEADER = 4096  # bytes: the .npy header of any array snnc reads (numpy writes ~128)


def read_npy_header(fh, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the .npy header at ``fh``'s position, leaving
    ``fh`` at the data; a ValueError for an unknown version, a header over
    :data:`NPY_MAX_HEADER` bytes or an object dtype (which would need pickle)."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=NPY_MAX_HEADER)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=NPY_MAX_HEADER)
    else:
        raise ValueError(f"{what} has .npy format version {version}")
    if dtype.hasobject:
        raise ValueError(f"{what} holds Python objects (dtype {dtype}); save plain numbers")
    return tuple(shape), fortran, dtype


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], int]:
    """Shape and data bytes of an NPZ member, from its .npy header, without loading it."""
    what = f"array {info.filename[:-4]!r}"
    check_zip_member(info, what)
    with zf.open(info) as fh:
        shape, _, dtype = read_npy_header(fh, what)
        header_bytes = fh.tell()
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if header_bytes + nbytes != info.file_size:
        raise ValueError(
            f"{what} declares shape {list(shape)} ({nbytes:,} bytes) but its member holds "
            f"{info.file_size - header_bytes:,} bytes: the file is truncated or corrupt"
        )
    return shape, nbytes


def load_npz(
    path: str | os.PathLike,
    *,
    required: tuple[str, ...] = ("x",),
    optional: tuple[str, ...] = ("y",),
    what: str = "data file",
    max_bytes: int | None = None,
) -> dict[str, np.ndarray]:
    """Load the arrays ``required`` + ``optional`` of an NPZ file, treating it as untrusted:
    no pickle; each array's declared size checked against the file and against the memory
    available (``max_bytes``) before it is read; other arrays never read. Raises a
    DataError naming what is wrong: a ``.npy`` file, a missing array, a bad dtype or shape,
    a NaN (with the index of the first bad sample), labels that do not match the samples."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {str(path)!r} does not exist")
    if path.is_dir():
        raise DataError(f"{what} {str(path)!r} is a directory; give an NPZ file (numpy.savez(path, x=...))")
    if not path.is_file():
        raise DataError(f"{what} {str(path)!r} is not a regular file (a FIFO, socket or device); give an NPZ file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(NPY_MAGIC))
    except OSError as e:
        raise DataError(f"{what} {str(path)!r} cannot be read ({e.strerror or e})") from None
    if head == NPY_MAGIC:
        raise DataError(
            f"{what} {str(path)!r} is a .npy file (one unnamed array); snnc reads .npz files with named arrays: "
            f"numpy.savez('data.npz', x=numpy.load({str(path)!r}))"
        )
    budget = _available_bytes() if max_bytes is None else max_bytes
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            members = {info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")}
            for key in required:
                if key not in members:
                    have = ", ".join(sorted(members)) or "none"
                    raise DataError(f"{what} {str(path)!r} has no array {key!r} (arrays found: {have}); save it with numpy.savez(path, {key}=...)")
            for key in (*required, *optional):
                if key not in members:
                    continue
                shape, nbytes = _member_header(zf, members[key])
                if budget is not None and nbytes > budget:
                    raise DataError(
                        f"array {key!r} in {str(path)!r} is {nbytes / 2**30:.1f} GiB (shape {list(shape)}), more than the "
                        f"{budget / 2**30:.1f} GiB of memory available; pass fewer samples"
                    )
                with zf.open(members[key]) as fh:
                    arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
    except DataError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError, zlib.error) as e:
        raise DataError(f"{what} {str(path)!r} is not a readable NPZ file ({e}); save it with numpy.savez(path, x=...)") from None
    x = arrays.get("x")
    if x is not None:
        if x.dtype.kind not in "fiub":
            raise DataError(f"array 'x' in {str(path)!r} has dtype {x.dtype}; expected numbers")
        if x.ndim < 2 or len(x) == 0 or x.size == 0:
            raise DataError(f"array 'x' in {str(path)!r} has shape {list(x.shape)}; expected [N, ...] with N >= 1")
        with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become inf: refused below
            arrays["x"] = x.astype(np.float32, copy=False)
        check_finite(arrays["x"], f"array 'x' in {str(path)!r}:")
    y = arrays.get("y")
    if y is not None:
        if y.dtype.kind not in "iu":
            raise DataError(f"array 'y' in {str(path)!r} has dtype {y.dtype}; labels must be integers")
        if y.ndim == 0:
            raise DataError(f"array 'y' in {str(path)!r} is a scalar; give one label per sample")
        if x is not None and len(y) != len(x):
            raise DataError(f"arrays 'x' ({len(x)} samples) and 'y' ({len(y)} labels) in {str(path)!r} differ in length")
    return arrays


def _available_bytes() -> int | None:
    """Memory a data file may take: half the available memory (the run needs the rest)."""
    from snnc.utils.validate import available_memory

    have = available_memory()
    return None if have is None else have // 2


def read_small_file(path: str, what: str, limit: int, *, missing: str, kind: str) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; otherwise a
    DataError naming ``what`` (``"target file 'x.toml'"``): ``missing`` says what to do
    when it does not exist, ``kind`` what to give instead of a directory or device."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{what} does not exist; {missing}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{what} cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{what} is a directory; give {kind}")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{what} is not a regular file (a FIFO, socket or device); give {kind}")
    too_big = f"more than the {limit:,} bytes it may have; is it the right file?"
    if st.st_size > limit:
        raise DataError(f"{what} is {st.st_size:,} bytes, {too_big}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as e:
        raise DataError(f"{what} cannot be read ({e.strerror or e})") from None
    if len(data) > limit:
        raise DataError(f"{what} is {too_big}")
    return data


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads(..., object_pairs_hook=unique_keys)``: a ValueError on a repeated key
    (plain json keeps the last one silently)."""
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {dup!r}")
    return d
