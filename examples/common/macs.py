"""Multiply-accumulate counts of a torch model, for the example models' records."""

from __future__ import annotations

import torch
from torch import nn

_CONV = (nn.Conv1d, nn.Conv2d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of the convolution, transposed-convolution and Linear layers for one input of
    ``input_shape`` (batch dimension included, usually 1)."""
    macs = 0

    def hook(m, inp, out):
        nonlocal macs
        if isinstance(m, _CONV):  # every output element sums (in_channels / groups) × kernel products
            macs += out[0].numel() * m.weight[0].numel()
        elif isinstance(m, _CONV_T):  # every input element scatters into (out_channels / groups) × kernel
            macs += inp[0][0].numel() * m.weight[0].numel()
        else:
            macs += out[0].numel() * m.in_features

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (*_CONV, *_CONV_T, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return macs
