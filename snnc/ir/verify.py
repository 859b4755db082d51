"""Stage verifiers.

``verify(graph)`` checks the structural invariants every graph keeps (one producer per
value, exact use lists, topological order, unique names, known ops with their required
attributes and parameters, shapes known) and then the rules of the graph's stage:

* **ANN stage**: only ops allowed in the ANN stage.
* **SNN stage** (required before any backend runs a graph): no ReLU, BatchNorm, MaxPool,
  dropout, identity or post-processing left; every ``if_neuron`` has a positive finite
  threshold, a reset mode and an initial potential that broadcast over its input; every
  graph output is produced by a ``readout`` and readouts produce nothing else.

All failures raise :class:`~snnc.errors.VerificationError` naming the node at fault.
"""

from __future__ import annotations

import numpy as np

from snnc.errors import VerificationError
from snnc.ir.graph import Graph
from snnc.ir.ops import REQUIRED, SNN, get_op

STAGES = ("ann", "snn")


def verify(graph: Graph, stage: str | None = None) -> None:
    stage = stage or graph.stage
    if stage not in STAGES:
        raise VerificationError(f"unknown stage {stage!r}; expected one of {STAGES}")
    _verify_structure(graph)
    for node in graph.nodes:
        spec = get_op(node.op)
        if stage not in spec.stages:
            hint = {
                "relu": "run insert-if (after balance-thresholds)",
                "batch_norm": "run fold-bn",
                "max_pool": "run insert-if, which converts MaxPool (see --maxpool)",
                "identity": "run canonicalize",
                "dropout": "run canonicalize",
                "softmax": "run canonicalize",
                "argmax": "run canonicalize",
            }.get(node.op, "")
            msg = f"node {node.name!r}: op {node.op!r} is not allowed in the {stage.upper()} stage"
            raise VerificationError(msg + (f" ({hint})" if hint else ""))
    if stage == SNN:
        _verify_snn(graph)


def _verify_structure(graph: Graph) -> None:
    if not graph.inputs:
        raise VerificationError(f"graph {graph.name!r} has no inputs")
    if not graph.outputs:
        raise VerificationError(f"graph {graph.name!r} has no outputs")
    names: set[str] = set()
    defined: set[int] = set()
    for v in graph.inputs:
        if v.producer is not None:
            raise VerificationError(f"graph input {v.name!r} has a producer")
        if v.shape is None:
            raise VerificationError(f"graph input {v.name!r} has no shape")
        names.add(v.name)
        defined.add(id(v))
    uses: dict[int, list] = {id(v): [] for v in graph.values()}
    for node in graph.nodes:
        if node.graph is not graph:
            raise VerificationError(f"node {node.name!r} belongs to another graph")
        if node.name in names:
            raise VerificationError(f"name {node.name!r} is defined twice")
        names.add(node.name)
        if node.output.producer is not node:
            raise VerificationError(f"node {node.name!r}: its output names another producer")
        spec = get_op(node.op)
        if spec.arity is not None and len(node.inputs) != spec.arity:
            raise VerificationError(f"node {node.name!r}: op {node.op!r} takes {spec.arity} input(s), has {len(node.inputs)}")
        if spec.arity is None and not node.inputs:
            raise VerificationError(f"node {node.name!r}: op {node.op!r} needs at least one input")
        for i, v in enumerate(node.inputs):
            if id(v) not in defined:
                raise VerificationError(f"node {node.name!r} reads {v.name!r} before it is defined (not in topological order)")
            uses.setdefault(id(v), []).append((node, i))
        for key in node.attrs:
            if key not in spec.attrs:
                raise VerificationError(f"node {node.name!r}: op {node.op!r} has no attribute {key!r}")
        for key, default in spec.attrs.items():
            if default is REQUIRED and key not in node.attrs:
                raise VerificationError(f"node {node.name!r}: required attribute {key!r} of {node.op!r} missing")
        for key in spec.params:
            if key not in node.params:
                raise VerificationError(f"node {node.name!r}: required parameter {key!r} of {node.op!r} missing")
        for key, arr in node.params.items():
            if key not in spec.params and key not in spec.optional_params:
                raise VerificationError(f"node {node.name!r}: op {node.op!r} has no parameter {key!r}")
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
                raise VerificationError(f"node {node.name!r}: parameter {key!r} must be a float32 array")
            if not np.all(np.isfinite(arr)):
                raise VerificationError(f"node {node.name!r}: parameter {key!r} has non-finite values")
        if node.output.shape is None:
            raise VerificationError(f"node {node.name!r}: output shape unknown (run infer_shapes)")
        defined.add(id(node.output))
    for v in graph.values():
        want = sorted((id(n), i) for n, i in uses.get(id(v), []))
        have = sorted((id(n), i) for n, i in v.uses)
        if want != have:
            raise VerificationError(f"use list of {v.name!r} is stale")
    for v in graph.outputs:
        if id(v) not in defined:
            raise VerificationError(f"graph output {v.name!r} is not defined in the graph")


