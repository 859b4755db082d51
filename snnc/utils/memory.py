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
holes the heap cannot reuse.

Even buffers of one size fragment the heap a little: a 100 MB buffer that finds no hole
big enough extends the heap, and the holes it skipped stay resident. Over the batches of
one layer resident memory crept up step by step (ResNet-50 at 224 x 224, T = 32, one
sample per batch: +0.46 to +0.53 GiB within the first 14 of 32 batches of a 256-channel
layer, then a step now and then in other layers), so a
conversion's peak grew with the number of calibration samples. :class:`HeapBound` stops
that: called at the start of every batch, it gives the free pages back
(``malloc_trim``) whenever resident memory has grown by more than a slack (half of what
the first batch left resident, at least ``HEAP_SLACK``) since the first batch, so the
peak is set by what one batch needs, not by how many run.
All are no-ops where glibc is not the allocator.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
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
    The next buffers fault their pages in once, not once per allocation. That costs (a
    16-sample ResNet-18 conversion: 1.7 M page faults per rank with it, 0.5 M without; 4 %
    of the time on one rank, 5 % on two) but bounds the peak by the widest layer: without it a ResNet-50 (224 x 224,
    64 samples, 2 ranks) peaked 0.44 GiB higher, 3.57 against 3.13 GiB (the holes of a
    256-channel layer, split by the 64-channel layers after it, no longer fit the next one)."""
    libc = _glibc()
    if libc is not None and _depth > 0:
        libc.malloc_trim(0)


HEAP_SLACK = 256 << 20  # the least resident growth over the first batch's that HeapBound tolerates
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """The process's resident memory now (``/proc/self/statm``); 0 where that is unknown."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class HeapBound:
    """Keeps the freed heap memory left resident by work that repeats batch after batch
    within a slack of what the first batch left (see the module docstring).

    ``step()`` at the start of each batch: the first call reads the resident memory before
    any batch (the start), the second what one batch leaves resident (the reference: the
    start plus the batch's own buffers, kept for the next batch). A later call that finds
    more than the slack above the reference returns the free pages to the OS and starts
    over (the next batch faults its pages in once). The slack is half of what one batch
    left (at least ``slack`` bytes): a batch's buffers settle into the heap over its first
    few repetitions, and a tighter bound would give them back again and again. ``reset()``
    where the work changes shape (another layer). Outside a :func:`reuse_freed_memory`
    block it does nothing: glibc then maps large buffers afresh and unmaps them when freed."""

    def __init__(self, slack: int = HEAP_SLACK):
        self.slack = slack
        self.trims = 0
        self.reset()

    def reset(self) -> None:
        self._steps = 0
        self._start = self._limit = 0

    def step(self) -> None:
        if _depth == 0:
            return
        self._steps += 1
        rss = resident_bytes()
        if self._steps == 1:  # before the first batch: none of its buffers are resident yet
            self._start = rss
        elif self._steps == 2:
            self._limit = rss + max(self.slack, (rss - self._start) // 2)
        elif rss > self._limit:
            release_free_memory()
            self.trims += 1
            self._steps = 1
            self._start = resident_bytes()


def mmap_disabled() -> bool:
    """Whether a :func:`reuse_freed_memory` block is running (for tests)."""
    return _depth > 0
