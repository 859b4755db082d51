"""The translation context converters see, and the argument helpers they share.

While translating, each traced node stands for one of: an IR :class:`Value` (a tensor
computed from the input), a constant ``torch.Tensor``, :data:`BATCH` (the symbolic batch
size) or plain Python data. :class:`Context` turns converter arguments into the kind they
must be (or an :class:`~snnc.errors.UnsupportedOpError` naming the traced op and node) and
emits IR nodes named after the traced node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np
import torch

from snnc.errors import UnsupportedOpError
from snnc.frontends.common import emit_node
from snnc.ir.graph import Graph, Value


class _BatchSize:
    """The symbolic batch size: what ``x.size(0)`` and ``x.shape[0]`` evaluate to."""

    def __repr__(self) -> str:
        return "<batch size>"


BATCH = _BatchSize()


class Context:
    """What converters see: the IR graph under construction and the traced node being
    translated (its op type, IR name and whether it feeds only graph outputs)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.op_type = ""
        self.name = ""
        self.feeds_output_only = False

    def at(self, op_type: str, name: str, feeds_output_only: bool) -> None:
        self.op_type, self.name, self.feeds_output_only = op_type, name, feeds_output_only

    def unsupported(self, hint: str) -> NoReturn:
        raise UnsupportedOpError(self.op_type, self.name, hint)

    def emit(
        self, op: str, inputs: Sequence[Value], attrs: dict[str, Any] | None = None, params: dict[str, np.ndarray] | None = None
    ) -> Value:
        """Append an IR node named after the traced node and compute its per-sample shape
        (see :func:`~snnc.frontends.common.emit_node`): view/reshape/size resolve against
        the IR's own shapes, not against a separate shape model that could disagree."""
        return emit_node(self.graph, op, inputs, attrs=attrs, params=params, name=self.name, op_type=self.op_type, node=self.name)

    def tensor(self, x: Any, what: str = "input") -> Value:
        """``x`` as an IR value, or an error when it is not computed from the model input."""
        if isinstance(x, Value):
            return x
        self.unsupported(f"its {what} must be a tensor computed from the model input, got {describe(x)}")

    def constant(self, x: Any, what: str) -> torch.Tensor:
        """``x`` as a float32 CPU tensor, or an error when it depends on the model input."""
        if isinstance(x, torch.Tensor):
            return x.detach().to("cpu", torch.float32)
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            return torch.tensor(float(x))
        self.unsupported(f"its {what} must be a constant (a parameter, buffer or number), got {describe(x)}")

    def number(self, x: Any, what: str) -> float:
        """``x`` as a Python float (a number or a one-element constant tensor)."""
        if isinstance(x, torch.Tensor) and x.numel() == 1:
            return float(x.item())
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            return float(x)
        self.unsupported(f"its {what} must be a number, got {describe(x)}")


def describe(x: Any) -> str:
    """What a traced value is, for error messages."""
    if isinstance(x, Value):
        return f"a tensor computed from the input (per-sample shape {list(x.shape)})"
    if isinstance(x, torch.Tensor):
        return f"a constant tensor of shape {list(x.shape)}"
    if x is BATCH:
        return "the batch size"
    return repr(x)


# =========================================================================== helpers
def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A constant as the float32 numpy array IR parameters are."""
    return t.detach().to("cpu", torch.float32).numpy().copy()


def full_rank(v: Value) -> int:
    """Rank of the full tensor, batch dimension included (what torch dims count)."""
    return len(v.shape) + 1


def full_shape(v: Value) -> tuple[Any, ...]:
    """The full tensor's shape as ``x.shape`` evaluates it: the batch size first."""
    return (BATCH, *v.shape)


def norm_axis(cx: Context, dim: Any, rank: int, what: str = "dim") -> int:
    """Normalise a (possibly negative) torch dim against a full-tensor ``rank``."""
    if isinstance(dim, bool) or not isinstance(dim, int) or not -rank <= dim < rank:
        cx.unsupported(f"{what} {dim!r} is not a valid axis of a rank-{rank} tensor")
    return dim % rank


def int_list(cx: Context, v: Any, n: int, what: str) -> list[int]:
    """A torch int-or-tuple argument (``kernel_size=3``, ``stride=(2, 1)``) as ``n`` ints."""
    if isinstance(v, int) and not isinstance(v, bool):
        return [v] * n
    if isinstance(v, (tuple, list)) and all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        if len(v) == n:
            return [int(i) for i in v]
        if len(v) == 1:
            return [int(v[0])] * n
    cx.unsupported(f"{what} {v!r} is not an int or a sequence of {n} ints")


def spatial_rank(cx: Context, x: Value, what: str) -> int:
    """Number of spatial axes of a channel-first activation; the IR handles 1 and 2."""
    nd = len(x.shape) - 1
    if nd not in (1, 2):
        cx.unsupported(f"{what} needs an input of shape [N, C, L] or [N, C, H, W]; got per-sample shape {list(x.shape)}")
    return nd
