"""Transformer ops: layer normalisation, GELU / SiLU, the product of two computed tensors
(``@`` / ``torch.matmul`` / ``torch.bmm`` -> ``matmul``), ``F.scaled_dot_product_attention``,
and the torch.nn attention layers converted as a whole into the equivalent IR subgraph
(``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``, ``nn.TransformerEncoder``:
torch.fx keeps them as leaf modules, and their forward has fast paths and checks that do
not trace).

The subgraph of one attention layer, over ``[B, L, E]`` tokens with H heads of hd = E / H::

    q = linear(x, Wq / sqrt(hd), bq / sqrt(hd)) -> reshape [L, H, hd] -> transpose [B, H, L, hd]
    k = linear(x, Wk, bk)                        -> reshape [L, H, hd] -> transpose [B, H, hd, L]
    v = linear(x, Wv, bv)                        -> reshape [L, H, hd] -> transpose [B, H, L, hd]
    y = matmul(softmax(matmul(q, k), axis -1), v) -> transpose [B, L, H, hd] -> reshape [L, E]
    out = linear(y, out_proj)

(the softmax scale is folded into the query projection). Nodes are named
``<layer>.<part>`` (``blocks.0.attn.q``, ``encoder.layers.1.self_attn.scores``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snnc.frontends.torch_fx.context import Context, Permuted, full_rank, to_numpy
from snnc.frontends.torch_fx.converters.arithmetic import emit_affine
from snnc.frontends.torch_fx.converters.layout import batch_first
from snnc.ir.graph import Value


def _sub(prefix: str, part: str) -> str:
    return f"{prefix}.{part}" if prefix else part


# ------------------------------------------------------------- elementwise
def emit_layer_norm(cx: Context, x: Any, normalized_shape: Any, weight: Any, bias: Any, eps: Any, sub: str | None = None) -> Value:
    x = cx.tensor(x)
    shape = [normalized_shape] if isinstance(normalized_shape, int) else list(normalized_shape)
    if len(shape) != 1:
        cx.unsupported(
            f"layer norm over the last {len(shape)} axes {shape}; snnc's layer_norm normalises the last axis only "
            "(reshape the tensor so that the normalised features are one axis)"
        )
    d = x.shape[-1] if x.shape else None
    if shape[0] != d:
        cx.unsupported(f"normalized_shape {shape} does not match the last axis of per-sample shape {list(x.shape)}")
    scale = torch.ones(d) if weight is None else cx.constant(weight, "weight").reshape(-1)
    shift = torch.zeros(d) if bias is None else cx.constant(bias, "bias").reshape(-1)
    params = {"scale": to_numpy(scale), "bias": to_numpy(shift)}
    return cx.emit("layer_norm", [x], {"epsilon": cx.number(eps, "eps")}, params, sub=sub)


def layer_norm(cx: Context, input: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: Any = 1e-5) -> Value:
    """``F.layer_norm`` / ``torch.layer_norm``."""
    return emit_layer_norm(cx, input, normalized_shape, weight, bias, eps)


def aten_layer_norm(
    cx: Context, input: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: Any = 1e-5, cudnn_enable: Any = True
) -> Value:
    return emit_layer_norm(cx, input, normalized_shape, weight, bias, eps)


def emit_gelu(cx: Context, x: Any, approximate: Any = "none", sub: str | None = None) -> Value:
    if approximate not in ("none", "tanh"):
        cx.unsupported(f"gelu approximate={approximate!r}; expected 'none' or 'tanh'")
    return cx.emit("gelu", [cx.tensor(x)], {"approximate": approximate}, sub=sub)


def gelu(cx: Context, input: Any, approximate: Any = "none") -> Value:
    return emit_gelu(cx, input, approximate)


def silu(cx: Context, input: Any, inplace: bool = False) -> Value:
    return cx.emit("silu", [cx.tensor(input)])


# --------------------------------------------------------- matrix products
def _swap_last(rank: int) -> list[int]:
    perm = list(range(rank))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    return perm


def matmul(cx: Context, input: Any, other: Any) -> Value:
    """``a @ b``: two computed tensors -> ``matmul``; a computed tensor times a constant
    matrix -> ``linear``."""
    if isinstance(input, Value) and isinstance(other, Value):
        ra, rb = full_rank(input), full_rank(other)
        if ra != rb or ra < 3:
            cx.unsupported(
                f"matmul of tensors of shapes {[*['B'], *input.shape]} and {[*['B'], *other.shape]}: both must have the batch "
                "axis and at least two more, and the same number of axes (broadcasting against the batch would mix samples)"
            )
        return cx.emit("matmul", [input, other])
    if isinstance(input, Value) and isinstance(other, torch.Tensor):
        w = cx.constant(other, "other")
        if w.dim() != 2:
            cx.unsupported(f"a product with a constant of shape {list(w.shape)}; only a constant matrix (2-D) is supported")
        return cx.emit("linear", [input], None, {"weight": to_numpy(w.T), "bias": to_numpy(torch.zeros(w.shape[1]))})
    if isinstance(other, (Value, Permuted)) and isinstance(input, torch.Tensor):
        cx.unsupported("a constant matrix times a computed tensor; write it as x @ W (or F.linear), which is a linear layer")
    cx.tensor(input, "first operand")
    cx.tensor(other, "second operand")
    raise AssertionError("unreachable")


def bmm(cx: Context, input: Any, mat2: Any) -> Value:
    for t in (input, mat2):
        if isinstance(t, Value) and full_rank(t) != 3:
            cx.unsupported(f"bmm takes 3-D tensors, got per-sample shape {list(t.shape)}")
    return matmul(cx, input, mat2)


def emit_attention(cx: Context, q: Value, k_t: Value, v: Value, prefix: str = "") -> tuple[Value, Value]:
    """``softmax(q @ k_t, -1) @ v`` (q already scaled, k already transposed); returns the
    output and the attention weights."""
    scores = cx.emit("matmul", [q, k_t], sub=_sub(prefix, "scores"))
    weights = cx.emit("softmax", [scores], {"axis": full_rank(scores) - 1}, sub=_sub(prefix, "softmax"))
    return cx.emit("matmul", [weights, v], sub=_sub(prefix, "context")), weights


def scaled_dot_product_attention(
    cx: Context,
    query: Any,
    key: Any,
    value: Any,
    attn_mask: Any = None,
    dropout_p: Any = 0.0,
    is_causal: Any = False,
    scale: Any = None,
    enable_gqa: Any = False,
) -> Value:
    """``F.scaled_dot_product_attention`` without mask, dropout or causal masking."""
    if attn_mask is not None or is_causal:
        cx.unsupported("attention masks (attn_mask, is_causal) are not supported")
    if dropout_p not in (0, 0.0):
        cx.unsupported(f"dropout_p={dropout_p!r} at inference; pass dropout_p=0.0 (or self.attn_drop.p if self.training else 0.0)")
    if enable_gqa:
        cx.unsupported("grouped-query attention (enable_gqa=True) is not supported")
    q, k, v = cx.tensor(query, "query"), cx.tensor(key, "key"), cx.tensor(value, "value")
    if not full_rank(q) == full_rank(k) == full_rank(v) or full_rank(q) < 3:
        cx.unsupported("query, key and value must have the batch axis and at least two more, and the same number of axes")
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else cx.number(scale, "scale")
    q = emit_affine(cx, q, torch.tensor(s), torch.tensor(0.0))
    k_t = cx.emit("transpose", [k], {"perm": _swap_last(full_rank(k))}, sub="kT")
    return emit_attention(cx, q, k_t, v)[0]


# ``aten.scaled_dot_product_attention`` has the same parameters (names, order, defaults) as
# ``F.scaled_dot_product_attention``, so one converter serves both.
aten_sdpa = scaled_dot_product_attention


# ------------------------------------------------------ torch.nn attention
def _sequence_input(cx: Context, x: Any, batch_first_layout: bool, what: str) -> Value:
    """A layer input as a ``[B, L, E]`` IR value: batch-first as it is, sequence-first
    (``[L, B, E]``, batch_first=False) from a tensor whose batch a transpose moved to axis 1."""
    if batch_first_layout:
        v = cx.tensor(x, what)
        if full_rank(v) != 3:
            cx.unsupported(f"its {what} must be a batch of token sequences [B, L, E], got per-sample shape {list(v.shape)}")
        return v
    if isinstance(x, Permuted) and len(x.axes) == 3 and x.batch_position == 1:
        return batch_first(cx, x, what)
    cx.unsupported(
        f"with batch_first=False its {what} must be [L, B, E] (the batch on axis 1, e.g. x.transpose(0, 1) of the "
        "model's [B, L, E] tokens); the model input has the batch on axis 0. Construct the layer with batch_first=True"
    )


def _check_mha(cx: Context, m: nn.MultiheadAttention) -> None:
    if type(m) is not nn.MultiheadAttention:
        cx.unsupported(f"{type(m).__name__} subclasses nn.MultiheadAttention; its forward may differ")
    if m.bias_k is not None or m.bias_v is not None:
        cx.unsupported("nn.MultiheadAttention with add_bias_kv=True is not supported")
    if m.add_zero_attn:
        cx.unsupported("nn.MultiheadAttention with add_zero_attn=True is not supported")


def _projections(m: nn.MultiheadAttention) -> list[tuple[torch.Tensor, torch.Tensor]]:
    e = m.embed_dim
    if m._qkv_same_embed_dim:
        ws = list(m.in_proj_weight.detach().float().chunk(3))
    else:
        ws = [m.q_proj_weight.detach().float(), m.k_proj_weight.detach().float(), m.v_proj_weight.detach().float()]
    bs = list(m.in_proj_bias.detach().float().chunk(3)) if m.in_proj_bias is not None else [torch.zeros(e)] * 3
    return list(zip(ws, bs))


def emit_mha(
    cx: Context, m: nn.MultiheadAttention, query: Value, key: Value, value: Value, prefix: str = ""
) -> tuple[Value, Value]:
    """The IR subgraph of ``m`` on ``[B, L, E]`` / ``[B, S, E]`` values; returns the output and
    the per-head attention weights ``[B, H, L, S]``."""
    _check_mha(cx, m)
    h, hd = m.num_heads, m.head_dim
    (wq, bq), (wk, bk), (wv, bv) = _projections(m)
    scale = 1.0 / math.sqrt(hd)

    def project(x: Value, w: torch.Tensor, b: torch.Tensor, part: str, perm: list[int]) -> Value:
        y = cx.emit("linear", [x], None, {"weight": to_numpy(w), "bias": to_numpy(b)}, sub=_sub(prefix, part))
        y = cx.emit("reshape", [y], {"shape": [y.shape[0], h, hd]}, sub=_sub(prefix, f"{part}_heads"))
        return cx.emit("transpose", [y], {"perm": perm}, sub=_sub(prefix, f"{part}_t"))

    q = project(query, wq * scale, bq * scale, "q", [0, 2, 1, 3])  # [B, H, L, hd]
    k = project(key, wk, bk, "k", [0, 2, 3, 1])  # [B, H, hd, S]
    v = project(value, wv, bv, "v", [0, 2, 1, 3])  # [B, H, S, hd]
    y, weights = emit_attention(cx, q, k, v, prefix)
    y = cx.emit("transpose", [y], {"perm": [0, 2, 1, 3]}, sub=_sub(prefix, "merge_t"))
    y = cx.emit("reshape", [y], {"shape": [y.shape[0], m.embed_dim]}, sub=_sub(prefix, "merge"))
    ow = m.out_proj.weight.detach().float()
    ob = m.out_proj.bias.detach().float() if m.out_proj.bias is not None else torch.zeros(ow.shape[0])
    out = cx.emit("linear", [y], None, {"weight": to_numpy(ow), "bias": to_numpy(ob)}, sub=_sub(prefix, "out_proj"))
    return out, weights


def _mean_heads(cx: Context, weights: Value, prefix: str = "") -> Value:
    """``weights.mean(1)`` of ``[B, H, L, S]`` attention weights, as linear layers see it."""
    h, l, s = weights.shape
    w = cx.emit("transpose", [weights], {"perm": [0, 2, 3, 1]}, sub=_sub(prefix, "weights_t"))
    mean = {"weight": to_numpy(torch.full((1, h), 1.0 / h)), "bias": to_numpy(torch.zeros(1))}
    w = cx.emit("linear", [w], None, mean, sub=_sub(prefix, "weights_mean"))
    return cx.emit("reshape", [w], {"shape": [l, s]}, sub=_sub(prefix, "weights"))


def _sequence_output(y: Value, batch_first_layout: bool) -> Value | Permuted:
    return y if batch_first_layout else Permuted(y, (1, 0, 2))


def multihead_attention(
    cx: Context,
    m: nn.MultiheadAttention,
    query: Any,
    key: Any,
    value: Any,
    key_padding_mask: Any = None,
    need_weights: Any = True,
    attn_mask: Any = None,
    average_attn_weights: Any = True,
    is_causal: Any = False,
) -> tuple[Any, Any]:
    """``nn.MultiheadAttention`` as a leaf module: ``(output, weights or None)``."""
    if key_padding_mask is not None or attn_mask is not None or is_causal:
        cx.unsupported("attention masks (key_padding_mask, attn_mask, is_causal) are not supported")
    bf = bool(m.batch_first)
    q = _sequence_input(cx, query, bf, "query")
    k = q if key is query else _sequence_input(cx, key, bf, "key")
    v = k if value is key else _sequence_input(cx, value, bf, "value")
    out, weights = emit_mha(cx, m, q, k, v)
    if not need_weights:
        return _sequence_output(out, bf), None
    # Unused weights are dropped with the other dead nodes after the import.
    return _sequence_output(out, bf), (_mean_heads(cx, weights) if average_attn_weights else weights)


def _emit_activation(cx: Context, act: Any, x: Value, sub: str) -> Value:
    if act is F.relu or type(act) is nn.ReLU:
        return cx.emit("relu", [x], sub=sub)
    if act is F.gelu:
        return emit_gelu(cx, x, "none", sub)
    if type(act) is nn.GELU:
        return emit_gelu(cx, x, act.approximate, sub)
    if act is F.silu or type(act) is nn.SiLU:
        return cx.emit("silu", [x], sub=sub)
    cx.unsupported(f"the feed-forward activation {act!r} is not supported (relu, gelu or silu)")


def _norm(cx: Context, m: Any, x: Value, sub: str) -> Value:
    if type(m) is not nn.LayerNorm:
        cx.unsupported(f"the normalisation {type(m).__name__} at {sub} is not supported (nn.LayerNorm)")
    return emit_layer_norm(cx, x, m.normalized_shape, m.weight, m.bias, m.eps, sub=sub)


def emit_encoder_layer(cx: Context, m: nn.TransformerEncoderLayer, x: Value, prefix: str = "") -> Value:
    """One ``nn.TransformerEncoderLayer`` (pre-norm or post-norm) on a ``[B, L, E]`` value."""
    if type(m) is not nn.TransformerEncoderLayer:
        cx.unsupported(f"{type(m).__name__} subclasses nn.TransformerEncoderLayer; its forward may differ")

    def sa(y: Value) -> Value:
        return emit_mha(cx, m.self_attn, y, y, y, _sub(prefix, "self_attn"))[0]

    def ff(y: Value) -> Value:
        lin1, lin2 = m.linear1, m.linear2
        y = cx.emit("linear", [y], None, _linear_params(lin1), sub=_sub(prefix, "linear1"))
        y = _emit_activation(cx, m.activation, y, _sub(prefix, "activation"))
        return cx.emit("linear", [y], None, _linear_params(lin2), sub=_sub(prefix, "linear2"))

    def add(a: Value, b: Value, part: str) -> Value:
        return cx.emit("add", [a, b], sub=_sub(prefix, part))

    if m.norm_first:
        x = add(x, sa(_norm(cx, m.norm1, x, _sub(prefix, "norm1"))), "add1")
        return add(x, ff(_norm(cx, m.norm2, x, _sub(prefix, "norm2"))), "add2")
    x = _norm(cx, m.norm1, add(x, sa(x), "add1"), _sub(prefix, "norm1"))
    return _norm(cx, m.norm2, add(x, ff(x), "add2"), _sub(prefix, "norm2"))


def _linear_params(lin: nn.Linear) -> dict[str, Any]:
    w = lin.weight.detach().float()
    b = lin.bias.detach().float() if lin.bias is not None else torch.zeros(w.shape[0])
    return {"weight": to_numpy(w), "bias": to_numpy(b)}


def _no_masks(cx: Context, *masks: Any, is_causal: Any) -> None:
    if any(mk is not None for mk in masks) or is_causal:
        cx.unsupported("attention masks (src_mask / mask, src_key_padding_mask, is_causal) are not supported")


def transformer_encoder_layer(
    cx: Context, m: nn.TransformerEncoderLayer, src: Any, src_mask: Any = None, src_key_padding_mask: Any = None, is_causal: Any = False
) -> Value | Permuted:
    _no_masks(cx, src_mask, src_key_padding_mask, is_causal=is_causal)
    bf = bool(m.self_attn.batch_first)
    return _sequence_output(emit_encoder_layer(cx, m, _sequence_input(cx, src, bf, "src")), bf)


def transformer_encoder(
    cx: Context, m: nn.TransformerEncoder, src: Any, mask: Any = None, src_key_padding_mask: Any = None, is_causal: Any = None
) -> Value | Permuted:
    _no_masks(cx, mask, src_key_padding_mask, is_causal=is_causal)
    if type(m) is not nn.TransformerEncoder:
        cx.unsupported(f"{type(m).__name__} subclasses nn.TransformerEncoder; its forward may differ")
    layers = list(m.layers)
    if not layers:
        cx.unsupported("a TransformerEncoder without layers")
    bf = bool(getattr(layers[0], "self_attn", None) is not None and layers[0].self_attn.batch_first)
    x = _sequence_input(cx, src, bf, "src")
    for i, layer in enumerate(layers):
        x = emit_encoder_layer(cx, layer, x, f"layers.{i}")
    if m.norm is not None:
        x = _norm(cx, m.norm, x, "norm")
    return _sequence_output(x, bf)
