"""Import ONNX models into the snnc IR (ANN stage).

The import runs in four steps:

1. **Load and check** the model (:mod:`.load`): a readable ONNX file, default-domain opset
   >= 13, exactly one tensor input whose dimensions after the first (the batch) are static.
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

**Algebra of the folds done while converting** (everything else maps one ONNX node to one
IR node):

* ``Gemm``: ``Y = alpha * A @ op(B) + beta * C`` with ``transA = 0`` is ``linear`` with
  ``weight = alpha * op(B).T`` and ``bias = beta * C`` (zeros when C is absent).
* ``MatMul(x, W)`` is ``linear`` with ``weight = W.T``; when its only reader is
  ``Add(·, b)`` with a constant ``b`` varying along the last axis only, ``b`` becomes the bias.
* ``x + c``, ``x - c``, ``c - x``, ``x * c``, ``x / c`` with a constant ``c`` are ``affine``
  with (scale, shift) = (1, c), (1, -c), (-1, c), (c, 0), (1/c, 0); ``x - y`` of two tensors is
  ``add`` with ``coeffs = [1, -1]``.
* ``Clip(x, 0, m)`` is ``relu`` with ``max = m`` (None when m is absent or infinite).
* ``ReduceMean`` over exactly the spatial axes is ``global_avg_pool``; ``Flatten`` (axis 1),
  ``Squeeze`` and ``Unsqueeze`` of non-batch axes are ``reshape``.
* ``Resize``/``Upsample`` is ``upsample`` only when, for every spatial axis, its coordinate
  transformation and rounding pick input index ``o // s`` for output index ``o`` (checked
  numerically, so every mode combination that is an integer nearest upsample is accepted).

Node emission, the unsupported-op hints and the error classes are shared with the torch
frontend (:mod:`snnc.frontends.common`).
"""

from snnc.frontends.onnx.converters import CONVERTERS
from snnc.frontends.onnx.fold import FOLDERS
from snnc.frontends.onnx.importer import import_onnx
from snnc.frontends.onnx.load import MIN_OPSET
from snnc.frontends.onnx.reference import onnx_reference

__all__ = ["CONVERTERS", "FOLDERS", "MIN_OPSET", "import_onnx", "onnx_reference"]
