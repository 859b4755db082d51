"""The allocator setting of snnc.utils.memory: large buffers reused (no page faults) while a
conversion, calibration or evaluation runs, glibc's default back afterwards."""

from __future__ import annotations

import ctypes
import resource

import numpy as np
import pytest
import torch

import snnc
from snnc.utils import memory

try:
    ctypes.CDLL("libc.so.6").mallopt  # noqa: B018
    GLIBC = True
except (OSError, AttributeError):
    GLIBC = False

needs_glibc = pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")

MB64 = 16 << 20  # float32 elements in 64 MiB: above glibc's largest mmap threshold (32 MiB)


def _faults_of_cycles(cycles: int = 6) -> int:
    """Minor page faults of allocating, writing and freeing a 64 MiB tensor ``cycles`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        t = torch.empty(MB64)
        t.fill_(1.0)
        del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@needs_glibc
def test_large_buffers_are_reused_inside_and_mapped_afresh_outside():
    pages = MB64 * 4 // 4096
    outside = _faults_of_cycles()
    with memory.reuse_freed_memory():
        _faults_of_cycles(12)  # the heap grows until freed buffers fit the next ones (posix_memalign pads each request)
        inside = _faults_of_cycles()
    after = _faults_of_cycles()
    # outside a block each mapped 64 MiB buffer faults its pages in again; inside, reused heap
    # memory faults at most a fraction of one buffer's pages over all cycles
    assert inside < pages // 4, (inside, outside)
    assert outside > 4 * inside, (inside, outside)
    assert after > 4 * inside, (inside, after)  # glibc's default is back: buffers are mapped afresh again


@needs_glibc
def test_blocks_nest_and_restore_even_on_error():
    assert not memory.mmap_disabled()
    with pytest.raises(RuntimeError, match="boom"):
        with memory.reuse_freed_memory():
            with memory.reuse_freed_memory():
                assert memory.mmap_disabled()
            assert memory.mmap_disabled()  # the inner block does not end the outer one
            raise RuntimeError("boom")
    assert not memory.mmap_disabled()


def test_convert_calibrate_and_evaluate_run_inside_a_block(monkeypatch):
    """The API's heavy entry points run with the heap reused, and leave the default behind."""
    import snnc.api as api

    seen: list[tuple[str, bool]] = []
    for name in ("run_passes", "_simulate_sharded"):
        real = getattr(api, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            seen.append((_name, memory.mmap_disabled()))
            return _real(*args, **kwargs)

        monkeypatch.setattr(api, name, spy)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    x = np.random.default_rng(0).random((32, 1, 4, 4), dtype=np.float32)
    sm = snnc.convert(net, x, timesteps=8, calibration="none")
    sm = snnc.calibrate(sm, x, timesteps=8, calibration="light")
    res = snnc.evaluate(sm, x[:4], np.zeros(4, dtype=np.int64), timesteps=[8])
    assert res["samples"] == 4
    assert {n for n, _ in seen} == {"run_passes", "_simulate_sharded"}
    assert all(inside for _, inside in seen) == GLIBC, seen
    assert not memory.mmap_disabled()


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1]) / 1024


@needs_glibc
def test_release_free_memory_returns_the_heap_holes():
    with memory.reuse_freed_memory():
        kept = [torch.ones(MB64 // 8) for _ in range(8)]  # 8 x 8 MiB live ...
        big = [torch.ones(MB64) for _ in range(4)]  # ... and 256 MiB freed below them
        kept.append(torch.ones(1024))
        del big
        before = _rss_mib()
        memory.release_free_memory()
        after = _rss_mib()
        assert before - after > 128, (before, after)
        assert sum(float(t[0]) for t in kept) == len(kept)


@needs_glibc
def test_heap_bound_gives_back_resident_growth_beyond_its_slack_only():
    slack = 64 << 20
    with memory.reuse_freed_memory():
        bound = memory.HeapBound(slack=slack)
        bound.step()  # before the first batch
        bound.step()  # the reference: what one batch left resident
        kept = torch.ones(1024)
        big = [torch.ones(MB64) for _ in range(2)]  # 128 MiB freed below a live tensor: stays resident
        kept2 = torch.ones(1024)
        del big
        before = _rss_mib()
        bound.step()
        after = _rss_mib()
        assert bound.trims == 1 and before - after > 100, (before, after)
        bound.step()  # a new reference after the trim
        small = torch.ones(MB64 // 4)  # 16 MiB: within the slack
        del small
        bound.step()
        assert bound.trims == 1
        assert float(kept[0] + kept2[0]) == 2
    outside = memory.HeapBound(slack=0)
    for _ in range(3):
        outside.step()
    assert outside.trims == 0  # outside a block glibc unmaps large buffers itself


def test_batches_step_a_heap_bound(monkeypatch):
    """Every batch loop (ANN batches, simulation, layer-wise calibration) steps a HeapBound."""
    import snnc.ir.executor as executor
    import snnc.passes.calibrate as calibrate

    steps = []
    monkeypatch.setattr(memory.HeapBound, "step", lambda self: steps.append(id(self)))
    assert len(list(executor.iter_batches(np.zeros((10, 2), np.float32), 3))) == 4
    assert len(steps) == 4
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    x = np.random.default_rng(0).random((32, 1, 4, 4), dtype=np.float32)
    steps.clear()
    real = calibrate.LayerwiseRunner.batch
    runner_bounds = []  # the runner's own bound, once per simulated batch
    monkeypatch.setattr(calibrate.LayerwiseRunner, "batch", lambda self, seg, b: (runner_bounds.append(id(self.heap)), real(self, seg, b))[1])
    snnc.convert(net, x, timesteps=8, calibration="light", batch_size=8)
    assert len(runner_bounds) >= 4 and len(set(runner_bounds)) == 1
    assert steps.count(runner_bounds[0]) == len(runner_bounds)
