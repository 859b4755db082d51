"""A small 2-level U-Net for 3-class brain tissue segmentation (80 x 96 slices).

    enc1: [Conv3x3 + BN + ReLU] x 2, 1 -> c1          80 x 96
    AvgPool2d(2)
    enc2: [Conv3x3 + BN + ReLU] x 2, c1 -> c2         40 x 48
    AvgPool2d(2)
    bottleneck: [Conv3x3 + BN + ReLU] x 2, c2 -> c3   20 x 24
    Upsample(x2, nearest) -> concat with enc2 -> [Conv3x3 + BN + ReLU] x 2, c3 + c2 -> c2
    Upsample(x2, nearest) -> concat with enc1 -> [Conv3x3 + BN + ReLU] x 2, c2 + c1 -> c1
    head: Conv1x1, c1 -> 3 logits (background, grey matter, white matter)

Skip connections are ``torch.cat`` (ONNX Concat), upsampling is ``nn.Upsample(mode="nearest")``
(ONNX Resize), downsampling is average pooling, so every op converts to an SNN.
"""

from __future__ import annotations

import torch
from torch import nn


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class UNet(nn.Module):
    def __init__(self, channels=(16, 32, 64), in_channels: int = 1, num_classes: int = 3):
        super().__init__()
        c1, c2, c3 = channels
        self.enc1 = block(in_channels, c1)
        self.enc2 = block(c1, c2)
        self.bottleneck = block(c2, c3)
        self.pool = nn.AvgPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec2 = block(c3 + c2, c2)
        self.dec1 = block(c2 + c1, c1)
        self.head = nn.Conv2d(c1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottleneck(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up(d2), e1], dim=1))
        return self.head(d1)
