"""The import check's reference for ONNX models: onnxruntime evaluating exactly the tensors
the imported graph's outputs stand for."""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import ModuleType

import numpy as np
import onnx
import torch

from snnc.errors import DataError
from snnc.frontends.check import Reference
from snnc.frontends.onnx.helpers import Source
from snnc.frontends.onnx.load import load_model, with_outputs


def import_onnxruntime() -> ModuleType:
    """onnxruntime, loaded with its telemetry off. On Linux, onnxruntime 1.32 (the version
    installed here) otherwise writes a device id and an event database under
    ``$XDG_CACHE_HOME/Microsoft/DeveloperTools`` (``~/.cache``) at its first session: files
    outside anything the user named. ``ORT_DISABLE_TELEMETRY`` is read when the library
    loads, so this must run before any other import of it; a value the user set is kept."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def onnx_reference(
    source: Source,
    output_names: Sequence[str] | None = None,
    *,
    num_threads: int | None = None,
) -> Reference:
    """An onnxruntime (CPU) evaluation of the model's tensors ``output_names``.

    onnxruntime runs on ``num_threads`` threads (default: torch's, ``torch.get_num_threads()``).
    ``output_names`` defaults to the graph outputs; pass ``graph.meta["output_sources"]`` of
    the imported graph to compare it with :func:`snnc.frontends.check.check_import`.
    Intermediate tensors are exposed as extra outputs on a copy of the model. Models whose
    batch dimension is fixed are run in chunks of that size (the last chunk zero-padded).
    """
    ort = import_onnxruntime()
    loaded = load_model(source)
    names = [o.name for o in loaded.graph.output] if output_names is None else list(output_names)
    model = with_outputs(loaded, names)
    # An unmodified file is given to onnxruntime by path: no 2 GB protobuf limit, and its
    # external data is found next to it.
    session_source = str(source) if model is loaded and not isinstance(source, onnx.ModelProto) else model.SerializeToString()
    opts = ort.SessionOptions()
    # torch's thread budget (OMP_NUM_THREADS, torch.set_num_threads): onnxruntime's own
    # default is one thread per core, which oversubscribes the cores when several ranks
    # share a machine (torchrun sets one thread per rank)
    opts.intra_op_num_threads = num_threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(session_source, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        detail = (str(exc).strip().splitlines() or [""])[0][:300]
        raise DataError(f"onnxruntime cannot load the model: {detail}") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in session.get_inputs() if i.name not in initializers]
    if len(inputs) != 1:
        raise DataError(f"the model has {len(inputs)} inputs; snnc handles single-input models")
    inp = inputs[0]
    dtype = {"tensor(double)": np.float64, "tensor(float16)": np.float16}.get(inp.type, np.float32)
    fixed = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None

    def session_run(feed: np.ndarray) -> list[np.ndarray]:
        try:
            return session.run(names, {inp.name: feed})
        except Exception as exc:  # onnxruntime raises its own exception types
            detail = (str(exc).strip().splitlines() or [""])[0][:300]
            raise DataError(
                f"onnxruntime cannot run the model on input of shape {list(feed.shape)}: {detail}. The model is malformed "
                "or does not take this input shape"
            ) from None

    def run(x: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(x, dtype=dtype)
        if fixed is None:
            return session_run(x)
        chunks: list[list[np.ndarray]] = [[] for _ in names]
        for start in range(0, len(x), fixed):
            xb = x[start : start + fixed]
            n = len(xb)
            if n < fixed:
                xb = np.concatenate([xb, np.zeros((fixed - n, *xb.shape[1:]), dtype)], axis=0)
            for acc, y in zip(chunks, session_run(xb)):
                acc.append(y[:n])
        return [np.concatenate(c, axis=0) for c in chunks]

    return run