def _verify_snn(graph: Graph) -> None:
    outputs = {id(v) for v in graph.outputs}
    for node in graph.nodes:
        if node.op == "if_neuron":
            th = node.params["threshold"]
            if th.size == 0 or not np.all(th > 0):
                raise VerificationError(f"node {node.name!r}: threshold must be positive")
            if node.attr("reset") not in ("subtract", "zero"):
                raise VerificationError(f"node {node.name!r}: reset must be 'subtract' or 'zero'")
            if node.attr("spike_scale") not in ("threshold", "unit"):
                raise VerificationError(f"node {node.name!r}: spike_scale must be 'threshold' or 'unit'")
            shape = node.inputs[0].shape
            for key in ("threshold", "v_init"):
                try:
                    np.broadcast_shapes(node.params[key].shape, shape)
                except ValueError:
                    raise VerificationError(
                        f"node {node.name!r}: {key} of shape {list(node.params[key].shape)} does not broadcast over {list(shape)}"
                    ) from None
                if len(np.broadcast_shapes(node.params[key].shape, shape)) != len(shape):
                    raise VerificationError(f"node {node.name!r}: {key} has more dimensions than its input")
        if node.op == "readout" and id(node.output) not in outputs:
            raise VerificationError(f"node {node.name!r}: a readout must produce a graph output")
    for v in graph.outputs:
        if v.producer is None or v.producer.op != "readout":
            raise VerificationError(f"graph output {v.name!r} is not produced by a readout (run insert-if)")


def verify_consistency(graph: Graph) -> None:
    """Check every node's attributes and parameters against its op's rules
    (:meth:`~snnc.ir.ops.OpSpec.validate`: types, ranges, parameter shapes vs attributes and
    input shapes) and its recorded output shape against the one its op infers, in graph
    order. What a graph read from an untrusted file must pass before anything executes it.

    Parameters are only looked at for their shapes and shapes are inferred on torch's
    ``meta`` device (:func:`~snnc.ir.ops.shapes_only`), so this allocates nothing in
    proportion to the graph's tensors. Raises VerificationError naming the node."""
    from snnc.ir.ops import shapes_only
    from snnc.ir.shapes import ShapeMismatch

    for v in graph.inputs:
        if v.shape is None or not v.shape or any(d < 1 for d in v.shape):
            raise VerificationError(f"graph input {v.name!r}: shape {list(v.shape or [])} must list positive sizes")
    for node in graph.nodes:
        spec = get_op(node.op)
        shapes = [v.shape for v in node.inputs]
        if any(s is None for s in shapes):
            raise VerificationError(f"node {node.name!r} ({node.op}): the shape of an input is unknown")
        where = f"node {node.name!r} ({node.op})"
        try:
            resolved = spec.validate(shapes, node.attrs, {k: np.shape(a) for k, a in node.params.items()})
            with shapes_only():
                if spec.shape is not None:
                    inferred = tuple(int(d) for d in spec.shape([tuple(s) for s in shapes], resolved))
                else:
                    inferred = spec.infer_shape(shapes, resolved, node.params)
        except ShapeMismatch as e:
            raise VerificationError(f"{where}: {e.detail}") from None
        except VerificationError as e:
            raise VerificationError(f"{where}: {e}") from None
        except (RuntimeError, ValueError, IndexError, TypeError, OverflowError, ZeroDivisionError) as e:
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            got = [list(s) for s in shapes]
            raise VerificationError(f"{where}: its op cannot take input(s) of per-sample shape {got}: {detail}") from None
        if node.output.shape != inferred:
            recorded = None if node.output.shape is None else list(node.output.shape)
            raise VerificationError(f"{where}: recorded output shape {recorded} differs from the {list(inferred)} its op computes")
