"""Import ONNX models into the snnc IR (ANN stage).

The import runs in four steps:

1. **Load and check** the model (:mod:`.load`, :mod:`.trust`): the file is untrusted input.
   Every stored tensor's type, dims and data length are checked before any array is made
   (external data only from files beside the model), every node against its ONNX schema
   (onnx's checker: arity, required attributes), graph outputs must be produced; then a
   default-domain opset >= 13 and exactly one tensor input whose dimensions after the first
   (the batch) are static. Sizes are bounded before allocation: declared and folded tensors
   (``MAX_ELEMENTS``), per-sample activations (``MAX_ACTIVATION``, checked as each node is
   emitted, with shapes inferred on torch's meta device); NaN/inf weights are refused naming
   the initializer. Every failure is an :class:`~snnc.errors.SnncError` naming the tensor or
   node.
2. **Select outputs** (:mod:`.load`): graph outputs that are label / probability
   post-processing (skl2onnx's ``ArgMax -> ArrayFeatureExtractor -> Cast`` label, ``ZipMap``
   dictionaries, ...) are dropped with a notice; when a dropped output hangs off a float
   tensor that is not already an output, that tensor becomes an output instead.
   ``graph.meta["output_sources"]`` lists the ONNX tensor each IR output stands for, so
   :func:`onnx_reference` (:mod:`.reference`) can evaluate exactly those tensors.
3. **Convert** the nodes the kept outputs depend on, in the model's (topological) order
   (:mod:`.importer`):

   * a node whose inputs are all constants is *folded* (:mod:`.fold`): evaluated with numpy
     (a small table of the ops exporters use to compute shapes), or by ``onnx.reference``
     for anything else;
   * every other node goes through the per-op converter table ``CONVERTERS``
     (:mod:`.converters`, one module per op family), which maps it onto IR ops. An op
     missing from the table raises :class:`~snnc.errors.UnsupportedOpError`.
4. **Finish**: set the outputs, infer shapes, verify the ANN stage.

**The batch dimension in folded shapes.** IR shapes are per sample; ONNX tensors carry the
batch dimension first. ``Shape`` of a tensor computed from the input folds to
``[BATCH, *per_sample_shape]`` where ``BATCH`` is a sentinel integer standing for the
(symbolic) batch size. Index ops (Gather, Slice, Concat, Unsqueeze, Where, ...) move it
around unchanged, so a ``Reshape`` target built from it is recognised as keeping the batch
dimension first. Arithmetic on the sentinel (``batch * 16``) yields ``UNKNOWN``, which no
consumer accepts: such models really do mix samples of a batch.

**Chains proved per-sample.** A fold that computes on the batch size (``Range(0, batch)``)
is kept as batch-dependent rather than refused, and ``Reshape(x, [-1])`` of the whole batch
as a whole-batch flatten; either raises its refusal when anything but the following reads
it. ``Gather`` of a whole-batch flatten (the dynamo exporter's ``as_strided`` for
``torch.flatten`` of a channels-last tensor) evaluates its indices for batch sizes 2 and 3;
when they are ``b * S + offset`` with the same in-range offsets for every sample and both
sizes, and the offsets are the identity order, the chain is a per-sample reshape. A Reshape
restoring the batch axis of a whole-batch flatten is one too.

**Transformers.** Before converting, decomposed GELU (erf and tanh forms), SiLU and
LayerNormalization are recognised and fused into ``gelu`` / ``silu`` / ``layer_norm``
(:mod:`.patterns`). Tensors whose batch axis an exporter moves (``nn.MultiheadAttention``'s
``[N, batch * heads, d]``, a permute of stacked q, k, v) are kept as layout views of
batch-first IR values and followed through Reshape, Transpose, Gather, Slice, Split,
element-wise ops, MatMul, Softmax and LayerNormalization until the batch is first again
(:mod:`.layout`). ``Expand`` of a constant to ``[batch, ...]`` folds to a constant repeated
over the batch, which Concat with a computed tensor turns into ``concat_constant`` (a ViT's
class token).

**Algebra of the folds done while converting** (everything else maps one ONNX node to one
IR node):

* ``Gemm``: ``Y = alpha * A @ op(B) + beta * C`` with ``transA = 0`` is ``linear`` with
  ``weight = alpha * op(B).T`` and ``bias = beta * C`` (zeros when C is absent).
* ``MatMul(x, W)`` is ``linear`` with ``weight = W.T`` (over the last axis, any rank); when
  its only reader is ``Add(·, b)`` with a constant ``b`` varying along the last axis only,
  ``b`` becomes the bias. ``MatMul(a, b)`` of two computed tensors is ``matmul``.
* ``x + c``, ``x - c``, ``c - x``, ``x * c``, ``x / c`` with a constant ``c`` are ``affine``
  with (scale, shift) = (1, c), (1, -c), (-1, c), (c, 0), (1/c, 0); ``x - y`` of two tensors is
  ``add`` with ``coeffs = [1, -1]``.
* ``Clip(x, 0, m)`` is ``relu`` with ``max = m`` (None when m is absent or infinite).
* ``ReduceMean`` over exactly the spatial axes is ``global_avg_pool``; ``Flatten`` (axis 1),
  ``Squeeze`` and ``Unsqueeze`` of non-batch axes are ``reshape``.
* ``Transpose`` (spatial axes first) → ``GatherND`` (constant indices) → ``Transpose`` →
  ``ReduceMean``, the dynamo exporter's adaptive average pooling, is ``avg_pool`` and / or
  ``upsample`` when its index table equals theirs (checked numerically); an ``AveragePool``
  of kernel 1, stride 1 and no padding is ``identity``.
* ``Resize``/``Upsample`` is ``upsample`` only when, for every spatial axis, its coordinate
  transformation and rounding pick input index ``o // s`` for output index ``o`` (checked
  numerically, so every mode combination that is an integer nearest upsample is accepted).

Node emission, the unsupported-op hints and the error classes are shared with the torch
frontend (:mod:`snnc.frontends.common`).
"""

