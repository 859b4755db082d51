"""The import check: the IR's own ANN evaluation must match the original model."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from snnc.errors import DataError, ImportMismatchError
from snnc.ir.graph import Graph
from snnc.ir.executor import ann_batch_size, run_ann

log = logging.getLogger(__name__)

Reference = Callable[[np.ndarray], list[np.ndarray]]


def check_import(
    graph: Graph,
    reference: Reference,
    x: np.ndarray,
    *,
    reference_name: str,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    batch_size: int = 256,
) -> dict:
    """Evaluate ``graph`` and ``reference`` on ``x``; raise ImportMismatchError if any output
    differs by more than ``atol + rtol * max|reference|``. Returns the measured errors."""
    batch_size = ann_batch_size(graph, batch_size)  # the reference runs in batches as large
    ours = run_ann(graph, x, batch_size=batch_size)
    theirs: list[list[np.ndarray]] = [[] for _ in ours]
    for start in range(0, len(x), batch_size):
        for acc, y in zip(theirs, reference(x[start : start + batch_size])):
            acc.append(np.asarray(y, dtype=np.float32))
    errors = []
    for value, a, chunks in zip(graph.outputs, ours, theirs):
        b = np.concatenate(chunks, axis=0)
        if a.shape != b.shape:
            b = b.reshape(a.shape) if a.size == b.size else b
        if a.shape != b.shape:
            raise ImportMismatchError(
                f"imported graph output {value.name!r} has shape {list(a.shape)} but {reference_name} gives {list(b.shape)}"
            )
        # Non-finite reference outputs are the model's or the data's doing, not the import's.
        finite = np.isfinite(b).reshape(len(b), -1).all(axis=1) if b.size else np.ones(0, bool)
        if not finite.all():
            i = int(np.argmin(finite))
            bad_input = not np.isfinite(x[i]).all()
            cause = (
                f"input sample {i} itself holds NaN/inf; give finite input data"
                if bad_input
                else "the model overflows on this input, or its constants are not finite; check the model's weights and the input's scale"
            )
            raise DataError(f"output {value.name!r} of the model is not finite (NaN/inf) for sample {i} in {reference_name}: {cause}")
        err = float(np.max(np.abs(a - b))) if a.size else 0.0
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        tol = atol + rtol * scale
        errors.append({"output": value.name, "max_abs_error": err, "max_abs_reference": scale, "tolerance": tol})
        if not err <= tol:
            raise ImportMismatchError(
                f"the imported graph does not compute what the original model computes: output {value.name!r} "
                f"differs from {reference_name} by up to {err:.3g} (tolerance {tol:.3g}) on {len(x)} samples. "
                "This is a bug in snnc's importer or an op it interprets differently; please report it with the model."
            )
    result = {
        "reference": reference_name,
        "samples": int(len(x)),
        "max_abs_error": max(e["max_abs_error"] for e in errors),
        "outputs": errors,
    }
    log.info("import check vs %s on %d samples: max |error| %.3g", reference_name, len(x), result["max_abs_error"])
    return result
