"""Transformers through the torch frontend (snnc.frontends.torch_fx).

Tiny vision transformers on [1, 28, 28] inputs (7x7 patches: 16 tokens and a class token)
written three ways: by hand in the timm style (qkv Linear -> reshape -> permute(2, 0, 3, 1, 4)
-> q, k, v = qkv[0], qkv[1], qkv[2]), with nn.TransformerEncoder, and with
nn.MultiheadAttention. Every import must compute what the torch module computes, to ~1e-5,
on a batch of several samples (``check_import`` against ``torch_reference``), and the token
layout ops each get a small case of their own. The batch axis stays first in the IR: what
would move it for good is refused with a clear message.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from _torch_models import Net, import_and_check, ops

from snnc.errors import UnsupportedOpError
from snnc.frontends.torch_fx import import_torch

DIM, HEADS = 16, 2


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomize_norms(model: nn.Module) -> nn.Module:
    """Non-trivial LayerNorm affine parameters (the defaults 1 and 0 would hide a mix-up)."""
    for m in model.modules():
        if isinstance(m, nn.LayerNorm) and m.weight is not None:
            m.weight.data.uniform_(0.5, 1.5)
            if m.bias is not None:
                m.bias.data.normal_(0, 0.2)
    return model


# ---------------------------------------------------------- timm-style ViT
class Attention(nn.Module):
    """timm's Attention: one qkv projection, the batch moved by a permute and brought back by
    indexing (``style`` "index"), ``unbind(0)`` ("unbind") or the fused kernel ("sdpa")."""

    def __init__(self, dim: int, heads: int, style: str) -> None:
        super().__init__()
        self.num_heads, self.style = heads, style
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.style == "index":
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            q, k, v = qkv.unbind(0)
        if self.style == "sdpa":
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            x = attn @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, style: str, act: nn.Module) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, style)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), act, nn.Dropout(0.0), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchViT(nn.Module):
    """Conv2d patch embedding -> flatten(2).transpose(1, 2) -> class token -> + position
    embedding -> blocks -> LayerNorm -> x[:, 0] -> head."""

    def __init__(self, blocks: nn.Module, dim: int = DIM, classes: int = 10) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(1, dim, 7, stride=7)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim) * 0.5)
        self.blocks = blocks
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return x + self.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.blocks(self.tokens(x)))
        return self.head(x[:, 0])


def timm_vit(style: str = "index", act: nn.Module | None = None, depth: int = 2) -> nn.Module:
    blocks = nn.Sequential(*[Block(DIM, HEADS, style, act or nn.GELU()) for _ in range(depth)])
    return randomize_norms(PatchViT(blocks))


MNIST = (1, 28, 28)


@pytest.mark.parametrize("style", ["index", "unbind", "sdpa"])
def test_timm_style_vit(style: str) -> None:
    graph = import_and_check(timm_vit(style), MNIST)
    assert graph.meta["source"]["tracer"] == "torch.fx"
    found = ops(graph)
    for op in ("conv", "concat_constant", "affine", "layer_norm", "linear", "select", "transpose", "matmul", "softmax", "gelu"):
        assert op in found, op
    assert found.count("matmul") == 4 and found.count("softmax") == 2 and found.count("layer_norm") == 5
    # The batch stays first everywhere: every transpose keeps axis 0 in place.
    assert all(n.attrs["perm"][0] == 0 for n in graph.nodes if n.op == "transpose")


@pytest.mark.parametrize("act", [nn.GELU(approximate="tanh"), nn.SiLU(), nn.ReLU()], ids=["gelu_tanh", "silu", "relu"])
def test_timm_style_vit_activations(act: nn.Module) -> None:
    graph = import_and_check(timm_vit("index", act, depth=1), MNIST)
    gelus = [n for n in graph.nodes if n.op == "gelu"]
    if isinstance(act, nn.GELU):
        assert gelus and all(n.attrs["approximate"] == "tanh" for n in gelus)
    else:
        assert not gelus


def test_timm_style_qkv_select_then_one_transpose() -> None:
    """``qkv[0]`` after ``permute(2, 0, 3, 1, 4)`` is a select of the per-sample axis of
    size 3 followed by one transpose to [B, H, N, hd]."""
    graph = import_torch(timm_vit("index", depth=1), MNIST)
    selects = [n for n in graph.nodes if n.op == "select" and n.attrs["axis"] == 2]
    assert [n.attrs["index"] for n in selects] == [0, 1, 2]
    for n in selects:
        (user,) = n.output.users
        assert user.op == "transpose" and user.attrs["perm"] == [0, 2, 1, 3]
        assert user.output.shape == (HEADS, 17, DIM // HEADS)


class ShapeBranchViT(PatchViT):
    """A check on a shape that torch.fx cannot trace: imported through torch.export."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tokens(x)
        if x.shape[1] > 1:
            x = self.blocks(x)
        return self.head(self.norm(x)[:, 0])


