"""The op set of the snnc IR. Each op's docstring is its specification.

Conventions: tensors are channel-first (``[batch, C, *spatial]``); 1-D and 2-D spatial
ops are supported. Padding lists follow ONNX: ``[begin_0, begin_1, ..., end_0, end_1, ...]``.
Axes in attributes count the batch dimension (axis 1 is the channel axis).

Stateless ops carry a ``compute`` function over torch tensors. It is used unchanged by
the ANN interpreter and, on a ``[T*B, ...]`` batch holding every time step, by the
reference simulator: that is correct because those ops are linear (conv, linear,
pooling, add, concat, reshape, upsample, affine) and therefore commute with time
averaging. Stateful spiking ops (``if_neuron``, ``spiking_max_pool``, ``readout``) are
defined by their discrete-time equations below and implemented by the simulator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from snnc.errors import VerificationError

REQUIRED = object()

ANN = "ann"
SNN = "snn"


@dataclass(frozen=True)
class OpSpec:
    """Declaration of an IR op.

    ``kind`` is one of: ``linear`` (affine in its inputs, safe on spike trains),
    ``activation`` (ReLU: ANN only), ``norm`` (BatchNorm: ANN only), ``pool-max``,
    ``structural`` (removed by canonicalize), ``postproc`` (output post-processing),
    ``neuron`` and ``readout`` (SNN only).
    """

    name: str
    doc: str
    kind: str
    stages: frozenset[str]
    arity: int | None  # None: one or more
    attrs: dict[str, Any] = field(default_factory=dict)  # name -> default (REQUIRED)
    params: tuple[str, ...] = ()  # required parameters
    optional_params: tuple[str, ...] = ()
    compute: Callable[[list[torch.Tensor], Any, dict[str, torch.Tensor]], torch.Tensor] | None = None

    def attr_default(self, key: str) -> Any:
        if key not in self.attrs:
            raise KeyError(f"op {self.name!r} has no attribute {key!r}")
        default = self.attrs[key]
        if default is REQUIRED:
            raise KeyError(f"attribute {key!r} of op {self.name!r} is required")
        return default


_REGISTRY: dict[str, OpSpec] = {}


def register_op(spec: OpSpec) -> OpSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"op {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def get_op(name: str) -> OpSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise VerificationError(f"unknown IR op {name!r}; known ops: {', '.join(sorted(_REGISTRY))}") from None


def all_ops() -> dict[str, OpSpec]:
    return dict(_REGISTRY)


def op(name: str, kind: str, stages: tuple[str, ...], arity: int | None = 1, attrs=None, params=(), optional_params=()):
    """Decorator registering ``fn`` (or a ``None`` compute for stateful ops) with its docstring."""

    def deco(fn):
        register_op(
            OpSpec(
                name=name,
                doc=(fn.__doc__ or "").strip(),
                kind=kind,
                stages=frozenset(stages),
                arity=arity,
                attrs=dict(attrs or {}),
                params=tuple(params),
                optional_params=tuple(optional_params),
                compute=None if getattr(fn, "_stateful", False) else fn,
            )
        )
        return fn

    return deco


def _stateful(fn):
    fn._stateful = True
    return fn


# ----------------------------------------------------------------- helpers
def _spatial_rank(x: torch.Tensor) -> int:
    return x.dim() - 2


def _pad_args(pads: list[int], nd: int) -> tuple[list[int], list[int] | None]:
    """Split ONNX pads into symmetric conv padding, or an explicit F.pad list."""
    begin, end = pads[:nd], pads[nd:]
    if begin == end:
        return begin, None
    # F.pad takes pairs from the last dimension backwards.
    fpad: list[int] = []
    for i in reversed(range(nd)):
        fpad += [begin[i], end[i]]
    return [0] * nd, fpad


def _pads(node, nd: int) -> list[int]:
    pads = node.attr("pads")
    return list(pads) if pads else [0] * (2 * nd)


# ---------------------------------------------------------------- linear ops
@op("conv", "linear", (ANN, SNN), attrs={"strides": None, "pads": None, "dilations": None, "groups": 1}, params=("weight", "bias"))
def _conv(xs, node, p):
    """N-d convolution (N = 1 or 2): ``y = conv(x, weight) + bias``.

    weight ``[C_out, C_in/groups, *kernel]``, bias ``[C_out]``; ``strides``, ``dilations``
    per spatial dim (default 1); ``pads`` in ONNX order (default 0).
    """
    x = xs[0]
    nd = _spatial_rank(x)
    strides = node.attr("strides") or [1] * nd
    dil = node.attr("dilations") or [1] * nd
    padding, fpad = _pad_args(_pads(node, nd), nd)
    if fpad is not None:
        x = F.pad(x, fpad)
    fn = F.conv1d if nd == 1 else F.conv2d
    return fn(x, p["weight"], p["bias"], stride=strides, padding=padding, dilation=dil, groups=node.attr("groups"))


@op(
    "conv_transpose",
    "linear",
    (ANN, SNN),
    attrs={"strides": None, "pads": None, "dilations": None, "output_padding": None, "groups": 1},
    params=("weight", "bias"),
)
def _conv_transpose(xs, node, p):
    """N-d transposed convolution (N = 1 or 2), as ONNX ConvTranspose.

    weight ``[C_in, C_out/groups, *kernel]``, bias ``[C_out]``; ``pads`` crop the full
    output (ONNX order); ``output_padding`` adds rows/columns at the end.
    """
    x = xs[0]
    nd = _spatial_rank(x)
    strides = node.attr("strides") or [1] * nd
    dil = node.attr("dilations") or [1] * nd
    outpad = node.attr("output_padding") or [0] * nd
    pads = _pads(node, nd)
    fn = F.conv_transpose1d if nd == 1 else F.conv_transpose2d
    y = fn(x, p["weight"], p["bias"], stride=strides, padding=0, output_padding=outpad, groups=node.attr("groups"), dilation=dil)
    begin, end = pads[:nd], pads[nd:]
    if any(begin) or any(end):
        sl = [slice(None), slice(None)] + [slice(b, y.shape[2 + i] - e) for i, (b, e) in enumerate(zip(begin, end))]
        y = y[tuple(sl)]
    return y


@op("linear", "linear", (ANN, SNN), params=("weight", "bias"))
def _linear(xs, node, p):
    """Fully connected layer over the last axis: ``y = x @ weight.T + bias``.

    weight ``[F_out, F_in]``, bias ``[F_out]``.
    """
    return F.linear(xs[0], p["weight"], p["bias"])


@op("affine", "linear", (ANN, SNN), params=("scale", "shift"))
def _affine(xs, node, p):
    """Element-wise ``y = x * scale + shift`` with constant tensors broadcast over the
    per-sample shape (input normalisation, Mul/Div/Sub/Add by constants)."""
    return xs[0] * p["scale"] + p["shift"]


@op("add", "linear", (ANN, SNN), arity=None, attrs={"coeffs": None})
def _add(xs, node, p):
    """Sum of two or more tensors of the same per-sample shape (residual connections).

    Optional ``coeffs`` (one list per input, a scalar or one entry per channel) weight
    each input: ``y = sum_i coeffs_i * x_i``; it is how branches with different spike
    scales are rescaled before they meet.
    """
    coeffs = node.attr("coeffs")
    out = None
    for i, x in enumerate(xs):
        if coeffs is not None:
            c = torch.as_tensor(coeffs[i], dtype=x.dtype, device=x.device)
            if c.dim() == 1 and x.dim() > 2:
                c = c.view(-1, *([1] * (x.dim() - 2)))
            x = x * c
        out = x if out is None else out + x
    return out


@op("concat", "linear", (ANN, SNN), arity=None, attrs={"axis": 1})
def _concat(xs, node, p):
    """Concatenation along ``axis`` (>= 1; the batch axis cannot be concatenated)."""
    return torch.cat(xs, dim=node.attr("axis"))


@op("reshape", "linear", (ANN, SNN), attrs={"shape": REQUIRED})
def _reshape(xs, node, p):
    """Reshape each sample to ``shape`` (per-sample, fully resolved; Flatten is a reshape)."""
    return xs[0].reshape(xs[0].shape[0], *node.attr("shape"))


@op("avg_pool", "linear", (ANN, SNN), attrs={"kernel": REQUIRED, "strides": None, "pads": None, "count_include_pad": False, "ceil_mode": False})
def _avg_pool(xs, node, p):
    """N-d average pooling (N = 1 or 2), as ONNX AveragePool."""
    x = xs[0]
    nd = _spatial_rank(x)
    k = node.attr("kernel")
    strides = node.attr("strides") or list(k)
    padding, fpad = _pad_args(_pads(node, nd), nd)
    cip = bool(node.attr("count_include_pad"))
    if fpad is not None:
        if not cip:
            raise VerificationError(f"node {node.name!r}: asymmetric average-pool padding requires count_include_pad")
        x = F.pad(x, fpad)
    if any(2 * pd > kk for pd, kk in zip(padding, k)):
        raise VerificationError(f"node {node.name!r}: pooling pad larger than half the kernel")
    fn = F.avg_pool1d if nd == 1 else F.avg_pool2d
    return fn(x, k, strides, padding, ceil_mode=bool(node.attr("ceil_mode")), count_include_pad=cip)


@op("global_avg_pool", "linear", (ANN, SNN), attrs={"keepdims": True})
def _global_avg_pool(xs, node, p):
    """Mean over every spatial axis (GlobalAveragePool, ReduceMean over H, W, x.mean((2, 3)));
    with ``keepdims`` the spatial axes stay as size 1."""
    x = xs[0]
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=bool(node.attr("keepdims")))


@op("upsample", "linear", (ANN, SNN), attrs={"scales": REQUIRED, "mode": "nearest"})
def _upsample(xs, node, p):
    """Nearest-neighbour upsampling by integer ``scales`` per spatial axis."""
    if node.attr("mode") != "nearest":
        raise VerificationError(f"node {node.name!r}: only nearest upsampling is supported")
    x = xs[0]
    for i, s in enumerate(node.attr("scales")):
        if s != 1:
            x = torch.repeat_interleave(x, int(s), dim=2 + i)
    return x


# --------------------------------------------------------------- ANN-only ops
@op("relu", "activation", (ANN,), attrs={"max": None, "threshold_method": None}, optional_params=("threshold",))
def _relu(xs, node, p):
    """Rectifier ``y = clip(x, 0, max)`` (``max`` None: unbounded; Clip with min 0 imports here).

    ``threshold`` (set by balance-thresholds: a scalar or one value per channel) is the
    firing threshold its IF neuron will get; it does not change the ANN's output.
    """
    mx = node.attr("max")
    return torch.clamp(xs[0], min=0.0, max=None if mx is None else float(mx))


@op("batch_norm", "norm", (ANN,), attrs={"epsilon": 1e-5}, params=("scale", "bias", "mean", "var"))
def _batch_norm(xs, node, p):
    """Inference batch normalisation over axis 1:
    ``y = scale * (x - mean) / sqrt(var + epsilon) + bias``."""
    x = xs[0]
    view = (1, -1) + (1,) * (x.dim() - 2)
    inv = p["scale"] / torch.sqrt(p["var"] + node.attr("epsilon"))
    return (x - p["mean"].view(view)) * inv.view(view) + p["bias"].view(view)


@op("max_pool", "pool-max", (ANN,), attrs={"kernel": REQUIRED, "strides": None, "pads": None, "dilations": None, "ceil_mode": False})
def _max_pool(xs, node, p):
    """N-d max pooling (N = 1 or 2), as ONNX MaxPool. Padding never wins the max."""
    x = xs[0]
    nd = _spatial_rank(x)
    k = node.attr("kernel")
    strides = node.attr("strides") or list(k)
    dil = node.attr("dilations") or [1] * nd
    padding, fpad = _pad_args(_pads(node, nd), nd)
    if fpad is not None:
        x = F.pad(x, fpad, value=-math.inf)
    fn = F.max_pool1d if nd == 1 else F.max_pool2d
    return fn(x, k, strides, padding, dilation=dil, ceil_mode=bool(node.attr("ceil_mode")))


@op("identity", "structural", (ANN,))
def _identity(xs, node, p):
    """``y = x``. Removed by canonicalize."""
    return xs[0]


@op("dropout", "structural", (ANN,))
def _dropout(xs, node, p):
    """Inference dropout: ``y = x``. Removed by canonicalize."""
    return xs[0]


@op("softmax", "postproc", (ANN,), attrs={"axis": 1})
def _softmax(xs, node, p):
    """Softmax over ``axis``; output post-processing, stripped by canonicalize."""
    return torch.softmax(xs[0], dim=node.attr("axis"))


@op("argmax", "postproc", (ANN,), attrs={"axis": 1, "keepdims": False})
def _argmax(xs, node, p):
    """Index of the maximum over ``axis`` (as float); output post-processing, stripped by
    canonicalize."""
    return torch.argmax(xs[0], dim=node.attr("axis"), keepdim=bool(node.attr("keepdims"))).to(xs[0].dtype)


# --------------------------------------------------------------- SNN-only ops
@op("if_neuron", "neuron", (SNN,), attrs={"reset": "subtract", "spike_scale": "threshold"}, params=("threshold", "v_init"))
@_stateful
def _if_neuron(xs, node, p):
    """Integrate-and-fire neuron without leak, one per element of its input.

    For steps t = 1..T with input current z(t)::

        v(t) = v(t-1) + z(t)
        s(t) = 1 if v(t) >= threshold else 0
        v(t) = v(t) - threshold * s(t)     if reset == "subtract" (soft reset)
        v(t) = v(t) * (1 - s(t))           if reset == "zero"     (hard reset)
        y(t) = threshold * s(t)            if spike_scale == "threshold"
        y(t) = s(t)                        if spike_scale == "unit" (binary spikes)

    with v(0) = v_init. ``threshold`` (> 0) and ``v_init`` broadcast over the per-sample
    shape (a scalar, one value per channel ``[C, 1, 1]``, or one per neuron).
    """


@op("spiking_max_pool", "pool-max", (SNN,), attrs={"kernel": REQUIRED, "strides": None, "pads": None, "dilations": None, "ceil_mode": False})
@_stateful
def _spiking_max_pool(xs, node, p):
    """Rate-gated max pooling of spike trains (the spiking approximation of MaxPool).

    Each window keeps the running sum c(t) = x(1) + ... + x(t) of its inputs and passes
    on, at step t, the input x(t) of the position whose running sum c(t) is largest
    (first position on ties). The time average of the output tends to the maximum of
    the inputs' time averages as T grows; for small T it can differ, which is why the
    alternative (``--maxpool avg``: treat as average pooling) exists. Attributes as max_pool.
    Executable forms: :func:`spiking_max_pool_gate` (one step), :func:`spiking_max_pool_sequence`.
    """


def spiking_max_pool_gate(
    csum: torch.Tensor, x: torch.Tensor, kernel: list[int], strides: list[int] | None = None, pads: list[int] | None = None,
    dilations: list[int] | None = None, ceil_mode: bool = False,
) -> torch.Tensor:
    """One step of ``spiking_max_pool`` on ``[N, C, *spatial]``: in each window, the input
    ``x`` at the position whose running sum ``csum`` (inputs so far, this step included) is
    largest, the first such position on ties. Arguments after ``x`` are the op's attributes."""
    nd = x.dim() - 2
    strides = strides or list(kernel)
    dil = dilations or [1] * nd
    pads = pads or [0] * (2 * nd)
    fpad: list[int] = []
    for i in reversed(range(nd)):
        fpad += [pads[i], pads[nd + i]]
    if any(fpad):
        csum = F.pad(csum, fpad, value=-torch.inf)
        x = F.pad(x, fpad, value=0.0)
    pool = F.max_pool1d if nd == 1 else F.max_pool2d
    _, idx = pool(csum, kernel, strides, 0, dilation=dil, ceil_mode=bool(ceil_mode), return_indices=True)
    return torch.gather(x.flatten(2), 2, idx.flatten(2)).reshape(idx.shape)


