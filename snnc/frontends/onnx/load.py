"""Loading an ONNX model and choosing what to import from it.

Reads the model (resolving external data) and checks it is one; checks the default-domain
opset; selects the graph outputs to import, stripping label / probability post-processing
(skl2onnx's ``ArgMax -> ArrayFeatureExtractor -> Cast`` label, ``ZipMap`` dictionaries,
...); lists the nodes the kept outputs depend on; and copies a model with other tensors as
outputs (for the onnxruntime reference).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import onnx

from snnc.errors import DataError
from snnc.frontends.onnx.trust import check_graph, check_tensors
from snnc.frontends.onnx.helpers import DEFAULT_DOMAINS, FLOAT_TYPES, Source, node_attrs

log = logging.getLogger(__name__)

MIN_OPSET = 13

# Ops that only post-process a classifier's output into labels or dictionaries. Output
# chains made of these (plus the shape/cast glue in _LABEL_GLUE) are stripped on import.
_POSTPROC_OPS = {"ArgMax", "ArgMin", "ArrayFeatureExtractor", "ZipMap", "LabelEncoder", "CastMap", "TopK"}
_LABEL_GLUE = {"Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Concat"}


# ============================================================ loading and checks
def load_model(source: Source) -> onnx.ModelProto:
    """Read the model and check it is an ONNX model at all, with every stored tensor and
    node well-formed (:mod:`.trust`); external data is read only from beside the file,
    after its references were checked."""
    base_dir: Path | None = None
    if isinstance(source, onnx.ModelProto):
        model, where = source, "the given ModelProto"
    else:
        path = Path(source)
        where = repr(str(path))
        if not path.is_file():
            raise DataError(f"ONNX model file {where} does not exist")
        base_dir = path.parent
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf DecodeError and the like
            raise DataError(
                f"{where} is not a readable ONNX model ({type(exc).__name__}: {_first_line(exc)}); "
                "expected a .onnx file written by torch.onnx.export, skl2onnx, tf2onnx or onnx.save"
            ) from exc
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.output:
        raise DataError(f"{where} is not an ONNX model (no graph or no outputs); expected a .onnx file written by an ONNX exporter")
    external = check_tensors(model, base_dir)
    if external and base_dir is not None:
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(base_dir))
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise DataError(f"cannot read the external data of {where}: {_first_line(exc)}") from None
    check_graph(model)
    return model


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def check_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain opset, which must be at least :data:`MIN_OPSET`."""
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if not versions:
        raise DataError("the ONNX model imports no default-domain opset; it cannot be interpreted")
    opset = max(versions)
    if opset < MIN_OPSET:
        raise DataError(
            f"the ONNX model uses opset {opset}; snnc imports opset {MIN_OPSET} or newer. Re-export it "
            f"(e.g. torch.onnx.export(..., opset_version=17)) or convert it with "
            f"onnx.version_converter.convert_version(model, {MIN_OPSET})"
        )
    return opset


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are exactly ``names`` (any tensors)."""
    current = [o.name for o in model.graph.output]
    if current == list(names):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    declared = {o.name: o for o in model.graph.output}
    del copy.graph.output[:]
    for name in names:
        # onnxruntime infers the type of an output declared by name only.
        copy.graph.output.append(declared.get(name) or onnx.ValueInfoProto(name=name))
    return copy


# ============================================================== output selection
def _elem_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Types of graph inputs, outputs and, when some output is not a declared float tensor,
    of the intermediates too (from ONNX shape inference, if it succeeds)."""
    graph = model.graph
    infos = list(graph.input) + list(graph.output) + list(graph.value_info)
    declared = {o.name: o.type for o in graph.output}
    if any(t.WhichOneof("value") != "tensor_type" or t.tensor_type.elem_type not in FLOAT_TYPES for t in declared.values()):
        try:
            infos += list(onnx.shape_inference.infer_shapes(model).graph.value_info)
        except (onnx.shape_inference.InferenceError, RuntimeError, ValueError) as exc:  # heuristics take over
            log.debug("ONNX shape inference failed (%s); guessing tensor types", exc)
    return {i.name: i.type for i in infos}


