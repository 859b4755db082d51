"""The 1-D temporal CNN for next-day direction: [N, 3, 32] windows -> [N, 2] logits.

Every layer maps onto snnc's IF-neuron pipeline: Conv1d + BatchNorm1d (folded at
conversion) + bounded ReLU (ONNX Clip(x, 0, 2)), AvgPool1d, Flatten and Linear. There are
only two spiking layers: on this near-coin-flip task the logit margins are small, and every
spiking layer adds rate-quantisation error, so a shallow network with bounded activations
keeps the SNN's decisions closest to the ANN's (see the README's design notes for the
variants that were measured). No max pooling; the inputs are clipped, standardised returns.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from examples.stocks.data import CHANNELS, WINDOW


def bounded_relu(cap: float | None) -> nn.Module:
    """ReLU, or min(max(x, 0), cap) (exported as ONNX ``Clip(x, 0, cap)``, which snnc converts
    to an IF neuron whose threshold never exceeds ``cap``)."""
    return nn.ReLU() if cap is None else nn.Hardtanh(0.0, float(cap))


class StocksTCN(nn.Module):
    """conv5(3->c1)+BN+ReLU, avgpool4, conv3(c1->c2)+BN+ReLU, avgpool2, flatten (c2 x L/8), Linear(2).

    ``cap``: the ReLUs are bounded at ``cap`` (BatchNorm makes the pre-activations roughly
    unit-variance). A bounded ReLU lets the SNN's firing threshold equal the ANN's own
    ceiling: no clipping mismatch, and a rate-quantisation step of cap / T instead of
    (a high percentile of the activations) / T.
    """

    def __init__(self, in_channels: int = len(CHANNELS), window: int = WINDOW, c1: int = 32, c2: int = 32, cap: float | None = 2.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(in_channels, c1, 5, padding=2, bias=False),
            nn.BatchNorm1d(c1),
            bounded_relu(cap),
            nn.AvgPool1d(4),
            nn.Conv1d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm1d(c2),
            bounded_relu(cap),
            nn.AvgPool1d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c2 * (window // 8), 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
