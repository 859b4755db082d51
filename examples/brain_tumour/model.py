"""The tumour classifier: a small VGG-style CNN with BatchNorm for 64×64 grey MRI slices."""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_WIDTHS = (16, 32, 64, 64)


class TumourCNN(nn.Module):
    """Conv3×3+BN+ReLU at 64², then [AvgPool2d(2), Conv+BN+ReLU] at 32², 16² and 8²,
    global average pooling and Linear(·, 2). Input ``[N, 1, 64, 64]`` in [0, 1]; output
    two logits (0 = no tumour, 1 = tumour). Average pooling and ReLU only: every layer
    has a direct spiking counterpart."""

    def __init__(self, widths: tuple[int, ...] = DEFAULT_WIDTHS, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i, w in enumerate(widths):
            if i:
                layers.append(nn.AvgPool2d(2))
            layers += [nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            c_in = w
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, 2)
        self._snnc_config = {"widths": list(widths), "dropout": dropout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean((2, 3))
        return self.classifier(self.dropout(x))
