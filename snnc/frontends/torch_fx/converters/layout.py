"""Token-layout ops: axis permutations (``transpose`` / ``permute`` / ``.mT``), indexing with
ints and slices (``select`` / ``slice``), ``unbind`` / ``chunk`` / ``split``, ``unsqueeze`` /
``squeeze`` / ``unflatten`` (per-sample ``reshape``), and a constant expanded to the batch
(``cls_token.expand(B, -1, -1)``) concatenated with computed tensors (``concat_constant``).

The IR keeps the batch axis first. A permute that moves it (the timm attention idiom
``qkv.reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)``) yields a
:class:`~snnc.frontends.torch_fx.context.Permuted` tensor: no node is emitted until an index
or ``unbind`` of a non-batch axis, or a further permute, brings the batch back to the
front; then the select and one ``transpose`` that keeps the batch first are emitted
(``qkv[0]`` is ``select`` of the per-sample axis of size 3, then ``transpose`` to
``[B, H, N, hd]``). Any other reader of a Permuted tensor is refused by
:meth:`Context.tensor <snnc.frontends.torch_fx.context.Context.tensor>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from snnc.frontends.common import resolve_sizes
from snnc.frontends.torch_fx.context import BATCH, BatchConstant, Context, Permuted, describe, full_rank, full_shape, norm_axis, to_numpy
from snnc.ir.graph import Value


# ------------------------------------------------------------------ layouts
def layout(cx: Context, x: Any, what: str = "input") -> tuple[Value, list[int]]:
    """``x`` (a Value or a Permuted tensor) as its IR value and the IR axis at each position
    of the full tensor."""
    if isinstance(x, Permuted):
        return x.value, list(x.axes)
    v = cx.tensor(x, what)
    return v, list(range(full_rank(v)))


def arrange(cx: Context, v: Value, axes: Sequence[int], sub: str | None = None) -> Value | Permuted:
    """The full tensor ``v_full.permute(axes)``: ``v`` itself, one ``transpose`` node when the
    batch stays first, or a :class:`Permuted` tensor (no node) when it does not."""
    axes = [int(a) for a in axes]
    if axes[0] != 0:
        return Permuted(v, tuple(axes))
    if axes == list(range(len(axes))):
        return v
    return cx.emit("transpose", [v], {"perm": axes}, sub=sub)


def batch_first(cx: Context, x: Any, what: str = "input") -> Value:
    """A Value or Permuted tensor as an IR value with the batch first and the other axes in
    the order they have in the full tensor (a sequence-first ``[L, B, E]`` tensor becomes
    ``[B, L, E]``)."""
    v, axes = layout(cx, x, what)
    return arrange(cx, v, [0] + [a for a in axes if a != 0], sub="batch_first")  # type: ignore[return-value]


def _permutation(cx: Context, dims: Sequence[Any], rank: int) -> list[int]:
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    if len(dims) != rank:
        cx.unsupported(f"permute dims {list(dims)} do not match the tensor's {rank} axes")
    perm = [norm_axis(cx, d, rank) for d in dims]
    if sorted(perm) != list(range(rank)):
        cx.unsupported(f"permute dims {list(dims)} are not a permutation of 0..{rank - 1}")
    return perm


def permute(cx: Context, input: Any, *dims: Any) -> Value | Permuted:
    """``x.permute(*dims)`` / ``torch.permute(x, dims)`` / ``aten.permute(x, dims)``."""
    v, axes = layout(cx, input)
    perm = _permutation(cx, dims, len(axes))
    return arrange(cx, v, [axes[p] for p in perm])


def transpose(cx: Context, input: Any, dim0: Any, dim1: Any) -> Value | Permuted:
    """``x.transpose(d0, d1)`` / ``torch.transpose`` / ``x.swapaxes``."""
    v, axes = layout(cx, input)
    a, b = norm_axis(cx, dim0, len(axes), "dim0"), norm_axis(cx, dim1, len(axes), "dim1")
    axes[a], axes[b] = axes[b], axes[a]
    return arrange(cx, v, axes)


def matrix_transpose(cx: Context, input: Any) -> Value | Permuted:
    """``x.mT``: the last two axes swapped."""
    return transpose(cx, input, -2, -1)


def t(cx: Context, input: Any) -> Value | Permuted:
    """``x.t()`` of a tensor with at most two axes (on a ``[B, F]`` tensor it moves the batch)."""
    if full_rank(input if isinstance(input, Permuted) else cx.tensor(input)) > 2:
        cx.unsupported("t() expects a tensor with at most 2 axes; use transpose or .mT")
    return transpose(cx, input, 0, -1)


# ----------------------------------------------------------------- indexing
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_NO_END = 2**62  # torch.export writes x[:, 1:] as aten.slice(x, 1, 1, 2**63 - 1)


def _full_slice(s: slice) -> bool:
    """``:`` (as torch.export writes it, too: ``0:2**63 - 1`` or ``0:x.size(0)`` on the batch axis)."""
    whole = s.stop is None or s.stop is BATCH or (_is_int(s.stop) and s.stop >= _NO_END)
    return whole and (s.start is None or s.start == 0 and _is_int(s.start)) and (s.step is None or s.step == 1 and _is_int(s.step))


def index(cx: Context, x: Any, key: Any) -> Value | Permuted:
    """``x[key]`` with ints, slices and one Ellipsis: ``select`` (removes the axis) and
    ``slice`` nodes on the IR axes, then the layout of what is left. The batch axis must be
    taken whole (``x[:, 0]``, not ``x[0]``)."""
    v, axes = layout(cx, x)
    rank = len(axes)
    items = list(key) if isinstance(key, tuple) else [key]
    if any(i is None for i in items):
        cx.unsupported("indexing with None (a new axis) is not supported; use unsqueeze")
    if sum(i is Ellipsis for i in items) > 1:
        cx.unsupported("an index with more than one Ellipsis")
    real = [i for i in items if i is not Ellipsis]
    for i in real:
        if isinstance(i, slice) and _full_slice(i):
            continue
        if isinstance(i, slice):
            if not all(e is None or _is_int(e) for e in (i.start, i.stop, i.step)):
                cx.unsupported(f"slice {i!r} has bounds that are not known integers (slicing with the batch size or a tensor)")
        elif not _is_int(i):
            cx.unsupported(f"indexing with {describe(i)} is not supported; only integers and slices of known integers")
    if len(real) > rank:
        cx.unsupported(f"too many indices ({len(real)}) for a tensor with {rank} axes")
    if Ellipsis in items:
        k = items.index(Ellipsis)
        items = items[:k] + [slice(None)] * (rank - len(real)) + items[k + 1 :]
    items += [slice(None)] * (rank - len(items))
    selects: dict[int, int] = {}
    slices: dict[int, tuple[int, int, int]] = {}
    for pos, item in enumerate(items):
        axis = axes[pos]
        if axis == 0:
            if isinstance(item, slice) and _full_slice(item):
                continue
            cx.unsupported(
                f"indexing the batch axis (position {pos}) with {item!r}; snnc converts every sample alike, so the batch "
                "axis must be taken whole (x[:, 0], not x[0])"
            )
        size = v.shape[axis - 1]
        if isinstance(item, slice):
            if item.stop is BATCH:
                cx.unsupported(f"slicing a per-sample axis with the batch size ({item!r})")
            if item.step is not None and item.step <= 0:
                cx.unsupported(f"slice step {item.step} must be positive")
            start, stop, step = item.indices(size)
            if (start, stop, step) == (0, size, 1):
                continue
            if len(range(start, stop, step)) == 0:
                cx.unsupported(f"slice {item!r} of an axis of size {size} is empty")
            slices[axis] = (start, min(stop, size), step)
        else:
            i = item + size if item < 0 else item
            if not 0 <= i < size:
                cx.unsupported(f"index {item} is out of range for an axis of size {size}")
            selects[axis] = i
    for axis, (start, stop, step) in sorted(slices.items()):
        v = cx.emit("slice", [v], {"axis": axis, "start": start, "end": stop, "step": step})
    for axis in sorted(selects, reverse=True):
        v = cx.emit("select", [v], {"axis": axis, "index": selects[axis]})
    left = [a - sum(s < a for s in selects) for a in axes if a not in selects]
    return arrange(cx, v, left)


def _at(cx: Context, x: Any, pos: int, item: Any) -> Value | Permuted:
    """``x`` indexed with ``item`` at position ``pos`` of the full tensor."""
    return index(cx, x, tuple([slice(None)] * pos + [item]))


def _split_axis(cx: Context, x: Any, dim: Any) -> tuple[int, int]:
    """The position ``dim`` of ``x``'s full tensor and its size; the batch axis is refused."""
    v, axes = layout(cx, x)
    pos = norm_axis(cx, dim, len(axes))
    if axes[pos] == 0:
        cx.unsupported(f"splitting along the batch axis (dim {dim}) would separate the samples of the batch")
    return pos, v.shape[axes[pos] - 1]


