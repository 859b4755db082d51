"""How the process's C allocator treats the large tensors of simulation and calibration.

glibc serves an allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
and unmaps it when it is freed, so every page of the next such buffer is faulted in and
zeroed by the kernel again. A ``[T, B, C, H, W]`` value of a network at 224 x 224 and
T = 32 is about 100 MB even for one sample, and the calibration passes allocate and free
thousands of them: on the 2-core development machine a Br35H ResNet-18 light conversion
spent 12 % of its CPU time in the kernel, and its weight fit (advanced) about two thirds
(400 k page faults per second per process). Served from the heap instead, freed buffers
are reused without faults.

:func:`keep_freed_memory` raises glibc's mmap and trim thresholds for the rest of the
process (buffers up to 32 MiB come from the heap and freed memory is kept).
:func:`reuse_freed_memory` goes further for the duration of one piece of work (a
conversion, a calibration, an evaluation): no allocation is served by ``mmap`` at all,
and when the outermost such block ends the allocator's default is restored and the free
heap pages are given back to the operating system (``malloc_trim``), so the process does
not keep its peak memory afterwards. Work inside such a block should allocate buffers of
the same sizes again and again (a weight fit's minibatch shards have a fixed size for that
reason, snnc.passes.calibrate.FitDraw): buffers that change size from step to step leave
holes the heap cannot reuse. All are no-ops where glibc is not the allocator.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_GLIBC_MMAP_MAX_DEFAULT = 65536  # glibc's DEFAULT_MMAP_MAX

_libc = None
_tuned = False
_depth = 0
_lock = threading.Lock()


def _glibc():
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL("libc.so.6")
            lib.mallopt, lib.malloc_trim  # noqa: B018 - both must exist (glibc)
            _libc = lib
        except (OSError, AttributeError):
            _libc = False
    return _libc or None


def keep_freed_memory() -> None:
    """Ask glibc to serve allocations up to 32 MiB from its heap and not to return freed
    memory to the OS, so per-layer buffers are reused (no page faults on every layer)."""
    global _tuned
    libc = _glibc()
    if _tuned or libc is None:
        return
    _tuned = True
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """Serve every allocation from the heap while the block runs (large buffers are
    reused, not mapped and faulted in afresh); afterwards restore glibc's default and
    return the free heap pages to the OS. Blocks nest; only the outermost one acts."""
    global _depth
    libc = _glibc()
    if libc is None:
        yield
        return
    keep_freed_memory()
    with _lock:
        _depth += 1
        if _depth == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX_DEFAULT)
                libc.malloc_trim(0)


def release_free_memory() -> None:
    """Give the pages of freed heap memory back to the OS (``malloc_trim``) inside a
    :func:`reuse_freed_memory` block, at a point where a piece of work ends (a layer of a
    calibration pass), so that holes the heap cannot reuse do not pile up over many layers.
    The next buffers fault their pages in once, not once per allocation."""
    libc = _glibc()
    if libc is not None and _depth > 0:
        libc.malloc_trim(0)


def mmap_disabled() -> bool:
    """Whether a :func:`reuse_freed_memory` block is running (for tests)."""
    return _depth > 0