def spiking_max_pool_sequence(x_seq: torch.Tensor, kernel: list[int], **attrs) -> torch.Tensor:
    """The ``spiking_max_pool`` equations over a whole input sequence ``[T, B, C, *spatial]``
    (every step of :func:`spiking_max_pool_gate` at once)."""
    T = x_seq.shape[0]
    flat = x_seq.reshape(-1, *x_seq.shape[2:])
    csum = torch.cumsum(x_seq, dim=0).reshape(flat.shape)
    picked = spiking_max_pool_gate(csum, flat, kernel, **attrs)
    return picked.reshape(T, -1, *picked.shape[1:])


@op("readout", "readout", (SNN,))
@_stateful
def _readout(xs, node, p):
    """Non-spiking integrator at a graph output: ``y = (1/T) * sum_t x(t)``, the time
    average of its input (same argmax as the running sum). Executable form:
    :func:`readout_sequence`."""


def readout_sequence(x_seq: torch.Tensor) -> torch.Tensor:
    """The ``readout`` after every step of ``x_seq`` ([T, B, ...]): step t holds the mean of
    steps 1..t (every backend computes it exactly so)."""
    steps = torch.arange(1, x_seq.shape[0] + 1, device=x_seq.device, dtype=x_seq.dtype)
    return torch.cumsum(x_seq, dim=0) / steps.view(-1, *([1] * (x_seq.dim() - 1)))