def unbind(cx: Context, input: Any, dim: Any = 0) -> tuple[Value | Permuted, ...]:
    """``x.unbind(dim)``: one ``select`` per element of the axis (``q, k, v = qkv.unbind(0)``)."""
    pos, size = _split_axis(cx, input, dim)
    return tuple(_at(cx, input, pos, i) for i in range(size))


def _pieces(cx: Context, input: Any, pos: int, sizes: Sequence[int]) -> tuple[Value | Permuted, ...]:
    out, start = [], 0
    for n in sizes:
        out.append(_at(cx, input, pos, slice(start, start + n)))
        start += n
    return tuple(out)


def chunk(cx: Context, input: Any, chunks: Any, dim: Any = 0) -> tuple[Value | Permuted, ...]:
    """``x.chunk(n, dim)``: pieces of ``ceil(size / n)`` elements (the last one smaller)."""
    if not _is_int(chunks) or chunks < 1:
        cx.unsupported(f"chunks must be a positive integer, got {chunks!r}")
    pos, size = _split_axis(cx, input, dim)
    step = -(-size // chunks)
    return _pieces(cx, input, pos, [min(step, size - s) for s in range(0, size, step)])


def split(cx: Context, input: Any, split_size_or_sections: Any, dim: Any = 0) -> tuple[Value | Permuted, ...]:
    """``x.split(n, dim)`` (pieces of n) or ``x.split([a, b, ...], dim)`` (given sizes)."""
    pos, size = _split_axis(cx, input, dim)
    s = split_size_or_sections
    if _is_int(s) and s >= 1:
        sizes = [min(s, size - start) for start in range(0, size, s)]
    elif isinstance(s, (tuple, list)) and all(_is_int(n) and n >= 0 for n in s) and sum(s) == size:
        sizes = [int(n) for n in s]
        if 0 in sizes:
            cx.unsupported(f"split sizes {list(s)} contain an empty piece")
    else:
        cx.unsupported(f"split sizes {s!r} are not a positive integer or a list of sizes adding up to {size}")
    return _pieces(cx, input, pos, sizes)


def aten_split_with_sizes(cx: Context, input: Any, split_sizes: Any, dim: Any = 0) -> tuple[Value | Permuted, ...]:
    return split(cx, input, list(split_sizes), dim)


def select(cx: Context, input: Any, dim: Any, index: Any) -> Value | Permuted:
    """``x.select(dim, i)`` / ``aten.select.int``."""
    v, axes = layout(cx, input)
    return _at(cx, input, norm_axis(cx, dim, len(axes)), index)


def narrow(cx: Context, input: Any, dim: Any, start: Any, length: Any) -> Value | Permuted:
    v, axes = layout(cx, input)
    if not (_is_int(start) and _is_int(length)):
        cx.unsupported(f"narrow start {start!r} and length {length!r} must be known integers")
    return _at(cx, input, norm_axis(cx, dim, len(axes)), slice(start, start + length))


def aten_slice(cx: Context, input: Any, dim: Any = 0, start: Any = None, end: Any = None, step: Any = 1) -> Value | Permuted:
    """``aten.slice.Tensor``: ends beyond the axis (``x[:, 1:]`` exports ``end=2**63 - 1``) are clipped."""
    v, axes = layout(cx, input)
    return _at(cx, input, norm_axis(cx, dim, len(axes)), slice(start, end, step))


# ------------------------------------------------------ per-sample reshapes
def _reshape(cx: Context, x: Value, shape: Sequence[int]) -> Value:
    return cx.emit("reshape", [x], {"shape": [int(d) for d in shape]})


def unsqueeze(cx: Context, input: Any, dim: Any) -> Value:
    x = cx.tensor(input)
    axis = norm_axis(cx, dim, full_rank(x) + 1)
    if axis == 0:
        cx.unsupported("unsqueeze(0) puts a new axis before the batch axis; snnc keeps the batch first")
    shape = list(x.shape)
    return _reshape(cx, x, shape[: axis - 1] + [1] + shape[axis - 1 :])


def squeeze(cx: Context, input: Any, dim: Any = None) -> Value:
    """``x.squeeze()`` removes the per-sample axes of size 1 (the batch axis is kept:
    converting a batch of one must not change the graph); ``x.squeeze(d)`` axis d if it
    has size 1."""
    x = cx.tensor(input)
    rank = full_rank(x)
    if dim is None:
        drop = {i + 1 for i, d in enumerate(x.shape) if d == 1}
    else:
        dims = list(dim) if isinstance(dim, (tuple, list)) else [dim]
        drop = {norm_axis(cx, d, rank) for d in dims}
        if 0 in drop:
            cx.unsupported("squeezing the batch axis (dim 0) is not supported")
        drop = {a for a in drop if x.shape[a - 1] == 1}
    if not drop:
        return x
    return _reshape(cx, x, [d for i, d in enumerate(x.shape) if i + 1 not in drop])


def unflatten(cx: Context, input: Any, dim: Any, sizes: Any) -> Value:
    x = cx.tensor(input)
    axis = norm_axis(cx, dim, full_rank(x))
    if axis == 0:
        cx.unsupported("unflattening the batch axis (dim 0) would mix samples of the batch")
    if not isinstance(sizes, (tuple, list)) or not all(_is_int(s) for s in sizes):
        cx.unsupported(f"unflatten sizes {sizes!r} are not known integers")
    resolved = resolve_sizes(list(sizes), x.shape[axis - 1])
    if resolved is None:
        cx.unsupported(f"unflatten sizes {list(sizes)} do not split an axis of size {x.shape[axis - 1]}")
    shape = list(x.shape)
    return _reshape(cx, x, shape[: axis - 1] + resolved + shape[axis:])


# ------------------------------------------------ constants over the batch
def expand(cx: Context, input: Any, *size: Any) -> Any:
    """``c.expand(B, -1, -1)`` of a constant: a :class:`BatchConstant`; ``x.expand(...)`` of
    a computed tensor only where it keeps every size (``x.expand(B, -1)``, ``x.expand_as(x)``)."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    if any(s is BATCH for s in size[1:]):
        cx.unsupported("the batch size may only appear as the first size of expand")
    if not all(_is_int(s) for s in size[1:]):
        cx.unsupported(f"expand sizes {list(size)!r} are not known integers")
    if isinstance(input, torch.Tensor):
        if not size or size[0] is not BATCH:
            cx.unsupported(f"expanding a constant to {list(size)!r}, which does not start with the batch size x.size(0)")
        c = cx.constant(input, "input")
        while c.dim() < len(size):
            c = c.unsqueeze(0)
        if c.dim() != len(size) or c.shape[0] != 1:
            cx.unsupported(f"a constant of shape {list(input.shape)} cannot be expanded over the batch to {list(size)!r}")
        try:
            c = c.expand(1, *size[1:])
        except RuntimeError as e:
            cx.unsupported(f"expand {list(size)!r} of a constant of shape {list(input.shape)}: {e}")
        if c.dim() < 2:
            cx.unsupported("a constant expanded to the batch must keep at least one per-sample axis")
        return BatchConstant(c[0].contiguous())
    x = cx.tensor(input)
    full = full_shape(x)
    if len(size) != len(full) or size[0] not in (BATCH, -1) or any(s not in (-1, f) for s, f in zip(size[1:], full[1:])):
        cx.unsupported(f"expanding a computed tensor of shape {list(full)} to {list(size)!r} (broadcasting) is not supported")
    return x


def aten_expand(cx: Context, input: Any, size: Any, implicit: bool = False) -> Any:
    return expand(cx, input, tuple(size))


def expand_as(cx: Context, input: Any, other: Any) -> Any:
    if isinstance(other, (Value, Permuted)):
        return expand(cx, input, tuple(full_shape(other)))
    cx.unsupported(f"expand_as {describe(other)}")


def cat(cx: Context, tensors: Any, dim: Any = 0) -> Value:
    """``torch.cat``: computed tensors -> ``concat``; constants expanded to the batch at
    either end (a class token before the patch tokens) -> ``concat_constant``."""
    if not isinstance(tensors, (tuple, list)) or not tensors:
        cx.unsupported(f"expected a list of tensors, got {describe(tensors)}")
    computed = [i for i, t in enumerate(tensors) if not isinstance(t, BatchConstant)]
    if not computed:
        cx.unsupported("concatenating only constants expanded to the batch: the result does not depend on the input")
    first, last = computed[0], computed[-1]
    if any(isinstance(t, BatchConstant) for t in tensors[first : last + 1]):
        cx.unsupported("a constant expanded to the batch between computed tensors; only constants at either end are supported")
    values = [cx.tensor(t, "inputs") for t in tensors[first : last + 1]]
    axis = norm_axis(cx, dim, full_rank(values[0]))
    if axis == 0:
        cx.unsupported("concatenation along the batch axis (dim 0) is not supported")
    y = values[0] if len(values) == 1 else cx.emit("concat", values, {"axis": axis})
    for position, group in (("before", tensors[:first]), ("after", tensors[last + 1 :])):
        if not group:
            continue
        consts = [g.value for g in group]
        if any(c.dim() != len(y.shape) for c in consts):
            cx.unsupported(f"constants of per-sample shapes {[list(c.shape) for c in consts]} do not match {list(y.shape)}")
        try:
            value = torch.cat(consts, dim=axis - 1)
        except RuntimeError as e:
            cx.unsupported(f"constants expanded to the batch do not concatenate: {e}")
        y = cx.emit("concat_constant", [y], {"axis": axis, "position": position}, {"value": to_numpy(value)})
    return y
