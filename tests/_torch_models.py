"""Helpers shared by the torch frontend tests (test_torch_frontend.py, test_torch_transformer.py):
a tiny module built from a forward function, seeded sample batches, and the import check
(``import_torch`` + ``verify`` + ``check_import`` against ``torch_reference``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn

from snnc.frontends.check import check_import
from snnc.frontends.torch_fx import import_torch, torch_reference
from snnc.ir.graph import Graph
from snnc.ir.verify import verify

TOL = 1e-5


class Net(nn.Module):
    """A tiny model whose forward is ``fn(self, x)`` over the given layers."""

    def __init__(self, fn: Callable[[nn.Module, torch.Tensor], torch.Tensor], **layers: nn.Module):
        super().__init__()
        self.fn = fn
        for name, layer in layers.items():
            self.add_module(name, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self, x)


def sample(shape: tuple[int, ...], batch: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


def import_and_check(model: nn.Module, shape: tuple[int, ...], *, batch: int = 3) -> Graph:
    """Import ``model``, then require the IR to compute what torch computes."""
    graph = import_torch(model, shape)
    verify(graph)
    check_import(graph, torch_reference(model), sample(shape, batch), reference_name="torch", atol=TOL, rtol=TOL)
    return graph


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]
