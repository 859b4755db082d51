"""Frontends: import trained ANNs (ONNX files, torch modules) into the snnc IR.

:func:`import_model` picks the frontend from what it is given and returns the ANN-stage
graph together with a *reference*: a function evaluating the original model (with
onnxruntime or torch) at exactly the tensors the IR's outputs stand for, which the
import check compares against.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from snnc.errors import DataError
from snnc.ir.graph import Graph


@dataclass
class ImportedModel:
    graph: Graph
    reference: Callable[[np.ndarray], list[np.ndarray]]
    reference_name: str
    source: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_model(model: Any, input_shape: Sequence[int] | None = None) -> ImportedModel:
    """Import an ONNX file path / ``onnx.ModelProto`` / ``torch.nn.Module`` / ``GraphModule``."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise DataError(f"model file {str(path)!r} does not exist")
        if not path.is_file():
            raise DataError(f"model file {str(path)!r} is not a regular file (a directory or a device); give the .onnx file's path")
        if path.suffix.lower() not in (".onnx", ""):
            raise DataError(
                f"model file {str(path)!r}: snnc imports ONNX files (.onnx); for a torch model use the Python API "
                "snnc.convert(module, calib=...)"
            )
        from snnc.frontends.onnx import import_onnx, onnx_reference

        graph = import_onnx(path)
        ref = onnx_reference(path, graph.meta["output_sources"])
        source = {"path": str(path), "sha256": sha256_file(path), **graph.meta.get("source", {})}
        return ImportedModel(graph, ref, "onnxruntime", source)
    try:
        import onnx

        if isinstance(model, onnx.ModelProto):
            from snnc.frontends.onnx import import_onnx, onnx_reference

            graph = import_onnx(model)
            ref = onnx_reference(model, graph.meta["output_sources"])
            digest = hashlib.sha256(model.SerializeToString()).hexdigest()
            return ImportedModel(graph, ref, "onnxruntime", {"sha256": digest, **graph.meta.get("source", {})})
    except ImportError:  # pragma: no cover - onnx is a dependency
        pass
    import torch

    if isinstance(model, torch.nn.Module):
        if input_shape is None:
            raise DataError("importing a torch module needs the per-sample input shape (given by the calibration data)")
        from snnc.frontends.torch_fx import import_torch, torch_reference

        graph = import_torch(model, tuple(input_shape))
        h = hashlib.sha256()
        for k, v in model.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return ImportedModel(graph, torch_reference(model), "torch", {"sha256": h.hexdigest(), **graph.meta.get("source", {})})
    raise DataError(f"cannot import a {type(model).__name__}: give an ONNX file path, an onnx.ModelProto or a torch.nn.Module")
