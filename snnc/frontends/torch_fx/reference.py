"""The import check's reference for torch models: the model itself, run in eval mode."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from snnc.frontends.check import Reference
from snnc.frontends.torch_fx.translate import leaves


def float_dtype(model: nn.Module) -> torch.dtype:
    """The floating-point type of the model's parameters and buffers (float32 without any)."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def device_of(model: nn.Module) -> torch.device:
    """Where the model's parameters and buffers live (the CPU without any)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def torch_reference(model: nn.Module) -> Reference:
    """A reference evaluator for :func:`snnc.frontends.check.check_import`.

    It runs a deep copy of ``model`` (taken now) in eval mode under ``torch.no_grad`` and
    returns the model's output tensors, flattened in order, as float32 numpy arrays.
    """
    ref = copy.deepcopy(model).eval()
    dtype, device = float_dtype(ref), device_of(ref)

    def run(x: np.ndarray) -> list[np.ndarray]:
        # torch.tensor copies: a forward pass with in-place ops on its input must not write
        # into the caller's array.
        batch = torch.tensor(np.asarray(x), dtype=dtype, device=device)
        with torch.no_grad():
            out = ref(batch)
        return [t.detach().to("cpu", torch.float32).numpy() for t in leaves(out) if isinstance(t, torch.Tensor)]

    return run
