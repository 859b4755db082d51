"""Helpers the ONNX frontend tests share: import a model and check it against onnxruntime."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx

from snnc.frontends.check import check_import
from snnc.frontends.onnx import import_onnx, onnx_reference
from snnc.ir import Graph


def check_against_onnxruntime(model: onnx.ModelProto | str, *, tol: float, n: int, seed: int = 0) -> Graph:
    """Import ``model`` and compare the IR with onnxruntime on ``n`` random samples."""
    graph = import_onnx(model)
    x = np.random.default_rng(seed).standard_normal((n, *graph.inputs[0].shape)).astype(np.float32)
    ref = onnx_reference(model, graph.meta["output_sources"], num_threads=1)
    check_import(graph, ref, x, reference_name="onnxruntime", atol=tol, rtol=tol)
    return graph


def ops(graph: Graph) -> Counter:
    """Op histogram, ignoring the structural ops canonicalize removes."""
    return Counter(n.op for n in graph.nodes if n.op not in ("identity", "dropout"))
