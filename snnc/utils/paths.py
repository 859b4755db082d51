"""Output paths, checked before any work: what snnc may write, and what it refuses.

An output is accepted when it is an existing regular file (replaced atomically) or a new
file in an existing, writable directory. Refused, with a :class:`~snnc.errors.DataError`
naming the problem and what to do: a device, FIFO or socket (as root, replacing
``/dev/null`` would be a disaster), a directory, a path whose parent is missing or is a
file, a name longer than the file system allows, the same file as one of the command's
inputs, or the same file as another output of the command.

Standard library only (imported by the atomic writers).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from snnc.errors import DataError

PathLike = str | os.PathLike
# a temporary file is ".NAME.XXXXXXXX.tmp": the name is shortened in it so it always fits
TEMP_NAME_BYTES = 200


def file_kind(mode: int) -> str:
    """'a character device', 'a FIFO', ... for ``st_mode``."""
    for test, what in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def _stat(p: str) -> os.stat_result | None:
    """``os.stat`` (following links); None when nothing is there."""
    try:
        return os.stat(p)
    except FileNotFoundError:
        return None


def same_file(a: PathLike, b: PathLike) -> bool:
    """Do ``a`` and ``b`` name the same file (links, ``..`` and hard links resolved)?"""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        try:
            return os.path.realpath(a) == os.path.realpath(b)
        except (OSError, ValueError):
            return False


def name_max(directory: PathLike) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def temp_prefix(path: Path) -> str:
    """The prefix of ``path``'s temporary sibling: ``.NAME.``, NAME shortened to fit NAME_MAX."""
    raw = os.fsencode(path.name)
    if len(raw) > TEMP_NAME_BYTES:
        raw = raw[:TEMP_NAME_BYTES]
    return "." + os.fsdecode(raw) + "."


def check_output_path(
    path: PathLike,
    *,
    what: str = "output",
    kind: str = "file",
    inputs: Iterable[tuple[str, PathLike | None]] = (),
    others: Iterable[tuple[str, PathLike | None]] = (),
    contents: Iterable[str] = (),
    parents: bool = False,
) -> Path:
    """Check that snnc may write ``path``; return it as a Path or raise DataError (one line).

    ``what`` names the output in the message (``-o``, ``--report``, ``output``). ``kind`` is
    ``"file"`` or ``"dir"`` (a directory snnc writes files into, e.g. ``snnc report -o``;
    ``contents`` are the names it will replace there). ``inputs`` are ``(description, path)``
    pairs the output must not be (e.g. ``("the input model", model)``); ``others`` are the
    command's other outputs, ``(option, path)``. ``parents=True`` accepts missing parent
    directories (the API creates them, as it always has); the CLI wants them to exist.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', not {kind!r}")
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise DataError(f"{what} must be a path (a str or os.PathLike), got {type(path).__name__}")
    raw = os.fspath(path)
    if isinstance(raw, bytes):
        raw = os.fsdecode(raw)
    label = f"{what} {raw!r}"
    if not raw:
        raise DataError(f"{what} is an empty path; give a file name")
    if "\0" in raw:
        raise DataError(f"{label} contains a NUL character; give a plain file name")
    p = Path(raw)
    noun = "file" if kind == "file" else "directory"
    if kind == "file" and (raw.endswith(os.sep) or p.name in ("", ".", "..")):
        raise DataError(f"{label} names a directory; give a file name, e.g. {os.path.join(raw, 'out')!r}")
    if len(os.fsencode(raw)) >= 4096:
        raise DataError(f"{label[:80]}... is too long ({len(os.fsencode(raw))} bytes; the limit is 4095); use a shorter path")
    parent = p.parent
    limit = name_max(parent if parent.is_dir() else ".")
    if len(os.fsencode(p.name)) > limit:
        raise DataError(f"{what}: the name {p.name[:40]!r}... is {len(os.fsencode(p.name))} bytes long; the file system allows {limit}; use a shorter name")

    try:
        st = _stat(raw)
    except NotADirectoryError:
        st = None  # a file where a directory should be: reported below, with its name
    except OSError as e:
        raise DataError(f"{label} cannot be checked ({_reason(e)}); choose another {noun}") from None
    if st is not None:
        if kind == "file" and stat.S_ISDIR(st.st_mode):
            raise DataError(f"{label} is a directory; give a file name, e.g. {os.path.join(raw, 'out')!r}")
        if kind == "file" and not stat.S_ISREG(st.st_mode):
            raise DataError(f"{label} is {file_kind(st.st_mode)}, not a regular file; snnc writes only regular files, give another path")
        if kind == "dir" and not stat.S_ISDIR(st.st_mode):
            raise DataError(f"{label} exists and is {file_kind(st.st_mode)}, not a directory; give a new or existing directory")
    _check_parent(parent, label, parents)
    if kind == "dir" and st is not None:
        if not os.access(raw, os.W_OK | os.X_OK):
            raise DataError(f"{label} is not writable; choose another directory")
        for name in contents:
            inner = os.path.join(raw, name)
            try:
                ist = os.stat(inner)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise DataError(f"{what}: {inner!r} cannot be checked ({_reason(e)}); choose another directory") from None
            if not stat.S_ISREG(ist.st_mode):
                raise DataError(f"{what}: {inner!r} is {file_kind(ist.st_mode)}, not a regular file; snnc would replace it, choose another directory")

    targets = [raw] if kind == "file" else [os.path.join(raw, name) for name in contents]
    for description, other in inputs:
        for target in targets:
            if other is not None and same_file(target, other):
                if target == raw:
                    raise DataError(f"{label} is {description}; write the output to another file")
                raise DataError(f"{what}: {target!r} is {description}; snnc would replace it, write the report elsewhere")
    for option, other in others:
        if other is not None and same_file(raw, other):
            raise DataError(f"{label} is the same file as {option}; give each output its own name")
    return p


def _check_parent(parent: Path, label: str, parents: bool) -> None:
    """The directory the output goes into (or, with ``parents``, its nearest existing
    ancestor) must be a writable directory."""
    d = parent
    while True:
        try:
            st = os.stat(d)
        except FileNotFoundError:
            if not parents:
                raise DataError(f"{label}: directory {str(parent)!r} does not exist; create it first (mkdir -p {str(parent)!r})") from None
            if d == d.parent:
                raise DataError(f"{label}: directory {str(parent)!r} does not exist") from None
            d = d.parent
            continue
        except NotADirectoryError:
            raise DataError(f"{label}: {str(parent)!r} is not a directory (a file is in the way); give a path in an existing directory") from None
        except OSError as e:
            raise DataError(f"{label}: directory {str(parent)!r} cannot be checked ({_reason(e)}); choose another location") from None
        break
    if not stat.S_ISDIR(st.st_mode):
        raise DataError(f"{label}: {str(d)!r} is {file_kind(st.st_mode)}, not a directory; give a path in an existing directory")
    if not os.access(d, os.W_OK | os.X_OK):
        reason = "is on a read-only file system" if _read_only(d) else "is not writable"
        raise DataError(f"{label}: directory {str(d)!r} {reason}; choose another location")


def _read_only(d: PathLike) -> bool:
    try:
        return bool(os.statvfs(d).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _reason(e: OSError) -> str:
    return e.strerror or errno.errorcode.get(e.errno or 0, str(e))