def _is_float_tensor(name: str, types: dict[str, onnx.TypeProto], producer: dict[str, onnx.NodeProto]) -> bool:
    t = types.get(name)
    if t is not None and t.WhichOneof("value") is not None:
        if t.WhichOneof("value") != "tensor_type":
            return False
        return t.tensor_type.elem_type in FLOAT_TYPES
    node = producer.get(name)
    if node is None:
        return True
    if node.op_type in _POSTPROC_OPS:
        return False
    if node.op_type == "Cast":
        return node_attrs(node).get("to") in FLOAT_TYPES
    return True


def select_outputs(model: onnx.ModelProto) -> tuple[list[str], list[str], set[str]]:
    """The ONNX tensors the IR graph will output, notices about what was dropped, and the
    first output names of the stripped post-processing nodes."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output if o}
    constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    types = _elem_types(model)
    sources: list[str] = []
    notices: list[str] = []
    stripped: set[str] = set()
    kept = {o.name for o in graph.output if _is_float_tensor(o.name, types, producer)}
    for out in graph.output:
        name = out.name
        node = producer.get(name)
        if name in kept or (node is not None and node.op_type == "ArgMax"):
            # Float tensors are the model's outputs; a bare ArgMax stays an IR argmax
            # (canonicalize strips it later).
            if name not in sources:
                sources.append(name)
            continue
        chain, roots, nodes = _postproc_chain(name, types, producer, constants)
        if chain is None:
            # Not recognisable post-processing: convert it and let the converter explain.
            sources.append(name)
            continue
        msg = f"stripped output post-processing: output {name!r} ({' → '.join(chain)}) dropped"
        exposed = [r for r in roots if r not in kept and r not in sources]
        if exposed:
            msg += f"; its input tensor {', '.join(map(repr, exposed))} becomes a graph output"
        elif roots:
            msg += f"; its input tensor {', '.join(map(repr, roots))} is a graph output already"
        sources.extend(exposed)
        stripped.update(nodes)
        notices.append(msg)
    if not sources:
        raise DataError("the ONNX model has no tensor output snnc can import (every output is label post-processing)")
    return sources, notices, stripped


def _postproc_chain(
    name: str,
    types: dict[str, onnx.TypeProto],
    producer: dict[str, onnx.NodeProto],
    constants: set[str],
) -> tuple[list[str] | None, list[str], list[str]]:
    """Walk back from a non-float output through post-processing ops to float tensors.

    Returns the op types on the way (in data-flow order), the float tensors reached and the
    nodes' first output names, or ``(None, [], [])`` when the chain contains anything that is
    not post-processing.
    """
    chain: list[str] = []
    nodes: list[str] = []
    roots: list[str] = []
    stack, seen = [name], set()
    found_postproc = False
    while stack:
        t = stack.pop()
        if t in seen or t in constants:
            continue
        seen.add(t)
        node = producer.get(t)
        if node is None or (t != name and _is_float_tensor(t, types, producer) and node.op_type not in _POSTPROC_OPS):
            roots.append(t)
            continue
        if node.op_type not in _POSTPROC_OPS | _LABEL_GLUE:
            return None, [], []
        found_postproc |= node.op_type in _POSTPROC_OPS
        chain.append(node.op_type)
        nodes.append(node.output[0])
        stack.extend(i for i in node.input if i)
    if not found_postproc:
        return None, [], []
    return chain[::-1], roots[::-1], nodes


def needed_nodes(graph: onnx.GraphProto, sources: Sequence[str]) -> list[onnx.NodeProto]:
    """The nodes the ``sources`` tensors depend on, in model order."""
    producer = {o: n for n in graph.node for o in n.output if o}
    needed: set[int] = set()
    stack, seen = list(sources), set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        node = producer.get(t)
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(i for i in node.input if i)
    return [n for n in graph.node if id(n) in needed]
