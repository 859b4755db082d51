"""Running a Lava network from the main thread: interruptible runs and teardown after an
error or Ctrl-C (shared by the unplaced and the placed runs)."""

from __future__ import annotations

import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from snnc.errors import BackendError

# Messages one Lava channel buffers (Lava's default: 64). Every channel is shared memory of
# depth x its message (a batch of a layer's spikes), allocated for the whole run: with a
# placement's hundreds of block-to-block channels the default needs tens of GB. The process
# graph is acyclic, so a shallow buffer only makes a sender wait for its reader; results are
# the same.
CHANNEL_DEPTH = 4


def _run_interruptibly(proc, condition, cfg, error_file: str | None = None) -> None:
    """``proc.run(...)`` in a helper thread while the main thread waits in short, signal-aware
    joins: Lava's own wait blocks the main thread where Ctrl-C cannot reach it, and hangs
    when a process model fails; a failure's traceback lands in ``error_file``."""
    errors: list[BaseException] = []

    def target():
        try:
            with warnings.catch_warnings():
                # Lava's model search executes every module next to ours and warns on each.
                warnings.filterwarnings("ignore", message="Cannot import module", category=UserWarning)
                proc.run(condition=condition, run_cfg=cfg, compile_config={"pypy_channel_size": CHANNEL_DEPTH})
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)

    worker = threading.Thread(target=target, name="lava-run", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
        if error_file and os.path.exists(error_file) and os.path.getsize(error_file):
            with open(error_file) as f:
                detail = f.read().strip()
            raise BackendError(f"a Lava process failed; the run was stopped.\n{detail}")
    if errors:
        raise errors[0]


def _terminate(proc, all_procs) -> None:
    """Stop a Lava runtime in the middle of a run: kill its worker processes, close its
    channel threads and release its shared memory (best effort; never masks the original
    exception). Lava's own ``stop`` would wait for the run to finish."""
    import multiprocessing as mp

    rt = getattr(proc, "runtime", None)
    if rt is None:
        return
    infra = rt._messaging_infrastructure
    actors = list(getattr(infra, "actors", []))
    for actor in actors:
        try:
            actor.terminate()
        except Exception:  # noqa: BLE001 - cleanup only
            pass
    for actor in actors:
        try:
            mp.Process.join(actor, 5)  # Lava's SystemProcess.join takes no timeout
            if actor.is_alive():
                actor.kill()
        except Exception:  # noqa: BLE001
            pass
    closer = threading.Thread(target=_close_quietly, args=(rt, infra), daemon=True)
    closer.start()
    closer.join(10)
    # The runtime is gone: Lava's Process.__del__ must not try to stop it again (it would
    # write into the released shared memory).
    rt._is_started = rt._is_running = False
    for p in all_procs:
        p._runtime = None


def _close_quietly(rt, infra) -> None:
    for step in (rt.join, getattr(infra.smm, "shutdown", None), getattr(rt._watchdog_manager, "stop", None)):
        try:
            if step is not None:
                step()
        except Exception:  # noqa: BLE001 - cleanup only
            pass


def run_batches(procs: dict, any_proc, cfg, n: int, B: int, steps: list[int], error_file: str, read, task, finish):
    """Run a built Lava network over every sample batch: for each batch, each requested T
    (``read(t, lo, hi)`` collects the readouts after it), then ``finish()`` (reads the
    counters) while the runtime is still up. The runtime is stopped however this ends:
    Lava's own stop on success, :func:`_terminate` after an error or Ctrl-C."""
    from lava.magma.core.run_conditions import RunSteps

    started = ok = False
    try:
        for b in range(-(-n // B)):
            lo, hi = b * B, min(n, (b + 1) * B)
            prev = 0
            for t in steps:
                started = True
                _run_interruptibly(any_proc, RunSteps(num_steps=t - prev), cfg, error_file)
                prev = t
                read(t, lo, hi)
            if task:
                task.advance(hi - lo)
        result = finish()
        ok = True
        return result
    finally:
        if started and ok:
            any_proc.stop()
        elif started:  # an error or Ctrl-C mid-run: Lava's own stop would wait for the run
            _terminate(any_proc, list(procs.values()))


def components(procs: list) -> list[list]:
    """Process plans (``.name``, ``.inputs``) grouped into the connected parts Lava compiles
    separately (it compiles what is connected to the process it runs), each in the given
    order, parts in the order of their first plan."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(p.name for p in procs)
    g.add_edges_from((v, p.name) for p in procs for v in p.inputs)
    part = {name: i for i, names in enumerate(nx.connected_components(g)) for name in names}
    groups: dict[int, list] = {}
    for p in procs:
        groups.setdefault(part[p.name], []).append(p)
    return list(groups.values())


@contextmanager
def error_file(procs: list) -> Iterator[str]:
    """A temporary file every process model of ``procs`` writes its traceback to (the
    runner polls it: :func:`_run_interruptibly`); removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="snnc-lava-") as tmp:
        path = os.path.join(tmp, "errors.txt")
        for p in procs:
            p.spec["error_file"] = path
        yield path
