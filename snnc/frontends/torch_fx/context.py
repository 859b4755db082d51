"""The translation context converters see, and the argument helpers they share.

While translating, each traced node stands for one of: an IR :class:`Value` (a tensor
computed from the input), a constant ``torch.Tensor``, :data:`BATCH` (the symbolic batch
size), plain Python data, or one of two transient forms that no IR value can hold:
:class:`Permuted` (a computed tensor whose batch axis a ``permute`` moved away from the
front, as in ``qkv.permute(2, 0, 3, 1, 4)``, waiting for the ``[0]`` / ``unbind(0)`` that
brings it back) and :class:`BatchConstant` (a constant expanded to the batch,
``cls_token.expand(B, -1, -1)``, waiting for the ``torch.cat`` that makes it a
``concat_constant``). :class:`Context` turns converter arguments into the kind they
must be (or an :class:`~snnc.errors.UnsupportedOpError` naming the traced op and node) and
emits IR nodes named after the traced node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True, eq=False)
class Permuted:
    """A computed tensor whose batch axis is not its first: the full tensor is the IR
    ``value`` (batch first) permuted by ``axes`` (``full = value_full.permute(axes)``, so
    ``axes[i]`` is the IR axis at position ``i``; ``axes[0] != 0``).

    The IR keeps the batch first, so such a tensor only lives between a ``permute`` /
    ``transpose`` that moves the batch and an index / ``unbind`` / ``permute`` that brings
    it back to the front; anything else reading it is refused with a clear message."""

    value: Value
    axes: tuple[int, ...]

    @property
    def batch_position(self) -> int:
        return self.axes.index(0)


@dataclass(frozen=True, eq=False)
class BatchConstant:
    """A constant broadcast to the batch (``cls_token.expand(B, -1, -1)``): every sample is
    ``value`` (per-sample shape, float32). It becomes the ``value`` of a ``concat_constant``."""

    value: torch.Tensor


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
        self,
        op: str,
        inputs: Sequence[Value],
        attrs: dict[str, Any] | None = None,
        params: dict[str, np.ndarray] | None = None,
        sub: str | None = None,
    ) -> Value:
        """Append an IR node named after the traced node (``<node>.<sub>`` for the parts of
        a layer that becomes several nodes, such as attention's ``q`` / ``k`` / ``v``) and
        compute its per-sample shape (see :func:`~snnc.frontends.common.emit_node`):
        view/reshape/size resolve against the IR's own shapes, not against a separate shape
        model that could disagree."""
        name = f"{self.name}.{sub}" if sub else self.name
        return emit_node(self.graph, op, inputs, attrs=attrs, params=params, name=name, op_type=self.op_type, node=self.name)

    def tensor(self, x: Any, what: str = "input") -> Value:
        """``x`` as an IR value, or an error when it is not computed from the model input."""
        if isinstance(x, Value):
            return x
        if isinstance(x, Permuted):
            self.unsupported(
                f"its {what} is {describe(x)}; snnc keeps the batch axis first, so a permute/transpose that moves "
                "the batch must be followed directly by an index or unbind of its new first axis (the timm idiom "
                "qkv.permute(2, 0, 3, 1, 4) then qkv[0] / qkv.unbind(0)) or by a permute that moves the batch back"
            )
        if isinstance(x, BatchConstant):
            self.unsupported(
                f"its {what} is {describe(x)}; a constant expanded to the batch is only supported as a part of "
                "torch.cat with computed tensors (a class token)"
            )
        self.unsupported(f"its {what} must be a tensor computed from the model input, got {describe(x)}")

    def constant(self, x: Any, what: str) -> torch.Tensor:
        """``x`` as a float32 CPU tensor, or an error when it depends on the model input."""
        if isinstance(x, torch.Tensor):
            return x.detach().to("cpu", torch.float32)
        if isinstance(x, BatchConstant):
            return x.value.unsqueeze(0)  # the same for every sample: a batch axis of 1
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
    if isinstance(x, Permuted):
        shape = list(full_shape(x))
        return f"a tensor computed from the input whose batch axis was moved to position {x.batch_position} (shape {shape})"
    if isinstance(x, BatchConstant):
        return f"a constant expanded to the batch (per-sample shape {list(x.value.shape)})"
    if x is BATCH:
        return "the batch size"
    return repr(x)


# =========================================================================== helpers
def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A constant as the float32 numpy array IR parameters are."""
    return t.detach().to("cpu", torch.float32).numpy().copy()


def full_rank(v: Value | Permuted) -> int:
    """Rank of the full tensor, batch dimension included (what torch dims count)."""
    if isinstance(v, Permuted):
        return len(v.axes)
    return len(v.shape) + 1


def full_shape(v: Value | Permuted) -> tuple[Any, ...]:
    """The full tensor's shape as ``x.shape`` evaluates it: the batch size first (where a
    permute moved it for a :class:`Permuted` tensor)."""
    if isinstance(v, Permuted):
        ir = (BATCH, *v.value.shape)
        return tuple(ir[a] for a in v.axes)
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
