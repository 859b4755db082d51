"""The pre-LN transformer block shared by the attention examples.

``Block`` = ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``, with ``Attention`` (one fused
``qkv`` Linear, an explicit ``q @ k^T * scale``, ``softmax`` and ``attn @ v``, then ``proj``)
and ``Mlp`` (``fc1`` -> GELU -> ``fc2``); no dropout.  Used by
``examples/vit_fashion_mnist/model.py`` and ``examples/stocks_attention/model.py``.

Keep the submodule names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``,
``mlp.fc2``) and the forward idiom as they are: the shipped ``.safetensors`` weights load by
these state_dict keys, and the ONNX / torch.fx importers recognise the exact sequence
``reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)``, ``qkv[0], qkv[1], qkv[2]``,
``(q @ k.transpose(-2, -1)) * scale``, ``softmax(dim=-1)``,
``(attn @ v).transpose(1, 2).reshape(B, N, C)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each [B, heads, N, head_dim]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    """``fc1`` -> GELU -> ``fc2``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x
