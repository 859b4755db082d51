"""Import torch models into the snnc IR.

``import_torch(model, input_shape)`` deep-copies the model (the caller's module, its
``training`` flags, parameters and buffers are never touched), switches the copy to eval
mode, traces it and translates the traced graph node by node into an ANN-stage
:class:`~snnc.ir.Graph` through per-target converter tables (:mod:`.importer`,
:mod:`.translate`):

* ``torch.fx.symbolic_trace`` is tried first; its ``call_module`` nodes go through
  ``MODULE_CONVERTERS`` (keyed by the exact module class, because a subclass may
  override ``forward``), ``call_function`` nodes through ``FUNCTION_CONVERTERS`` and
  ``call_method`` nodes through ``METHOD_CONVERTERS`` (:mod:`.converters`, one module per
  family). A ``GraphModule`` given by the user is translated as is.
* When symbolic tracing fails (Python control flow on traced values), the model is
  exported with ``torch.export.export`` (dynamic batch dimension) and functionalised with
  ``run_decompositions({})``, which turns in-place ops into pure ones without decomposing
  anything else; its ATen ops go through ``ATEN_CONVERTERS`` (:mod:`.aten`).

Every converter's signature mirrors the torch signature it translates (``F.max_pool2d``
and ``aten.max_pool2d`` share one), so Python itself binds positional and keyword
arguments; arguments a converter does not know make the op unsupported.

While translating, each traced node stands for one of: an IR :class:`Value` (a tensor
computed from the input; its per-sample shape is known as soon as it is emitted), a
constant ``torch.Tensor`` (parameter, buffer or folded expression), :data:`~.context.BATCH` (the
symbolic batch size that ``x.size(0)`` / ``x.shape[0]`` evaluate to), plain Python
data, or one of two transient forms (:mod:`.context`): a ``Permuted`` tensor, whose batch
axis a permute moved (timm's ``qkv.permute(2, 0, 3, 1, 4)``: the IR keeps the batch first, so
the following ``qkv[0]`` / ``unbind(0)`` becomes a ``select`` plus one batch-first
``transpose``, and anything else reading it is refused), and a ``BatchConstant``
(``cls_token.expand(B, -1, -1)``, which ``torch.cat`` turns into a ``concat_constant``).

Transformers: LayerNorm, GELU, SiLU, softmax inside the network, ``@`` of two computed
tensors, ``F.scaled_dot_product_attention``, transpose / permute / indexing / unbind /
chunk / split (:mod:`.converters.layout`, :mod:`.converters.attention`).
``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` and ``nn.TransformerEncoder``
(``WHOLE_MODULES``) are converted as a whole into their IR subgraph (q/k/v linear layers,
per-head reshape and transpose, matmul, softmax, matmul, output projection): torch.fx keeps
them as leaf modules; on the torch.export path their call signatures are preserved
(``preserve_module_call_signature``) and each call's region of ATen ops is replaced by the
module converter. Size queries are answered from the propagated shapes, so
``x.view(x.size(0), -1)`` becomes a per-sample reshape. Expressions over constants only
(``self.mean.view(1, -1, 1, 1)``, ``x.size(1) * x.size(2)``) are evaluated on the spot.

In-place ops (``torch.relu_``, ``F.relu(x, inplace=True)``, ``nn.ReLU(inplace=True)``,
``x.add_(y)``, ``operator.iadd``) are recorded by fx as ordinary calls, yet at run time
every later reader of the mutated tensor sees the mutated value. The translator therefore
rebinds the mutated node to the op's result. Mutation through views (writing into
``x.view(...)`` changes ``x``) is not tracked; the import check
(:func:`snnc.frontends.check.check_import` with :func:`torch_reference`, :mod:`.reference`)
catches it.

Node emission, the unsupported-op hints and the error classes are shared with the ONNX
frontend (:mod:`snnc.frontends.common`).
"""

from snnc.frontends.torch_fx.importer import import_torch
from snnc.frontends.torch_fx.reference import torch_reference

__all__ = ["import_torch", "torch_reference"]
