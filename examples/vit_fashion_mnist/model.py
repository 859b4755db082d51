"""A small Vision Transformer for Fashion-MNIST (28x28, 1 channel, 10 classes).

Two builders share the same patch embedding, class token, position embedding and head:

* ``build_vit(config)`` -> ``ViT``: a timm-style ViT whose blocks are written out as separate
  modules (``Block`` = pre-LN ``Attention`` + ``Mlp``, shared in
  ``examples/common/transformer.py``); attention uses one fused ``qkv`` Linear, an explicit
  ``q @ k^T * scale``, ``softmax`` and ``attn @ v``.  This is the trained example.
* ``build_encoder_vit(config)`` -> ``EncoderViT``: the same model but with the blocks
  implemented by torch's ``nn.TransformerEncoder`` (``norm_first=True``, GELU, no dropout).
  Only used to produce ONNX graphs from the stock torch module for import tests.

Both take float32 ``[N, 1, 28, 28]`` in ``[0, 1]`` (no normalisation inside) and return
``[N, 10]`` logits.  ``load_vit(path)`` / ``load_encoder_vit(path)`` rebuild a model from a
``.safetensors`` file written by ``train.py`` (constructor config in the metadata key
``config``).
"""

from __future__ import annotations

import json

import torch
import torch.nn as nn

from examples.common.transformer import Attention, Block, Mlp  # noqa: F401 (re-exported)

IMAGE_SIZE = 28
PATCH_SIZE = 7
NUM_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 16

DEFAULT_CONFIG = {"dim": 64, "depth": 4, "heads": 4, "mlp_dim": 128, "num_classes": 10, "in_channels": 1}
DEFAULT_ENCODER_CONFIG = {**DEFAULT_CONFIG, "depth": 2}


class PatchEmbed(nn.Module):
    """Non-overlapping 7x7 patches -> ``[B, 16, dim]`` tokens."""

    def __init__(self, dim: int, in_channels: int = 1, patch_size: int = PATCH_SIZE):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # [B, dim, 4, 4]
        return x.flatten(2).transpose(1, 2)  # [B, 16, dim]


class _ViTBase(nn.Module):
    """Patch embedding, class token, position embedding, final norm and head; ``blocks`` is
    supplied by the subclass."""

    def __init__(self, dim: int, num_classes: int, in_channels: int):
        super().__init__()
        self.patch_embed = PatchEmbed(dim, in_channels)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, NUM_PATCHES + 1, dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.MultiheadAttention):  # its fused in-projection is not an nn.Linear
                nn.init.trunc_normal_(m.in_proj_weight, std=0.02)
                nn.init.zeros_(m.in_proj_bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        B = x.shape[0]
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # [B, 17, dim]
        x = x + self.pos_embed
        x = self.blocks(x)
        x = self.norm(x)
        return self.head(x[:, 0])


class ViT(_ViTBase):
    """timm-style ViT with hand-written blocks (the trained example)."""

    def __init__(self, dim=64, depth=4, heads=4, mlp_dim=128, num_classes=10, in_channels=1):
        super().__init__(dim, num_classes, in_channels)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_dim) for _ in range(depth)])
        self._init_weights()


class EncoderViT(_ViTBase):
    """The same ViT with the blocks done by ``nn.TransformerEncoder`` (pre-LN, GELU, no dropout)."""

    def __init__(self, dim=64, depth=2, heads=4, mlp_dim=128, num_classes=10, in_channels=1):
        super().__init__(dim, num_classes, in_channels)
        layer = nn.TransformerEncoderLayer(
            d_model=dim,
            nhead=heads,
            dim_feedforward=mlp_dim,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # enable_nested_tensor only matters for padding masks (none here) and warns with norm_first
        self.blocks = nn.TransformerEncoder(layer, num_layers=depth, enable_nested_tensor=False)
        self._init_weights()


def _config(defaults: dict, config: dict | None, kwargs: dict) -> dict:
    cfg = {**defaults, **(config or {}), **kwargs}
    cfg.pop("model", None)
    unknown = set(cfg) - set(defaults)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(defaults)}")
    return cfg


def build_vit(config: dict | None = None, **kwargs) -> ViT:
    """``ViT`` from ``DEFAULT_CONFIG`` updated by ``config`` and ``kwargs``; the resolved
    config is kept in ``model._snnc_config`` (written to the safetensors metadata)."""
    cfg = _config(DEFAULT_CONFIG, config, kwargs)
    model = ViT(**cfg)
    model._snnc_config = {"model": "vit", **cfg}
    return model


def build_encoder_vit(config: dict | None = None, **kwargs) -> EncoderViT:
    """``EncoderViT`` (``nn.TransformerEncoder`` blocks, depth 2 by default)."""
    cfg = _config(DEFAULT_ENCODER_CONFIG, config, kwargs)
    model = EncoderViT(**cfg)
    model._snnc_config = {"model": "encoder_vit", **cfg}
    return model


def _load(path: str, builder) -> nn.Module:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    model = builder(json.loads(meta.get("config", "{}")))
    model.load_state_dict(load_file(path))
    return model.eval()


def load_vit(path: str) -> ViT:
    """Rebuild the trained ``ViT`` from ``vit.safetensors`` (eval mode)."""
    return _load(path, build_vit)


def load_encoder_vit(path: str) -> EncoderViT:
    """Rebuild the ``EncoderViT`` from ``encoder_vit.safetensors`` (eval mode)."""
    return _load(path, build_encoder_vit)