@pytest.mark.parametrize("style", ["index", "unbind", "sdpa"])
def test_timm_style_vit_through_torch_export(style: str) -> None:
    blocks = nn.Sequential(Block(DIM, HEADS, style, nn.GELU()))
    graph = import_and_check(randomize_norms(ShapeBranchViT(blocks)), MNIST)
    assert graph.meta["source"]["tracer"] == "torch.export"
    assert {"concat_constant", "layer_norm", "matmul", "softmax", "gelu", "select"} <= set(ops(graph))


# -------------------------------------------------- nn.TransformerEncoder ViT
class EncoderViT(PatchViT):
    def __init__(self, norm_first: bool, activation: str, depth: int = 2) -> None:
        layer = nn.TransformerEncoderLayer(
            DIM, HEADS, 2 * DIM, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
        )
        norm = nn.LayerNorm(DIM) if norm_first else None
        super().__init__(nn.TransformerEncoder(layer, depth, norm=norm, enable_nested_tensor=False))


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_norm", "post_norm"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_encoder_vit(norm_first: bool, activation: str) -> None:
    model = randomize_norms(EncoderViT(norm_first, activation))
    graph = import_and_check(model, MNIST)
    found = ops(graph)
    assert found.count("matmul") == 4 and found.count("softmax") == 2
    assert found.count("layer_norm") == 4 + (1 if norm_first else 0) + 1
    assert (activation in found) and ("gelu" if activation == "relu" else "relu") not in found
    names = {n.name for n in graph.nodes}
    assert {"blocks.layers.0.self_attn.q", "blocks.layers.1.self_attn.out_proj", "blocks.layers.1.linear2"} <= names


class ShapeBranchEncoderViT(EncoderViT):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tokens(x)
        if x.shape[1] > 1:
            x = self.blocks(x)
        return self.head(x[:, 0])


def test_transformer_encoder_vit_through_torch_export() -> None:
    """Under torch.export the encoder's call signature is preserved and the call converted
    as a whole, like the torch.fx leaf module."""
    graph = import_and_check(randomize_norms(ShapeBranchEncoderViT(True, "gelu")), MNIST)
    assert graph.meta["source"]["tracer"] == "torch.export"
    assert ops(graph).count("matmul") == 4
    assert "blocks.layers.1.self_attn.scores" in {n.name for n in graph.nodes}


def test_transformer_encoder_layer_module_and_sequence_first_layout() -> None:
    """A layer with batch_first=False reads [L, B, E]: the model transposes its [B, L, E]
    tokens in and out, and the IR keeps the batch first throughout."""
    layer = nn.TransformerEncoderLayer(DIM, HEADS, 2 * DIM, dropout=0.0, activation="gelu", norm_first=True)
    model = randomize_norms(Net(lambda m, x: m.enc(x.transpose(0, 1)).transpose(0, 1), enc=layer))
    graph = import_and_check(model, (5, DIM))
    assert all(n.attrs["perm"][0] == 0 for n in graph.nodes if n.op == "transpose")


