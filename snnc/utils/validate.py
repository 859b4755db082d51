"""Checks of the values users pass to the API (each failure is a DataError naming the value),
and what this machine can hold."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from snnc.errors import DataError


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1; a DataError for anything else (``"8"``, ``8.5``, ``True``, ``0``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_finite(x: np.ndarray, what: str = "input") -> None:
    """A DataError naming the first sample of the batch ``x`` with a NaN or infinite value."""
    finite = np.isfinite(x)
    if not finite.all():
        first = int(np.argmin(finite.reshape(len(x), -1).all(axis=1)))
        raise DataError(f"{what} sample {first} contains NaN or infinite values; clean or drop it (np.isfinite)")


def seed_value(value: Any) -> int:
    """A random seed: an integer in ``0 .. 2**32 - 1``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**32:
        raise DataError(f"seed must be an integer from 0 to 2**32 - 1, got {value!r}")
    return int(value)


def available_memory() -> int | None:
    """Bytes of host memory available to a new allocation (``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None
