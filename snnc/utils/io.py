"""File helpers: atomic writes and NPZ data loading with clear errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from snnc.errors import DataError


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


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    On any error (or Ctrl-C) the temporary file is removed and ``path`` is untouched:
    snnc never leaves a partial output file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600: give the file the mode a plain open() would (or the old file's)
        os.fchmod(fd, path.stat().st_mode & 0o7777 if path.exists() else FILE_MODE)
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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


def load_npz(path: str | os.PathLike, *, required: tuple[str, ...] = ("x",), what: str = "data file") -> dict[str, np.ndarray]:
    """Load an NPZ file without pickle; raise DataError naming what is wrong."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{what} {str(path)!r} is not a readable NPZ file ({e}); save it with numpy.savez(path, x=...)") from None
    for key in required:
        if key not in arrays:
            have = ", ".join(sorted(arrays)) or "none"
            raise DataError(f"{what} {str(path)!r} has no array {key!r} (arrays found: {have}); save it with numpy.savez(path, {key}=...)")
    x = arrays.get("x")
    if x is not None:
        if x.dtype.kind not in "fiub":
            raise DataError(f"array 'x' in {str(path)!r} has dtype {x.dtype}; expected numbers")
        if x.ndim < 2 or len(x) == 0:
            raise DataError(f"array 'x' in {str(path)!r} has shape {list(x.shape)}; expected [N, ...] with N >= 1")
        arrays["x"] = x.astype(np.float32, copy=False)
        if not np.all(np.isfinite(arrays["x"])):
            raise DataError(f"array 'x' in {str(path)!r} contains NaN or infinite values")
    y = arrays.get("y")
    if y is not None:
        if y.dtype.kind not in "iu":
            raise DataError(f"array 'y' in {str(path)!r} has dtype {y.dtype}; labels must be integers")
        if x is not None and len(y) != len(x):
            raise DataError(f"arrays 'x' ({len(x)} samples) and 'y' ({len(y)} labels) in {str(path)!r} differ in length")
    return arrays