# ----------------------------------------------------- nn.MultiheadAttention
class MHABlock(nn.Module):
    def __init__(self, need_weights: bool = False, kdim: int | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(DIM)
        self.attn = nn.MultiheadAttention(DIM, HEADS, batch_first=True, kdim=kdim, vdim=kdim)
        self.need_weights = need_weights
        self.fc = nn.Linear(DIM, kdim) if kdim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        kv = self.fc(y) if self.fc is not None else y
        out, _ = self.attn(y, kv, kv, need_weights=self.need_weights)
        return x + out


@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_attention_self_attention_block(need_weights: bool) -> None:
    graph = import_and_check(randomize_norms(MHABlock(need_weights)), (17, DIM))
    assert ops(graph).count("matmul") == 2 and "softmax" in ops(graph)


def test_multihead_attention_separate_key_value_dims() -> None:
    import_and_check(randomize_norms(MHABlock(kdim=8)), (6, DIM))


class TwoCallsMHA(nn.Module):
    """One attention layer called twice (cross-attention, then self-attention), behind a
    shape check that sends the model through torch.export."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
        self.fc = nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > 1:
            x = x * 2
        kv = self.fc(x)
        # torch.export preserves a call signature only when every call passes the same
        # arguments and uses every output: both calls return the weights here.
        y, w1 = self.attn(x, kv, kv)
        y, w2 = self.attn(y, y, y)
        return y + x, w1 + w2


def test_multihead_attention_called_twice_through_torch_export() -> None:
    graph = import_and_check(TwoCallsMHA(), (5, DIM))
    assert graph.meta["source"]["tracer"] == "torch.export"
    assert ops(graph).count("matmul") == 4 and len(graph.outputs) == 2


def test_whole_layer_called_two_ways_through_torch_export_is_a_clear_error() -> None:
    class TwoWays(TwoCallsMHA):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[1] > 1:
                x = x * 2
            y = self.attn(x, x, x, need_weights=False)[0]
            return self.attn(y, y, y)[0]

    with pytest.raises(UnsupportedOpError) as info:
        import_torch(TwoWays(), (5, DIM))
    assert info.value.op_type == "call_module nn.MultiheadAttention" and info.value.node == "attn"
    assert "same arguments" in info.value.hint


def test_multihead_attention_weights_output() -> None:
    """The head-averaged attention weights, when the model returns them."""
    model = Net(lambda m, x: m.attn(x, x, x)[1], attn=nn.MultiheadAttention(DIM, HEADS, batch_first=True))
    graph = import_and_check(model, (5, DIM))
    assert graph.outputs[0].shape == (5, 5)
    model = Net(lambda m, x: m.attn(x, x, x, average_attn_weights=False)[1], attn=nn.MultiheadAttention(DIM, HEADS, batch_first=True))
    assert import_and_check(model, (5, DIM)).outputs[0].shape == (HEADS, 5, 5)


# ------------------------------------------------------------ single ops
CASES = [
    # (id, model builder, per-sample input shape, IR ops the import must contain)
    ("F.layer_norm", lambda: Net(lambda m, x: F.layer_norm(x, (DIM,), m.n.weight, m.n.bias, 1e-3), n=randomize_norms(nn.LayerNorm(DIM))), (4, DIM), ("layer_norm",)),
    ("nn.LayerNorm_no_affine", lambda: nn.Sequential(nn.LayerNorm(DIM, elementwise_affine=False)), (4, DIM), ("layer_norm",)),
    ("nn.LayerNorm_no_bias", lambda: nn.Sequential(randomize_norms(nn.LayerNorm(DIM, bias=False))), (4, DIM), ("layer_norm",)),
    ("F.gelu", lambda: Net(lambda m, x: F.gelu(x)), (6,), ("gelu",)),
    ("F.gelu_tanh", lambda: Net(lambda m, x: F.gelu(x, approximate="tanh")), (6,), ("gelu",)),
    ("F.silu", lambda: Net(lambda m, x: F.silu(x)), (6,), ("silu",)),
    ("nn.SiLU", lambda: nn.Sequential(nn.Linear(6, 6), nn.SiLU()), (6,), ("silu",)),
    ("softmax_inside", lambda: Net(lambda m, x: m.fc(F.softmax(x, dim=-1)), fc=nn.Linear(6, 2)), (3, 6), ("softmax", "linear")),
    ("nn.Softmax_inside", lambda: nn.Sequential(nn.Softmax(dim=1), nn.Linear(6, 2)), (3, 6), ("softmax",)),
    ("linear_tokens", lambda: nn.Sequential(nn.Linear(DIM, 8)), (5, DIM), ("linear",)),
    ("matmul_self", lambda: Net(lambda m, x: x @ x.transpose(1, 2)), (4, 3), ("matmul", "transpose")),
    ("torch.matmul_mT", lambda: Net(lambda m, x: torch.matmul(x, x.mT)), (2, 4, 3), ("matmul", "transpose")),
    ("torch.bmm", lambda: Net(lambda m, x: torch.bmm(x.transpose(1, 2), x)), (4, 3), ("matmul",)),
    ("matmul_constant", lambda: Net(lambda m, x: x @ m.fc.weight.T, fc=nn.Linear(6, 4)), (3, 6), ("linear",)),
    ("permute_batch_first", lambda: Net(lambda m, x: x.permute(0, 3, 1, 2)), (2, 3, 4), ("transpose",)),
    ("permute_there_and_back", lambda: Net(lambda m, x: x.permute(1, 0, 2).permute(1, 2, 0)), (3, 4), ("transpose",)),
    ("torch.transpose", lambda: Net(lambda m, x: torch.transpose(x, -1, 1)), (2, 3, 4), ("transpose",)),
    ("select_class_token", lambda: Net(lambda m, x: x[:, 0]), (5, 4), ("select",)),
    ("select_negative", lambda: Net(lambda m, x: x[:, :, -1]), (5, 4), ("select",)),
    ("slice_tokens", lambda: Net(lambda m, x: x[:, 1:]), (5, 4), ("slice",)),
    ("slice_ellipsis_step", lambda: Net(lambda m, x: x[..., ::2]), (5, 4), ("slice",)),
    ("slice_and_select", lambda: Net(lambda m, x: x[:, 1:4, 2]), (5, 4), ("slice", "select")),
    ("narrow", lambda: Net(lambda m, x: x.narrow(1, 1, 2)), (5, 4), ("slice",)),
    ("unbind", lambda: Net(lambda m, x: sum(x.unbind(1))), (3, 4), ("select", "add")),
    ("chunk", lambda: Net(lambda m, x: torch.cat(x.chunk(2, dim=-1)[::-1], dim=-1)), (3, 5), ("slice", "concat")),
    ("split_sizes", lambda: Net(lambda m, x: x.split([1, 3], dim=2)[1]), (3, 4), ("slice",)),
    ("split_size", lambda: Net(lambda m, x: torch.split(x, 2, dim=1)[1]), (5, 4), ("slice",)),
    ("unsqueeze_squeeze", lambda: Net(lambda m, x: x.unsqueeze(1).squeeze(1).unsqueeze(-1)), (3, 4), ("reshape",)),
    ("unflatten", lambda: Net(lambda m, x: x.unflatten(-1, (2, -1))), (3, 4), ("reshape",)),
    ("cat_constant_after", lambda: Net(lambda m, x: torch.cat([x, m.c.expand(x.size(0), -1, -1)], 1), c=nn.Linear(4, 2, bias=False)), (3, 4), ("concat_constant",)),
    ("token_mean", lambda: Net(lambda m, x: x[:, 1:].mean(dim=1)), (5, 4), ("slice", "transpose", "global_avg_pool")),
    ("token_mean_keepdim", lambda: Net(lambda m, x: x.mean(-2, keepdim=True)), (5, 4), ("global_avg_pool",)),
    ("mul_scale", lambda: Net(lambda m, x: x * 0.125), (3, 4), ("affine",)),
    ("add_pos_embed", lambda: Net(lambda m, x: x + m.fc.weight.unsqueeze(0), fc=nn.Linear(4, 3)), (3, 4), ("affine",)),
    ("add_expanded_constant", lambda: Net(lambda m, x: x * m.fc.weight.expand(x.shape[0], -1, -1), fc=nn.Linear(4, 3)), (3, 4), ("affine",)),
]


def _param_constant(model: nn.Module) -> nn.Module:
    # "cat_constant_after": a [1, 2, 4] parameter standing for extra learned tokens.
    if hasattr(model, "c"):
        model.c = nn.Parameter(torch.randn(1, 2, 4))  # type: ignore[assignment]
    return model


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_single_op(case: tuple) -> None:
    _, build, shape, expected = case
    graph = import_and_check(_param_constant(build()), shape)
    for op in expected:
        assert op in ops(graph), (op, ops(graph))


# ------------------------------------------------------------------ refusals
def _moved(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m.fc(x.transpose(0, 1))


REFUSED = [
    # (id, model builder, shape, node, text in the hint)
    ("permute_moves_batch", lambda: Net(lambda m, x: x.permute(1, 0, 2) * 2), (3, 4), "mul", "batch axis was moved"),
    ("linear_after_batch_move", lambda: Net(_moved, fc=nn.Linear(4, 2)), (3, 4), "fc", "qkv.permute(2, 0, 3, 1, 4)"),
    ("output_with_batch_moved", lambda: Net(lambda m, x: x.transpose(0, 1)), (3, 4), "output 0", "batch axis was moved"),
    ("index_batch_axis", lambda: Net(lambda m, x: x[0]), (3, 4), "getitem", "batch axis must be taken whole"),
    ("unbind_batch_axis", lambda: Net(lambda m, x: x.unbind(0)[0]), (3, 4), "unbind", "batch axis"),
    ("layer_norm_two_axes", lambda: nn.Sequential(nn.LayerNorm((3, 4))), (3, 4), "0", "last axis only"),
    ("matmul_broadcast_batch", lambda: Net(lambda m, x: x @ x[:, 0].transpose(1, 2)), (2, 3, 4), "matmul", "same number of axes"),
    ("mha_mask", lambda: Net(lambda m, x: m.a(x, x, x, attn_mask=torch.zeros(3, 3))[0], a=nn.MultiheadAttention(4, 1, batch_first=True)), (3, 4), "a", "masks"),
    ("mha_sequence_first_on_batch_first_input", lambda: Net(lambda m, x: m.a(x, x, x)[0], a=nn.MultiheadAttention(4, 1)), (3, 4), "a", "batch_first=True"),
    ("sdpa_causal", lambda: Net(lambda m, x: F.scaled_dot_product_attention(x, x, x, is_causal=True)), (3, 4), "scaled_dot_product_attention", "masks"),
    ("cat_constant_in_the_middle", lambda: Net(lambda m, x: torch.cat([x, m.c.weight.unsqueeze(0).expand(x.shape[0], -1, -1), x], 1), c=nn.Linear(4, 1)), (3, 4), "cat", "either end"),
    ("expand_batch_not_first", lambda: Net(lambda m, x: m.c.weight.T.expand(4, x.shape[0]), c=nn.Linear(4, 1)), (3, 4), "expand", "first size"),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_a_clear_message(case: tuple) -> None:
    _, build, shape, node, hint = case
    with pytest.raises(UnsupportedOpError) as info:
        import_torch(build(), shape)
    assert info.value.node == node, (info.value.node, str(info.value))
    assert hint in info.value.hint, info.value.hint
