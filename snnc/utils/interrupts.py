"""SIGINT and SIGTERM as exceptions, so that every cleanup (``finally``, atomic writes) runs.

The ``snnc`` command installs :func:`install` before it imports anything heavy. Both
signals then raise :class:`Interrupted` (a ``KeyboardInterrupt``) in the main thread; the
command removes its temporary files, prints one line and exits 128 + the signal number
(130 for Ctrl-C, 143 for SIGTERM). :func:`deferred` holds a signal back for the few
statements that must not be split (renaming finished outputs into place, removing
temporary files); it is raised as soon as the block ends.

Standard library only: this module is imported before torch, numpy or click.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)

_held = 0  # depth of deferred() blocks
_pending: int | None = None  # a signal received while held
_owner: int | None = None  # the process that installed the handlers (forked children behave as usual)
written: list[str] = []  # outputs renamed into place by this process (for the interrupt message)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handler(signum: int, _frame) -> None:
    global _pending
    if os.getpid() != _owner:  # a forked worker (e.g. a backend's): Python's usual behaviour
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _held:
        if _pending is None:
            _pending = signum
        return
    raise Interrupted(signum)


def install() -> None:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` (main thread only; a signal the
    parent set to be ignored, e.g. SIGINT of a background job, stays ignored)."""
    global _owner
    _owner = os.getpid()
    for sig in HANDLED:
        try:
            if signal.getsignal(sig) in (signal.SIG_IGN, None):
                continue
            signal.signal(sig, _handler)
        except (ValueError, OSError):  # not the main thread, or an unsupported platform
            pass


def installed() -> bool:
    return signal.getsignal(signal.SIGTERM) is _handler


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Run the block without being split by SIGINT/SIGTERM (when :func:`install` is active);
    a signal that arrived meanwhile is raised when the outermost block ends."""
    global _held, _pending
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if _held == 0 and _pending is not None:
            signum, _pending = _pending, None
            raise Interrupted(signum)


def stop_handling() -> None:
    """From now on ignore further SIGINT/SIGTERM (the process is already on its way out)."""
    global _held
    _held += 1


def exit_code(exc: BaseException) -> int:
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + int(signal.SIGINT)


def message(exc: BaseException) -> str:
    """One line for an interrupted command: which signal, and whether anything was written."""
    name = signal.Signals(exc.signum).name if isinstance(exc, Interrupted) else "SIGINT"
    if written:
        return f"interrupted ({name}) after writing {', '.join(written)}; nothing else written"
    return f"interrupted ({name}); no output written"
