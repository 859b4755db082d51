"""Path counting through linear ops: each op's map with every weight / coefficient set to 1.

The vector-Jacobian product of ones through these maps counts, per source element, the
synaptic paths to a destination: the energy estimate's fan-out (snnc.analysis.energy) and
core mapping's connectivity (snnc.mapping.connectivity) are both built on it. Average
pooling counts window membership (a sum), not 1/k of it; data movement passes 0/1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from snnc.errors import DataError
from snnc.ir.executor import Executor
from snnc.ir.graph import Node


def indicator(node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    """``node``'s linear map with every non-zero weight / coefficient replaced by 1: the
    vector-Jacobian product of ones through it counts paths (synapses)."""
    op = node.op
    attrs = node.attr_dict()
    if node.spec.has("synaptic"):
        p = {"weight": torch.ones(node.params["weight"].shape, dtype=torch.float64), "bias": None}
        return node.spec.compute(xs, attrs, p)
    if op == "global_avg_pool":
        x = xs[0]
        return x.sum(dim=tuple(range(2, x.dim())), keepdim=bool(attrs["keepdims"]))
    if op == "avg_pool":
        return window_sum(node, xs[0])
    if node.spec.has("preserves_amplitude") and not node.params:  # data movement (reshape, concat, upsample): 0/1 already
        return node.spec.compute(xs, attrs, {})
    if op == "add":
        coeffs = node.attr("coeffs")
        out = None
        for i, x in enumerate(xs):
            if coeffs is not None:
                c = (torch.as_tensor(np.asarray(coeffs[i], dtype=np.float64)) != 0).to(torch.float64)
                if c.dim() == 1 and x.dim() > 2:
                    c = c.view(-1, *([1] * (x.dim() - 2)))
                x = x * c
            out = x if out is None else out + x
        return out
    if op == "affine":
        scale = torch.as_tensor(np.asarray(node.params["scale"], dtype=np.float64))
        return xs[0] * (scale != 0).to(torch.float64)
    if op == "concat_constant":  # the constant part is no input: no path from it
        value = torch.zeros((xs[0].shape[0], *np.shape(node.params["value"])), dtype=xs[0].dtype)
        parts = [value, xs[0]] if attrs["position"] == "before" else [xs[0], value]
        return torch.cat(parts, dim=attrs["axis"])
    raise DataError(f"no synapse path count for op {op!r} (node {node.name!r})")


def window_sum(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Window membership of an average (or spiking max) pool (every real input of a window counts 1,
    whatever the divisor; padding has no input): a depthwise conv with a kernel of ones over
    the input padded to exactly the windows the op has (its output shape, ceil_mode included)."""
    nd = x.dim() - 2
    k = list(node.attr("kernel"))
    s = list(node.attr("strides") or k)
    pads = list(node.attr("pads") or [0] * (2 * nd))
    out_sp = list(node.output.shape[1:])
    fpad: list[int] = []
    crop = [slice(None), slice(None)]
    for i in range(nd):
        length = x.shape[2 + i]
        need = (out_sp[i] - 1) * s[i] + k[i]
        right = need - (length + pads[i])
        crop.append(slice(0, length + min(0, right)))
        fpad = [pads[i], max(0, right)] + fpad  # F.pad lists the last dimension first
    x = F.pad(x[tuple(crop)], fpad)
    c = x.shape[1]
    conv = F.conv1d if nd == 1 else F.conv2d
    y = conv(x, torch.ones((c, 1, *k), dtype=x.dtype), stride=s, groups=c)
    if list(y.shape[2:]) != out_sp:  # pragma: no cover - shape inference and this padding disagree
        raise DataError(f"pooling windows of {node.name!r} do not match its output shape")
    return y


class Indicators(Executor):
    """The executor on path counts: each node runs its indicator map (:func:`indicator`)."""

    def run_node(self, node: Node, ins: list[torch.Tensor]) -> torch.Tensor:
        return indicator(node, ins)
