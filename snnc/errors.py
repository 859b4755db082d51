"""snnc's exception hierarchy.

Every error a user can cause derives from :class:`SnncError`; its message says what is
wrong and what to do next. The CLI prints the message (no traceback unless ``--debug``)
and exits with status 2. Anything else escaping the library is a bug in snnc.
"""

from __future__ import annotations


class SnncError(Exception):
    """Base class of all user-facing snnc errors (CLI exit status 2)."""


class UnsupportedOpError(SnncError):
    """A model contains an operation snnc cannot import or a backend cannot run."""

    def __init__(self, op_type: str, node: str, hint: str, where: str = "import"):
        self.op_type = op_type
        self.node = node
        self.hint = hint
        super().__init__(f"unsupported op {op_type!r} at node {node!r} ({where}): {hint}")


class ImportMismatchError(SnncError):
    """The imported graph does not compute what the original model computes."""


class VerificationError(SnncError):
    """An IR invariant does not hold (raised by the stage verifiers)."""


class PassError(SnncError):
    """A pass could not run (bad options, missing requirement, or failed verification)."""


class CalibrationError(SnncError):
    """Calibration data is missing or unusable."""


class DataError(SnncError):
    """An input data file is missing, malformed or does not fit the model."""


class ArtifactError(SnncError):
    """A .snn artifact cannot be read or written."""


class BackendError(SnncError):
    """A backend is unknown, not installed, or cannot run a graph."""


class ExportError(SnncError):
    """A graph cannot be written in (or read back from) an exchange format such as NIR."""
