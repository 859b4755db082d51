"""The torch import driver: :func:`import_torch` traces an eval-mode copy of the model
(``torch.fx`` first, ``torch.export`` when that fails) and translates the trace."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from snnc.errors import DataError, UnsupportedOpError
from snnc.frontends.torch_fx.converters import WHOLE_MODULES
from snnc.frontends.torch_fx.reference import device_of, float_dtype
from snnc.frontends.torch_fx.translate import ExportTranslator, FxTranslator
from snnc.ir.graph import Graph, Shape
from snnc.ir.shapes import infer_shapes
from snnc.ir.verify import verify

log = logging.getLogger(__name__)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _whole_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The outermost submodules converted as a whole (attention layers), by qualified name."""
    found: dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if name and type(m) in WHOLE_MODULES and not any(name.startswith(f"{outer}.") for outer in found):
            found[name] = m
    return found


def _export(model: nn.Module, input_shape: Shape) -> Any:
    """Export with a dynamic batch dimension, so ``x.size(0)`` stays symbolic. The call
    signatures of the layers converted as a whole are preserved, so that the translator can
    find each call's inputs and outputs."""
    # Dynamic dimensions need an example size of at least 2 (0 and 1 get specialised).
    example = torch.zeros((2, *input_shape), dtype=float_dtype(model), device=device_of(model))
    batch = torch.export.Dim("batch")

    def export(preserve: tuple[str, ...]) -> Any:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},), preserve_module_call_signature=preserve)
        # An empty decomposition table only functionalises: in-place ops become pure ones.
        return program.run_decompositions({})

    whole = tuple(_whole_modules(model))
    if whole:
        try:
            return export(whole)
        except Exception as e:  # noqa: BLE001 - without the signatures those layers go op by op (and are refused)
            log.info("torch.export preserving the call signatures of %s failed (%s); exporting without", list(whole), _first_line(e))
    return export(())


def _translate(model: nn.Module, graph: Graph, input_shape: Shape, notices: list[str]) -> str:
    """Trace ``model`` (an eval-mode copy) and translate it into ``graph``; returns the tracer."""
    if isinstance(model, fx.GraphModule):
        notices.append("used the given torch.fx.GraphModule as is (not re-traced)")
        FxTranslator(graph, model, input_shape).run()
        return "torch.fx"
    try:
        gm = fx.symbolic_trace(model)
    except Exception as fx_error:  # noqa: BLE001 - any tracing failure sends us to torch.export
        log.info("torch.fx.symbolic_trace failed (%s); trying torch.export", _first_line(fx_error))
        try:
            program = _export(model, input_shape)
        except Exception as export_error:
            raise UnsupportedOpError(
                "untraceable Python code",
                f"{type(model).__name__}.forward",
                f"torch.fx.symbolic_trace failed ({_first_line(fx_error)}) and torch.export.export failed "
                f"({_first_line(export_error)}). Control flow that depends on tensor values cannot be "
                "converted: make branches depend only on shapes or module attributes, or trace the model "
                "yourself and pass the torch.fx.GraphModule",
            ) from export_error
        notices.append(
            f"traced with torch.export.export because torch.fx.symbolic_trace failed ({_first_line(fx_error)}); "
            "Python control flow was specialised to the input shape"
        )
        ExportTranslator(graph, program, input_shape, _whole_modules(model)).run()
        return "torch.export"
    notices.append("traced with torch.fx.symbolic_trace")
    FxTranslator(graph, gm, input_shape).run()
    return "torch.fx"


def import_torch(model: nn.Module | fx.GraphModule, input_shape: Sequence[int]) -> Graph:
    """Import a torch model as an ANN-stage IR graph.

    ``input_shape`` is the per-sample input shape (no batch dimension), e.g. ``(3, 32, 32)``.
    The model is deep-copied and the copy put in eval mode, so the caller's module is left
    exactly as it was. The graph's shapes are inferred and it is verified; ``meta`` gets
    ``source`` (format, class, tracer) and ``notices``.

    Raises UnsupportedOpError naming the first op without a converter, and DataError when
    ``input_shape`` does not fit the model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"import_torch expects a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise DataError(
            f"{type(model).__name__} is a TorchScript module, which torch.fx and torch.export cannot trace; "
            "pass the original nn.Module, or export it to ONNX and convert the .onnx file"
        )
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise DataError("the model's parameters are on the meta device (they hold no values); load its weights first (e.g. load_state_dict(..., assign=True))")
    low = sorted({str(t.dtype).removeprefix("torch.") for t in model.parameters() if t.dtype in (torch.float16, torch.bfloat16)})
    if low:
        raise DataError(
            f"the model's parameters are {', '.join(low)}; snnc converts float32 networks (its import check compares against the "
            "model itself): convert a float32 copy, snnc.convert(model.float(), ...)"
        )
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise DataError(f"input_shape must be the per-sample shape as positive integers (no batch dimension), got {list(input_shape)}")
    shape = tuple(int(d) for d in shape)

    notices: list[str] = []
    if model.training:
        notices.append(
            "the model is in training mode; it was imported with inference semantics "
            "(BatchNorm running statistics, dropout off) without switching the model itself"
        )
    work = copy.deepcopy(model).eval()
    graph = Graph(type(model).__name__, stage="ann")
    tracer = _translate(work, graph, shape, notices)

    removed = graph.remove_dead_nodes()
    if removed:
        log.info("dropped %d node(s) whose results the model never uses", removed)
    infer_shapes(graph)
    verify(graph)
    graph.meta["source"] = {"format": "torch", "class": type(model).__name__, "tracer": tracer}
    graph.meta["notices"] = notices
    log.info("imported %s with %s: %d nodes, %d parameters", type(model).__name__, tracer, len(graph.nodes), graph.num_params())
    return graph
