"""fold-bn: fold inference BatchNorm into the preceding convolution or linear layer.

For ``y = BN(W x + b)`` with per-channel ``scale`` (gamma), ``bias`` (beta), ``mean`` and
``var``, let ``k = gamma / sqrt(var + eps)``. Then ``y = (k W) x + (k (b - mean) + beta)``:
the weights are scaled per output channel and the bias is replaced. A BatchNorm that does
not follow a foldable layer (input normalisation, after an add or a pooling) becomes the
equivalent per-channel ``affine``: ``y = k x + (beta - k mean)``.

A fold is declined when the layer's output is also read elsewhere (folding would change
that other reader); such a BatchNorm becomes an affine instead.
"""

from __future__ import annotations

import logging

import numpy as np

from snnc.ir.graph import Graph, Node
from snnc.passes.base import Pass, PassContext, register_pass

log = logging.getLogger(__name__)


@register_pass
class FoldBatchNorm(Pass):
    """After fold-bn no batch_norm remains; the graph computes the same function (up to
    float rounding)."""

    name = "fold-bn"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        changed = False
        for bn in list(graph.find("batch_norm")):
            k, shift = _bn_coefficients(bn)
            layer = bn.inputs[0].producer
            reason = _why_not_foldable(graph, layer)
            if reason is None:
                _fold_into(layer, k, shift)
                graph.bypass(bn)
            else:
                log.info("fold-bn: %s becomes an affine (%s)", bn.name, reason)
                shape = bn.inputs[0].shape
                bshape = (-1,) + (1,) * (len(shape) - 1)
                affine = graph.add_node(
                    "affine",
                    [bn.inputs[0]],
                    params={"scale": k.reshape(bshape), "shift": shift.reshape(bshape)},
                    name=f"{bn.name}_affine",
                    shape=bn.output.shape,
                    before=bn,
                )
                graph.replace_all_uses(bn.output, affine.output)
                graph.remove_node(bn)
            changed = True
        return changed


def _bn_coefficients(bn: Node) -> tuple[np.ndarray, np.ndarray]:
    p = bn.params
    k = p["scale"].astype(np.float64) / np.sqrt(p["var"].astype(np.float64) + float(bn.attr("epsilon")))
    shift = p["bias"] - k * p["mean"]
    return k, shift


def _why_not_foldable(graph: Graph, layer: Node | None) -> str | None:
    if layer is None:
        return "it reads a graph input"
    if not layer.spec.has("synaptic"):
        return f"it follows a {layer.op}, not a conv or linear layer"
    if len(layer.output.uses) != 1 or any(o is layer.output for o in graph.outputs):
        return f"the output of {layer.name!r} is also read elsewhere"
    return None


def _fold_into(layer: Node, k: np.ndarray, shift: np.ndarray) -> None:
    w = layer.params["weight"].astype(np.float64)
    b = layer.params["bias"].astype(np.float64)
    if layer.op == "conv_transpose":
        # weight is [C_in, C_out/groups, *kernel]; output channel g*(C_out/groups)+j.
        groups = int(layer.attr("groups"))
        cin, cout_g = w.shape[:2]
        wg = w.reshape(groups, cin // groups, cout_g, *w.shape[2:])
        kg = k.reshape(groups, 1, cout_g, *([1] * (w.ndim - 2)))
        w = (wg * kg).reshape(w.shape)
    else:
        w = w * k.reshape((-1,) + (1,) * (w.ndim - 1))
    layer.set_param("weight", w)
    layer.set_param("bias", k * b + shift)