from __future__ import annotations

import logging

import onnx
import onnx.inliner

from snnc.frontends.onnx.converters import CONVERTERS, unsupported_hint
from snnc.frontends.onnx.fold import FOLDERS, fold_with_reference
from snnc.frontends.onnx.helpers import Source
from snnc.frontends.onnx.importer import Importer
from snnc.frontends.onnx.load import MIN_OPSET, check_opset, load_model
from snnc.frontends.onnx.reference import onnx_reference
from snnc.ir.graph import Graph
from snnc.errors import DataError
from snnc.ir.shapes import ShapeMismatch, infer_shapes
from snnc.ir.verify import verify

__all__ = ["CONVERTERS", "FOLDERS", "MIN_OPSET", "import_onnx", "onnx_reference"]

log = logging.getLogger(__name__)


def import_onnx(source: Source) -> Graph:
    """Import an ONNX model as an ANN-stage IR graph (shapes inferred, verified).

    ``source`` is a path (external data next to the file is resolved) or a ``ModelProto``.
    ``graph.meta`` receives ``source`` (format, producer, opset), ``notices`` (what was
    stripped, folded or fused, human-readable) and ``output_sources`` (the ONNX tensor each
    graph output stands for; pass it to :func:`~snnc.frontends.onnx.onnx_reference`).

    Raises :class:`DataError` for unreadable or unusable models (and for layers that do not
    fit the model's input shape) and :class:`UnsupportedOpError` for ops snnc cannot represent.
    """
    model = load_model(source)
    opset = check_opset(model)
    if model.functions:
        # Local functions (emitted by some exporters) are expanded so each op is visible.
        model = onnx.inliner.inline_local_functions(model)
    importer = Importer(model, opset, converters=CONVERTERS, folders=FOLDERS, fold_fallback=fold_with_reference, unsupported_hint=unsupported_hint)
    graph = importer.run()
    graph.meta["source"] = {
        "format": "onnx",
        "producer": model.producer_name,
        "producer_version": model.producer_version,
        "opset": opset,
    }
    graph.meta["notices"] = list(importer.notices)
    graph.meta["output_sources"] = list(importer.output_sources)
    for msg in importer.notices:
        log.info("import notice: %s", msg)
    try:
        infer_shapes(graph)
    except ShapeMismatch as exc:  # emission inferred shapes on the meta device, which checks less
        raise DataError(f"the imported graph's {exc}; the model's layers do not fit their inputs (the model is malformed)") from None
    verify(graph, "ann")
    log.info("imported ONNX model: %d IR nodes, %d parameters", len(graph.nodes), graph.num_params())
    return graph

