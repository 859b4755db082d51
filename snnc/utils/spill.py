"""Arrays kept per (key, index) in memory up to a budget, the rest in temporary files.

The layer-wise calibration keeps every calibration sample's spike trains between two
layers; for a ResNet-50 at 224x224 that is gigabytes per thousand samples. A
:class:`SpillStore` holds them in memory while the total stays under ``memory_bytes``
and appends the rest to files in a private temporary directory (``directory`` or the
system's, e.g. ``$TMPDIR``), so that the process's memory does not grow with the number
of samples. Reads of spilled arrays go through the OS page cache (``np.memmap``); the
directory is removed by :meth:`close` (also on errors and interrupts: use ``with``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Hashable
from typing import Any

import numpy as np

from snnc.errors import DataError


class SpillStore:
    """``put(key, index, array)`` / ``get(key, index)`` / ``drop(key)``; see the module docstring.
    ``memory_bytes=None`` never spills; ``0`` spills everything."""

    def __init__(self, memory_bytes: int | None, directory: str | os.PathLike | None = None):
        self.memory_bytes = memory_bytes
        self.directory = directory
        self._mem: dict[Hashable, dict[int, np.ndarray]] = {}
        self._disk: dict[Hashable, dict[int, tuple[int, np.dtype, tuple[int, ...]]]] = {}
        self._files: dict[Hashable, str] = {}
        self._size: dict[Hashable, int] = {}
        self._tmp: str | None = None
        self._created = 0  # files made so far (their names)
        self.in_memory = 0  # bytes held in memory now
        self.peak_in_memory = 0
        self.spilled = 0  # bytes written to disk in total

    def __enter__(self) -> SpillStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def put(self, key: Hashable, index: int, array: np.ndarray) -> None:
        """Store ``array`` under (key, index), replacing what was stored there."""
        array = np.ascontiguousarray(array)
        old = self._mem.get(key, {}).pop(index, None)
        if old is not None:
            self.in_memory -= old.nbytes
        if self.memory_bytes is None or self.in_memory + array.nbytes <= self.memory_bytes:
            self._mem.setdefault(key, {})[index] = array
            self.in_memory += array.nbytes
            self.peak_in_memory = max(self.peak_in_memory, self.in_memory)
            return
        path = self._files.get(key)
        if path is None:
            self._created += 1
            path = self._files[key] = os.path.join(self._dir(), f"{self._created}.bin")
        offset = self._size.get(key, 0)
        try:
            with open(path, "ab") as f:
                array.tofile(f)
        except OSError as e:
            raise DataError(f"cannot write calibration data to the temporary directory {self._dir()!r}: {e.strerror or e}; free disk space there or set TMPDIR") from None
        self._size[key] = offset + array.nbytes
        self._disk.setdefault(key, {})[index] = (offset, array.dtype, array.shape)
        self.spilled += array.nbytes

    def get(self, key: Hashable, index: int) -> np.ndarray:
        """The array stored under (key, index); a read-only memory map when it was spilled."""
        mem = self._mem.get(key)
        if mem is not None and index in mem:
            return mem[index]
        offset, dtype, shape = self._disk[key][index]
        if int(np.prod(shape)) == 0:
            return np.zeros(shape, dtype)
        return np.memmap(self._files[key], dtype=dtype, mode="r", offset=offset, shape=shape)

    def drop(self, key: Hashable) -> None:
        """Forget every array of ``key`` (its file is deleted)."""
        for arr in self._mem.pop(key, {}).values():
            self.in_memory -= arr.nbytes
        self._disk.pop(key, None)
        self._size.pop(key, None)
        path = self._files.pop(key, None)
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        for key in list(self._mem) + list(self._disk):
            self.drop(key)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _dir(self) -> str:
        if self._tmp is None:
            try:
                self._tmp = tempfile.mkdtemp(prefix="snnc-spill-", dir=self.directory)
            except OSError as e:
                raise DataError(f"cannot create a temporary directory for calibration data in {self.directory or tempfile.gettempdir()!r}: {e.strerror or e}") from None
        return self._tmp
