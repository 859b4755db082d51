"""A small attention network over a [3, 32] return window, read as 32 tokens of 3 features.

``x`` float32 ``[B, 3, 32]`` -> ``transpose(1, 2)`` -> ``[B, 32, 3]`` -> Linear(3, D) token
embedding + learned position embedding ``[1, 32, D]`` -> a learned class token in front
(``[B, 33, D]``) -> ``depth`` pre-LN transformer blocks (``Block`` = LayerNorm ->
``Attention`` -> residual, LayerNorm -> ``Mlp`` (Linear -> GELU -> Linear) -> residual) ->
final LayerNorm -> the class token -> Linear head with 2 logits. ``Block`` is the shared one in
``examples/common/transformer.py``.

Attention uses one fused ``qkv`` Linear, an explicit ``q @ k^T * scale``, ``softmax`` and
``attn @ v``, so the exported ONNX graph shows every step (MatMul, Softmax, Transpose,
Reshape). There is no dropout. ``load(path)`` rebuilds a model from a ``.safetensors`` file
written by ``train.py`` (constructor config in the metadata key ``config``).
"""

from __future__ import annotations

import json

import torch
import torch.nn as nn

from examples.common.transformer import Attention, Block, Mlp  # noqa: F401 (re-exported)

DEFAULT_CONFIG = {"in_features": 3, "tokens": 32, "dim": 32, "depth": 2, "heads": 4, "mlp_dim": 64, "num_classes": 2}


class WindowTransformer(nn.Module):
    def __init__(self, in_features: int = 3, tokens: int = 32, dim: int = 32, depth: int = 2, heads: int = 4,
                 mlp_dim: int = 64, num_classes: int = 2):
        super().__init__()
        self.config = {"in_features": in_features, "tokens": tokens, "dim": dim, "depth": depth, "heads": heads,
                       "mlp_dim": mlp_dim, "num_classes": num_classes}
        self.embed = nn.Linear(in_features, dim)
        self.pos = nn.Parameter(torch.zeros(1, tokens, dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x.transpose(1, 2)) + self.pos  # [B, 32, D]
        B = x.shape[0]
        x = torch.cat([self.cls.expand(B, -1, -1), x], 1)  # [B, 33, D]
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return self.head(x[:, 0])


def build(config: dict | None = None) -> WindowTransformer:
    return WindowTransformer(**{**DEFAULT_CONFIG, **(config or {})})


def load(path: str) -> WindowTransformer:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, framework="pt") as fh:
        config = json.loads(fh.metadata()["config"])
    model = build(config)
    model.load_state_dict(load_file(path))
    return model.eval()
