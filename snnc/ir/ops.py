"""The op set of the snnc IR: each op's meaning lives here, and only here.

Conventions: tensors are channel-first (``[batch, C, *spatial]``); 1-D and 2-D spatial ops
are supported. Padding lists follow ONNX: ``[begin_0, begin_1, ..., end_0, end_1, ...]``.
Axes in attributes count the batch dimension (axis 1 is the channel axis).

**The contract.** Every op is one :class:`OpSpec`, declared once with :func:`op` (stateless)
or :func:`stateful_op`. It holds

* its specification: the docstring (for spiking ops, the discrete-time equations);
* the declaration of what kind of op it is: a set of :data:`TRAITS`. Every category the rest
  of snnc asks about (synaptic, linear, stateful, spiking, ...) is derived from it with
  :meth:`OpSpec.has` / :func:`ops_with`; nothing retypes a list of op names;
* its attributes (name -> default, :data:`REQUIRED` when there is none), required and
  optional parameters, arity and the stages it may appear in;
* its **executable forms**, on torch tensors, with resolved attributes (every declared
  attribute present, defaults filled in: :meth:`OpSpec.resolve`) and parameter tensors:

  - stateless ops: ``compute(inputs, attrs, params) -> output`` on ``[N, ...]`` batches. The
    ANN interpreter calls it on a batch of samples; the spiking executors call it on
    ``[T*B, ...]`` (every time step at once), which is exact because the stateless ops of
    the SNN stage are linear and act on each step alone;
  - stateful ops: ``sequence(x, attrs, params) -> y`` over a whole input sequence
    ``[T, B, ...]``, and ``constant(x, attrs, params)`` where a time-invariant input gives a
    time-invariant output (``None`` when it does not: an IF neuron fed a constant current
    still spikes). Ops whose backends step them one time step at a time also export a
    step form (:func:`integrate_and_fire`, :func:`spiking_max_pool_gate`);

* its shape rule, :meth:`OpSpec.infer_shape`: stateless ops evaluate their own ``compute``
  on one all-zeros sample (a shape can never disagree with execution); stateful ops
  declare theirs.

Executors (:mod:`snnc.ir.executor`) and backend fallbacks call these forms; no other module
implements an op's arithmetic. ``docs/architecture.md`` ("Adding an op") shows how to add one.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from snnc.errors import VerificationError

REQUIRED = object()

ANN = "ann"
SNN = "snn"

Shape = tuple[int, ...]
Attrs = Mapping[str, Any]
Params = Mapping[str, torch.Tensor]

# The one vocabulary ops are declared in. Each entry says what the trait promises.
TRAITS: dict[str, str] = {
    "synaptic": "a weighted layer with parameters weight and bias (conv, transposed conv, linear): what a neuromorphic core "
    "holds as synapses; the layer calibration fits and energy estimates count as MACs / synaptic operations",
    "linear": "affine in its inputs: commutes with time averaging, so it runs unchanged on spike trains, step by step",
    "channelwise": "acts on every channel alike and alone: a positive per-channel factor on the input is the same factor on the output",
    "preserves_amplitude": "moves or averages values without weighting them: the amplitude of the spikes it carries passes through",
    "spiking": "emits spike trains",
    "neuron": "a spiking neuron layer (the SNN counterpart of an activation)",
    "readout": "the non-spiking output integrator of an SNN",
    "activation": "an ANN activation a neuron replaces",
    "norm": "an inference normalisation folded away before conversion",
    "max_pool": "a max pooling (ANN) or its spiking approximation",
    "structural": "computes nothing (y = x); removed by canonicalize",
    "postproc": "output post-processing (softmax, argmax) stripped by canonicalize",
    "nonlinear": "a non-ReLU nonlinearity of the ANN (layer normalisation, softmax inside the network, GELU / SiLU, the product "
    "of two computed tensors): insert-if replaces it with its `temporal` counterpart followed by a neuron",
    "bilinear": "the product of two computed tensors (attention's Q K^T and A V): linear in each input alone, not in both",
    "temporal": "the SNN counterpart of a nonlinear op: evaluates the op on the running means of its input spike trains and "
    "emits the change of the op's running total (expectation compensation), which the neuron after it turns into spikes",
}

Compute = Callable[[list[torch.Tensor], Attrs, Params], torch.Tensor]
Sequential = Callable[[torch.Tensor, Attrs, Params], torch.Tensor]
ShapeRule = Callable[[list[Shape], Attrs], Shape]
# check(input shapes, resolved attrs, parameter shapes): raises VerificationError naming the
# attribute or parameter at fault (``attrs.groups: ...``, ``params.weight: ...``).
Checker = Callable[[list[Shape], Attrs, Mapping[str, Shape]], None]

# The device shape inference evaluates ``compute`` on: "meta" inside :func:`shapes_only`.
_SHAPE_DEVICE: contextvars.ContextVar[str] = contextvars.ContextVar("snnc_shape_device", default="cpu")


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Within this block :meth:`OpSpec.infer_shape` runs on torch's ``meta`` device: no
    memory is allocated and parameter values are not read (their shapes suffice), so an
    untrusted graph's shapes can be re-inferred before its weights are loaded."""
    token = _SHAPE_DEVICE.set("meta")
    try:
        yield
    finally:
        _SHAPE_DEVICE.reset(token)


@dataclass(frozen=True)
class OpSpec:
    """Declaration of an IR op (see the module docstring for the contract)."""

    name: str
    doc: str
    traits: frozenset[str]
    stages: frozenset[str]
    arity: int | None  # None: one or more
    attrs: dict[str, Any] = field(default_factory=dict)  # name -> default (REQUIRED)
    params: tuple[str, ...] = ()  # required parameters
    optional_params: tuple[str, ...] = ()
    compute: Compute | None = None  # stateless form on [N, ...]
    sequence: Sequential | None = None  # stateful form on [T, B, ...]
    constant: Sequential | None = None  # stateful op on a time-invariant input whose output is time-invariant too
    shape: ShapeRule | None = None  # declared shape rule (stateless ops: evaluated from compute)
    check: Checker | None = None  # attribute ranges and parameter shapes (:func:`op_check`)

    @property
    def stateful(self) -> bool:
        """Has state over time (a ``sequence`` form) rather than a ``compute`` form."""
        return self.sequence is not None

    def has(self, trait: str) -> bool:
        if trait not in TRAITS:
            raise KeyError(f"unknown op trait {trait!r}; traits: {', '.join(TRAITS)}")
        return trait in self.traits

    def attr_default(self, key: str) -> Any:
        if key not in self.attrs:
            raise KeyError(f"op {self.name!r} has no attribute {key!r}")
        default = self.attrs[key]
        if default is REQUIRED:
            raise KeyError(f"attribute {key!r} of op {self.name!r} is required")
        return default

    def resolve(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Every declared attribute: the given value, or the default (required ones must be given)."""
        out = {}
        for key, default in self.attrs.items():
            if key in attrs:
                out[key] = attrs[key]
            elif default is REQUIRED:
                raise VerificationError(f"op {self.name!r}: required attribute {key!r} is missing")
            else:
                out[key] = default
        return out

    def validate(self, shapes: Sequence[Shape], attrs: Mapping[str, Any], param_shapes: Mapping[str, Shape]) -> dict[str, Any]:
        """Check attributes (types, ranges) and parameter shapes against the op's rules for
        inputs of per-sample ``shapes``; returns the resolved attributes. Raises
        VerificationError naming the attribute or parameter (``attrs.groups: ...``)."""
        for key in attrs:
            if key not in self.attrs:
                raise VerificationError(f"attrs.{key}: op {self.name!r} has no such attribute")
        for key in param_shapes:
            if key not in self.params and key not in self.optional_params:
                raise VerificationError(f"params.{key}: op {self.name!r} has no such parameter")
        for key in self.params:
            if key not in param_shapes:
                raise VerificationError(f"params.{key}: required parameter of {self.name!r} is missing")
        if self.arity is not None and len(shapes) != self.arity:
            raise VerificationError(f"inputs: op {self.name!r} takes {self.arity} input(s), got {len(shapes)}")
        if not shapes:
            raise VerificationError(f"inputs: op {self.name!r} needs at least one input")
        resolved = self.resolve(attrs)
        if self.check is not None:
            self.check([tuple(s) for s in shapes], resolved, {k: tuple(v) for k, v in param_shapes.items()})
        return resolved

    @torch.no_grad()
    def infer_shape(self, shapes: Sequence[Shape], attrs: Mapping[str, Any], params: Mapping[str, np.ndarray]) -> Shape:
        """The per-sample output shape for inputs of per-sample ``shapes``."""
        resolved = self.resolve(attrs)
        if self.shape is not None:
            return tuple(int(d) for d in self.shape([tuple(s) for s in shapes], resolved))
        if self.compute is None:  # pragma: no cover - every op has one or the other (checked at registration)
            raise VerificationError(f"op {self.name!r} has no shape rule")
        if _SHAPE_DEVICE.get() == "meta":
            zeros = [torch.zeros((1, *s), device="meta") for s in shapes]
            p = {k: torch.empty(tuple(np.shape(a)), device="meta") for k, a in params.items()}
        else:
            zeros = [torch.zeros((1, *s)) for s in shapes]
            p = {k: torch.from_numpy(np.asarray(a, dtype=np.float32)) for k, a in params.items()}
        return tuple(int(d) for d in self.compute(zeros, resolved, p).shape[1:])


_REGISTRY: dict[str, OpSpec] = {}


def register_op(spec: OpSpec) -> OpSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"op {spec.name!r} registered twice")
    unknown = set(spec.traits) - set(TRAITS)
    if unknown:
        raise ValueError(f"op {spec.name!r}: unknown traits {sorted(unknown)}; declare them in TRAITS")
    if (spec.compute is None) == (spec.sequence is None):
        raise ValueError(f"op {spec.name!r} needs exactly one executable form: compute (stateless) or sequence (stateful)")
    if spec.sequence is not None and spec.shape is None:
        raise ValueError(f"stateful op {spec.name!r} needs a shape rule")
    _REGISTRY[spec.name] = spec
    return spec


def op_check(name: str) -> Callable[[Checker], Checker]:
    """Decorator declaring the attribute / parameter rules of the registered op ``name``
    (the ``check`` of its :class:`OpSpec`, run by :meth:`OpSpec.validate`)."""

    def deco(fn: Checker) -> Checker:
        _REGISTRY[name] = dataclasses.replace(get_op(name), check=fn)
        return fn

    return deco


def unregister_op(name: str) -> None:
    """Remove an op from the registry (tests that register a temporary op)."""
    _REGISTRY.pop(name, None)


def get_op(name: str) -> OpSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise VerificationError(f"unknown IR op {name!r}; known ops: {', '.join(sorted(_REGISTRY))}") from None


def all_ops() -> dict[str, OpSpec]:
    return dict(_REGISTRY)


def ops_with(trait: str) -> frozenset[str]:
    """Names of the ops declaring ``trait`` (a category derived from the declarations)."""
    if trait not in TRAITS:
        raise KeyError(f"unknown op trait {trait!r}; traits: {', '.join(TRAITS)}")
    return frozenset(name for name, spec in _REGISTRY.items() if trait in spec.traits)


def op(name: str, traits: Sequence[str], stages: Sequence[str], arity: int | None = 1, attrs=None, params=(), optional_params=(), shape=None):
    """Decorator registering a stateless op whose ``compute`` is the decorated function;
    its docstring is the op's specification."""

    def deco(fn: Compute) -> Compute:
        register_op(
            OpSpec(
                name=name, doc=(fn.__doc__ or "").strip(), traits=frozenset(traits), stages=frozenset(stages), arity=arity,
                attrs=dict(attrs or {}), params=tuple(params), optional_params=tuple(optional_params), compute=fn, shape=shape,
            )
        )  # fmt: skip
        return fn

    return deco


def stateful_op(name: str, traits: Sequence[str], stages: Sequence[str], *, shape: ShapeRule, constant: Sequential | None = None, attrs=None, params=()):
    """Decorator registering a stateful op whose ``sequence`` form is the decorated function
    (input and output ``[T, B, ...]``); its docstring is the op's specification."""

    def deco(fn: Sequential) -> Sequential:
        register_op(
            OpSpec(
                name=name, doc=(fn.__doc__ or "").strip(), traits=frozenset(traits), stages=frozenset(stages), arity=1,
                attrs=dict(attrs or {}), params=tuple(params), sequence=fn, constant=constant, shape=shape,
            )
        )  # fmt: skip
        return fn

    return deco


def same_shape(shapes: list[Shape], attrs: Attrs) -> Shape:
    """Shape rule of element-wise ops: the input's shape."""
    return shapes[0]


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


def _pads(attrs: Attrs, nd: int) -> list[int]:
    pads = attrs["pads"]
    return list(pads) if pads else [0] * (2 * nd)


# ---------------------------------------------------------------- linear ops
@op("conv", ("synaptic", "linear"), (ANN, SNN), attrs={"strides": None, "pads": None, "dilations": None, "groups": 1}, params=("weight", "bias"))
def _conv(xs, attrs, p):
    """N-d convolution (N = 1 or 2): ``y = conv(x, weight) + bias``.

    weight ``[C_out, C_in/groups, *kernel]``, bias ``[C_out]``; ``strides``, ``dilations``
    per spatial dim (default 1); ``pads`` in ONNX order (default 0).
    """
    x = xs[0]
    nd = _spatial_rank(x)
    strides = attrs["strides"] or [1] * nd
    dil = attrs["dilations"] or [1] * nd
    padding, fpad = _pad_args(_pads(attrs, nd), nd)
    if fpad is not None:
        x = F.pad(x, fpad)
    fn = F.conv1d if nd == 1 else F.conv2d
    return fn(x, p["weight"], p["bias"], stride=strides, padding=padding, dilation=dil, groups=attrs["groups"])


@op(
    "conv_transpose",
    ("synaptic", "linear"),
    (ANN, SNN),
    attrs={"strides": None, "pads": None, "dilations": None, "output_padding": None, "groups": 1},
    params=("weight", "bias"),
)
def _conv_transpose(xs, attrs, p):
    """N-d transposed convolution (N = 1 or 2), as ONNX ConvTranspose.

    weight ``[C_in, C_out/groups, *kernel]``, bias ``[C_out]``; ``pads`` crop the full
    output (ONNX order); ``output_padding`` adds rows/columns at the end.
    """
    x = xs[0]
    nd = _spatial_rank(x)
    strides = attrs["strides"] or [1] * nd
    dil = attrs["dilations"] or [1] * nd
    outpad = attrs["output_padding"] or [0] * nd
    pads = _pads(attrs, nd)
    fn = F.conv_transpose1d if nd == 1 else F.conv_transpose2d
    y = fn(x, p["weight"], p["bias"], stride=strides, padding=0, output_padding=outpad, groups=attrs["groups"], dilation=dil)
    begin, end = pads[:nd], pads[nd:]
    if any(begin) or any(end):
        sl = [slice(None), slice(None)] + [slice(b, y.shape[2 + i] - e) for i, (b, e) in enumerate(zip(begin, end))]
        y = y[tuple(sl)]
    return y


@op("linear", ("synaptic", "linear"), (ANN, SNN), params=("weight", "bias"))
def _linear(xs, attrs, p):
    """Fully connected layer over the last axis: ``y = x @ weight.T + bias``.

    weight ``[F_out, F_in]``, bias ``[F_out]``.
    """
    return F.linear(xs[0], p["weight"], p["bias"])


@op("affine", ("linear",), (ANN, SNN), params=("scale", "shift"))
def _affine(xs, attrs, p):
    """Element-wise ``y = x * scale + shift`` with constant tensors broadcast over the
    per-sample shape (input normalisation, Mul/Div/Sub/Add by constants)."""
    return xs[0] * p["scale"] + p["shift"]


@op("add", ("linear",), (ANN, SNN), arity=None, attrs={"coeffs": None})
def _add(xs, attrs, p):
    """Sum of two or more tensors of the same per-sample shape (residual connections).

    Optional ``coeffs`` (one list per input, a scalar or one entry per channel) weight
    each input: ``y = sum_i coeffs_i * x_i``; it is how branches with different spike
    scales are rescaled before they meet.
    """
    coeffs = attrs["coeffs"]
    out = None
    for i, x in enumerate(xs):
        if coeffs is not None:
            c = torch.as_tensor(coeffs[i], dtype=x.dtype, device=x.device)
            if c.dim() == 1 and x.dim() > 2:
                c = c.view(-1, *([1] * (x.dim() - 2)))
            x = x * c
        out = x if out is None else out + x
    return out


@op("concat", ("linear", "preserves_amplitude"), (ANN, SNN), arity=None, attrs={"axis": 1})
def _concat(xs, attrs, p):
    """Concatenation along ``axis`` (>= 1; the batch axis cannot be concatenated)."""
    return torch.cat(xs, dim=attrs["axis"])


@op("reshape", ("linear", "preserves_amplitude"), (ANN, SNN), attrs={"shape": REQUIRED})
def _reshape(xs, attrs, p):
    """Reshape each sample to ``shape`` (per-sample, fully resolved; Flatten is a reshape)."""
    return xs[0].reshape(xs[0].shape[0], *attrs["shape"])


@op(
    "avg_pool",
    ("linear", "channelwise", "preserves_amplitude"),
    (ANN, SNN),
    attrs={"kernel": REQUIRED, "strides": None, "pads": None, "count_include_pad": False, "ceil_mode": False},
)
def _avg_pool(xs, attrs, p):
    """N-d average pooling (N = 1 or 2), as ONNX AveragePool."""
    x = xs[0]
    nd = _spatial_rank(x)
    k = attrs["kernel"]
    strides = attrs["strides"] or list(k)
    padding, fpad = _pad_args(_pads(attrs, nd), nd)
    cip = bool(attrs["count_include_pad"])
    if fpad is not None:
        if not cip:
            raise VerificationError("asymmetric average-pool padding requires count_include_pad")
        x = F.pad(x, fpad)
    if any(2 * pd > kk for pd, kk in zip(padding, k)):
        raise VerificationError("pooling pad larger than half the kernel")
    fn = F.avg_pool1d if nd == 1 else F.avg_pool2d
    return fn(x, k, strides, padding, ceil_mode=bool(attrs["ceil_mode"]), count_include_pad=cip)


@op("global_avg_pool", ("linear", "channelwise", "preserves_amplitude"), (ANN, SNN), attrs={"keepdims": True})
def _global_avg_pool(xs, attrs, p):
    """Mean over every spatial axis (GlobalAveragePool, ReduceMean over H, W, x.mean((2, 3)));
    with ``keepdims`` the spatial axes stay as size 1."""
    x = xs[0]
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=bool(attrs["keepdims"]))


@op("upsample", ("linear", "channelwise", "preserves_amplitude"), (ANN, SNN), attrs={"scales": REQUIRED, "mode": "nearest"})
def _upsample(xs, attrs, p):
    """Nearest-neighbour upsampling by integer ``scales`` per spatial axis."""
    if attrs["mode"] != "nearest":
        raise VerificationError("only nearest upsampling is supported")
    x = xs[0]
    for i, s in enumerate(attrs["scales"]):
        if s != 1:
            x = torch.repeat_interleave(x, int(s), dim=2 + i)
    return x


@op("pad", ("linear", "channelwise", "preserves_amplitude"), (ANN, SNN), attrs={"pads": REQUIRED})
def _pad(xs, attrs, p):
    """Zero padding of the spatial axes (ONNX Pad in constant mode with value 0, F.pad,
    nn.ZeroPad2d): ``pads`` in ONNX order, the begin of every spatial axis then the ends,
    each >= 0."""
    x = xs[0]
    nd = _spatial_rank(x)
    pads = list(attrs["pads"])
    if len(pads) != 2 * nd or any(int(v) < 0 for v in pads):
        raise VerificationError(f"pads {pads} must list a begin and an end (>= 0) for each of the {nd} spatial axes")
    fpad: list[int] = []
    for i in reversed(range(nd)):  # F.pad takes pairs from the last dimension backwards
        fpad += [int(pads[i]), int(pads[nd + i])]
    return F.pad(x, fpad)


# --------------------------------------------------------------- ANN-only ops
@op("relu", ("activation",), (ANN,), attrs={"max": None, "threshold_method": None}, optional_params=("threshold",))
def _relu(xs, attrs, p):
    """Rectifier ``y = clip(x, 0, max)`` (``max`` None: unbounded; Clip with min 0 imports here).

    ``threshold`` (set by balance-thresholds: a scalar or one value per channel) is the
    firing threshold its IF neuron will get; it does not change the ANN's output.
    """
    mx = attrs["max"]
    return torch.clamp(xs[0], min=0.0, max=None if mx is None else float(mx))


@op("batch_norm", ("norm",), (ANN,), attrs={"epsilon": 1e-5}, params=("scale", "bias", "mean", "var"))
def _batch_norm(xs, attrs, p):
    """Inference batch normalisation over axis 1:
    ``y = scale * (x - mean) / sqrt(var + epsilon) + bias``."""
    x = xs[0]
    view = (1, -1) + (1,) * (x.dim() - 2)
    inv = p["scale"] / torch.sqrt(p["var"] + attrs["epsilon"])
    return (x - p["mean"].view(view)) * inv.view(view) + p["bias"].view(view)


_POOL_ATTRS = {"kernel": REQUIRED, "strides": None, "pads": None, "dilations": None, "ceil_mode": False}


@op("max_pool", ("max_pool", "channelwise"), (ANN,), attrs=_POOL_ATTRS)
def _max_pool(xs, attrs, p):
    """N-d max pooling (N = 1 or 2), as ONNX MaxPool. Padding never wins the max."""
    x = xs[0]
    nd = _spatial_rank(x)
    k = attrs["kernel"]
    strides = attrs["strides"] or list(k)
    dil = attrs["dilations"] or [1] * nd
    padding, fpad = _pad_args(_pads(attrs, nd), nd)
    if any(2 * pd > (kk - 1) * d + 1 for pd, kk, d in zip(padding, k, dil)):
        raise VerificationError("max-pool pad larger than half the (dilated) kernel")
    if fpad is not None:
        x = F.pad(x, fpad, value=-math.inf)
    fn = F.max_pool1d if nd == 1 else F.max_pool2d
    return fn(x, k, strides, padding, dilation=dil, ceil_mode=bool(attrs["ceil_mode"]))


@op("identity", ("structural",), (ANN,))
def _identity(xs, attrs, p):
    """``y = x``. Removed by canonicalize."""
    return xs[0]


@op("dropout", ("structural",), (ANN,))
def _dropout(xs, attrs, p):
    """Inference dropout: ``y = x``. Removed by canonicalize."""
    return xs[0]


@op("softmax", ("postproc", "nonlinear"), (ANN,), attrs={"axis": 1})
def _softmax(xs, attrs, p):
    """Softmax over ``axis``. At a graph output it is post-processing, stripped by
    canonicalize; inside the network (attention weights) insert-if makes it temporal."""
    return torch.softmax(xs[0], dim=attrs["axis"])


@op("argmax", ("postproc",), (ANN,), attrs={"axis": 1, "keepdims": False})
def _argmax(xs, attrs, p):
    """Index of the maximum over ``axis`` (as float); output post-processing, stripped by
    canonicalize."""
    return torch.argmax(xs[0], dim=attrs["axis"], keepdim=bool(attrs["keepdims"])).to(xs[0].dtype)


# ---------------------------------------------------- token layouts and attention
# Transformers carry ``[B, N, D]`` token sequences next to channel-first images; these ops
# move axes explicitly (the batch axis always stays first) and add the nonlinear ops of an
# attention network. The nonlinear ones run in the ANN stage only; insert-if replaces each
# with its ``temporal`` counterpart (below) and a neuron.
@op("transpose", ("linear", "preserves_amplitude"), (ANN, SNN), attrs={"perm": REQUIRED})
def _transpose(xs, attrs, p):
    """Permutation of the axes, ``y = x.permute(perm)``; ``perm`` counts the batch axis, which
    stays first (``perm[0] = 0``): ONNX Transpose, torch ``permute`` / ``transpose``."""
    return xs[0].permute(*attrs["perm"])


@op("slice", ("linear", "preserves_amplitude"), (ANN, SNN), attrs={"axis": REQUIRED, "start": 0, "end": REQUIRED, "step": 1})
def _slice(xs, attrs, p):
    """Elements ``start, start + step, ... < end`` along ``axis`` (>= 1; 0 <= start < end <=
    the axis' size, step >= 1): ONNX Slice / Split, torch indexing with a range."""
    idx = [slice(None)] * xs[0].dim()
    idx[attrs["axis"]] = slice(attrs["start"], attrs["end"], attrs["step"])
    return xs[0][tuple(idx)]


@op("select", ("linear", "preserves_amplitude"), (ANN, SNN), attrs={"axis": REQUIRED, "index": REQUIRED})
def _select(xs, attrs, p):
    """Element ``index`` along ``axis`` (>= 1), the axis removed: ONNX Gather with a scalar
    index, torch ``x[:, 0]`` (a ViT's class token)."""
    return xs[0].select(attrs["axis"], attrs["index"])


@op("concat_constant", ("linear",), (ANN, SNN), attrs={"axis": 1, "position": "before"}, params=("value",))
def _concat_constant(xs, attrs, p):
    """Concatenation with a constant along ``axis``: ``y = concat([value, x])`` (``position``
    "before") or ``concat([x, value])`` ("after"); ``value`` has the per-sample shape of x
    except along ``axis`` and is the same for every sample (a ViT's class token)."""
    x = xs[0]
    c = p["value"].to(x.dtype).unsqueeze(0).expand(x.shape[0], *p["value"].shape)
    parts = [c, x] if attrs["position"] == "before" else [x, c]
    return torch.cat(parts, dim=attrs["axis"])


@op("matmul", ("nonlinear", "bilinear"), (ANN,), arity=2)
def _matmul(xs, attrs, p):
    """Matrix product of two computed tensors over their last two axes, broadcast over the
    others: ``y = a @ b`` with per-sample shapes ``[..., n, k]`` and ``[..., k, m]`` (attention's
    Q K^T and A V). A product with a constant matrix imports as ``linear`` instead."""
    return torch.matmul(xs[0], xs[1])


@op("layer_norm", ("nonlinear",), (ANN,), attrs={"epsilon": 1e-5}, params=("scale", "bias"))
def _layer_norm(xs, attrs, p):
    """Layer normalisation over the last axis (D features):
    ``y = (x - mean(x)) / sqrt(var(x) + epsilon) * scale + bias`` with ``scale``, ``bias`` of
    shape ``[D]`` (ONNX LayerNormalization with axis -1 and its decomposed exports, nn.LayerNorm)."""
    x = xs[0]
    return F.layer_norm(x, (x.shape[-1],), p["scale"].to(x.dtype), p["bias"].to(x.dtype), attrs["epsilon"])


@op("gelu", ("nonlinear",), (ANN,), attrs={"approximate": "none"})
def _gelu(xs, attrs, p):
    """Gaussian error linear unit, ``y = x Φ(x)`` (``approximate`` "none": the erf form) or its
    tanh approximation (``approximate`` "tanh")."""
    return F.gelu(xs[0], approximate=attrs["approximate"])


@op("silu", ("nonlinear",), (ANN,))
def _silu(xs, attrs, p):
    """Sigmoid linear unit (swish), ``y = x * sigmoid(x)``."""
    return F.silu(xs[0])


# --------------------------------------------------------------- SNN-only ops
MAX_SPIKES = 255  # a burst neuron's largest count per step (an 8-bit graded-spike payload)
_IF_CHUNK = 1 << 15  # neurons per chunk on CPU: v, θ and one step's input stay in L2


def integrate_and_fire(v: torch.Tensor, z: torch.Tensor, theta: torch.Tensor, spikes: torch.Tensor, spiked: torch.Tensor, subtract: bool) -> None:
    """One step of the ``if_neuron`` equations for the plain neuron (``max_spikes = 1``,
    unsigned), in place: ``v += z``; ``s = [v >= θ]`` written into ``spikes`` (0 / 1, float)
    and ``spiked`` (bool, same shape); then the reset (``v -= θ·s``, or ``v = 0`` where it
    spiked). ``z`` and ``θ`` broadcast over ``v``. The step form of :func:`_if_neuron`, for
    backends that advance one step at a time (variants: :func:`integrate_and_fire_counts`)."""
    v.add_(z)
    torch.ge(v, theta, out=spiked)
    spikes.copy_(spiked)
    if subtract:
        v.addcmul_(spikes, theta, value=-1.0)
    else:
        v.masked_fill_(spiked, 0.0)


def spike_counts_step(v: torch.Tensor, theta: torch.Tensor, emitted: torch.Tensor | None, max_spikes: int, bipolar: bool = False) -> torch.Tensor:
    """The spike count of one step of the ``if_neuron`` variants, for a potential ``v`` that
    has integrated this step's input: ``clip(floor(v/θ), lo, K)`` with ``K = max_spikes`` and
    ``lo = -min(n, K)`` for a signed neuron that has emitted ``n = emitted`` spikes net so
    far (``emitted`` is None: unsigned, ``lo = 0``; ``bipolar``: ``lo = -K``). Returns float counts."""
    q = torch.floor(v / theta)
    if bipolar:
        return q.clamp_(-float(max_spikes), float(max_spikes))
    if emitted is None:
        return q.clamp_(0.0, float(max_spikes))
    return torch.maximum(torch.minimum(q, torch.full_like(q, float(max_spikes))), -emitted.clamp(max=float(max_spikes)))


def integrate_and_fire_counts(
    v: torch.Tensor, z: torch.Tensor, theta: torch.Tensor, emitted: torch.Tensor | None, max_spikes: int, subtract: bool, bipolar: bool = False
) -> torch.Tensor:
    """One step of the general ``if_neuron`` equations (any ``max_spikes``, signed, bipolar or
    not), in place on ``v`` (and on ``emitted``, the net spike count so far, for a signed
    neuron): ``v += z``; ``s = spike_counts_step(...)``; reset ``v -= θ·s`` (or ``v = 0`` where
    ``s != 0``); returns the counts ``s`` (float). The step form the variants' backends use."""
    v.add_(z)
    s = spike_counts_step(v, theta, emitted, max_spikes, bipolar)
    if subtract:
        v.sub_(s * theta)
    else:
        v.masked_fill_(s != 0, 0.0)
    if emitted is not None:
        emitted.add_(s)
    return s


def if_neuron_rate(z: torch.Tensor, theta: torch.Tensor, v_init: torch.Tensor, timesteps: int, *, straight_through: bool = False, max_spikes: int = 1) -> torch.Tensor:
    """The closed form of ``if_neuron`` (soft reset, θ-scaled spikes) for a current ``z``
    constant over ``timesteps`` steps: its time-averaged output
    ``(θ/T) clip(floor((z T + v_init) / θ), 0, K T)`` with ``K = max_spikes``: ``z`` clipped at
    Kθ and quantised to K·T levels (a signed neuron never emits a negative spike on a
    constant current, so the same form holds for it). With ``straight_through`` the floor
    passes gradients unchanged (calibration fits weights through it)."""
    u = (z * timesteps + v_init) / theta
    u = u + (torch.floor(u) - u).detach() if straight_through else torch.floor(u)
    return u.clamp(0, timesteps * max_spikes) * theta / timesteps


@stateful_op(
    "if_neuron",
    ("neuron", "spiking"),
    (SNN,),
    shape=same_shape,
    attrs={"reset": "subtract", "spike_scale": "threshold", "max_spikes": 1, "signed": False, "bipolar": False},
    params=("threshold", "v_init"),
)
def _if_neuron(x_seq, attrs, p):
    """Integrate-and-fire neuron without leak, one per element of its input.

    For steps t = 1..T with input current z(t), the plain neuron (``max_spikes`` = 1,
    ``signed`` false)::

        v(t) = v(t-1) + z(t)
        s(t) = 1 if v(t) >= threshold else 0
        v(t) = v(t) - threshold * s(t)     if reset == "subtract" (soft reset)
        v(t) = v(t) * (1 - s(t))           if reset == "zero"     (hard reset)
        y(t) = threshold * s(t)            if spike_scale == "threshold"
        y(t) = s(t)                        if spike_scale == "unit" (binary spikes)

    with v(0) = v_init. ``threshold`` (> 0) and ``v_init`` broadcast over the per-sample
    shape (a scalar, one value per channel ``[C, 1, 1]``, or one per neuron).

    **Variants** (low latency). With ``max_spikes`` = K > 1 (a *burst* neuron: up to K
    spikes in one step, a graded spike of payload 0..K) and / or ``signed`` (a neuron that
    takes back spikes it emitted too early with spikes of −threshold), the spike count is::

        s(t) = clip(floor(v(t) / threshold), lo(t), K)
        lo(t) = -min(n(t-1), K)  if signed,  else 0
        n(t) = n(t-1) + s(t),  n(0) = 0        (net spikes emitted so far; never negative)

    and the reset subtracts ``threshold * s(t)`` (soft) or zeroes v where s(t) != 0 (hard);
    y(t) as above with s(t) the (possibly negative or > 1) count. A signed neuron's net
    output n(t) never goes below zero, the ReLU's floor: it emits −threshold only to
    correct an earlier over-estimate (its potential fell below 0 after firing), which a
    plain neuron can never take back. On a current constant over T steps a burst neuron's
    average output is quantised to K·T levels of threshold/T, up to K·threshold
    (:func:`if_neuron_rate`); a signed neuron emits no negative spike and equals the plain one.

    A ``bipolar`` neuron (for signed values: the residual stream, queries and keys, the
    outputs of ``temporal`` ops) has ``lo(t) = -K`` at every step: its net output may be
    negative, and with K = 2^(b-1) - 1 each step's count is one graded spike of a b-bit signed
    payload.
    Step forms: :func:`integrate_and_fire` (plain), :func:`integrate_and_fire_counts`
    (every variant); response to a constant current: :func:`if_neuron_rate`.
    """
    theta, v0 = p["threshold"], p["v_init"]
    if attrs["max_spikes"] != 1 or attrs["signed"] or attrs["bipolar"]:
        return _if_neuron_variant(x_seq, attrs, theta, v0)
    T = x_seq.shape[0]
    shape = x_seq.shape[1:]  # [B, *neuron shape]
    device = x_seq.device
    # Flatten every neuron of the batch into one axis and run the whole T loop on chunks
    # small enough to stay in cache: v never leaves it between steps. A time-invariant
    # input arrives as a broadcast view (stride 0 over T): no copy is made.
    th = theta.expand(shape).reshape(-1)
    v = (torch.zeros(shape, device=device) + v0).reshape(-1)
    z = x_seq.reshape(T, -1)
    spikes = torch.empty((T, th.numel()), device=device)
    chunk = _IF_CHUNK if device.type == "cpu" else max(1, th.numel())
    subtract = attrs["reset"] == "subtract"
    for lo in range(0, th.numel(), chunk):
        hi = min(th.numel(), lo + chunk)
        vc, zc, tc, out = v[lo:hi], z[:, lo:hi], th[lo:hi], spikes[:, lo:hi]
        spiked = torch.empty(vc.shape, dtype=torch.bool, device=device)
        for t in range(T):
            integrate_and_fire(vc, zc[t], tc, out[t], spiked, subtract)
    y = spikes.reshape(T, *shape)
    if attrs["spike_scale"] == "threshold":
        y.mul_(theta)
    return y


def _if_neuron_variant(x_seq: torch.Tensor, attrs: Attrs, theta: torch.Tensor, v0: torch.Tensor) -> torch.Tensor:
    """The ``if_neuron`` sequence of the burst / signed variants (:func:`integrate_and_fire_counts` per step)."""
    T, shape = x_seq.shape[0], x_seq.shape[1:]
    v = (torch.zeros(shape, device=x_seq.device) + v0).contiguous()
    th = theta.expand(shape)
    bipolar = bool(attrs["bipolar"])
    emitted = torch.zeros(shape, device=x_seq.device) if attrs["signed"] and not bipolar else None
    y = torch.empty((T, *shape), device=x_seq.device)
    subtract = attrs["reset"] == "subtract"
    for t in range(T):
        y[t] = integrate_and_fire_counts(v, x_seq[t], th, emitted, int(attrs["max_spikes"]), subtract, bipolar)
    if attrs["spike_scale"] == "threshold":
        y.mul_(theta)
    return y


def neuron_variant(attrs: Attrs) -> str:
    """An ``if_neuron``'s variant as ``snnc convert --neuron`` names it (``if``, ``signed``,
    ``burst:K``, ``signed-burst:K``, ``bipolar:K``), from its attributes (missing ones: the defaults)."""
    k, signed = int(attrs.get("max_spikes", 1)), bool(attrs.get("signed", False))
    if attrs.get("bipolar", False):
        return f"bipolar:{k}"
    if k == 1:
        return "signed" if signed else "if"
    return f"{'signed-burst' if signed else 'burst'}:{k}"


def unit_spikes(node_attrs: Attrs, y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Spikes in an ``if_neuron``'s output ``y`` counted as unit spikes (float64 sum): a
    burst of k counts k, a −threshold spike counts 1. For the plain neuron this is the
    number of non-zero entries."""
    if node_attrs.get("max_spikes", 1) == 1 and not node_attrs.get("signed", False) and not node_attrs.get("bipolar", False):
        return torch.count_nonzero(y).to(torch.float64)
    return unit_spike_entries(y, None if node_attrs.get("spike_scale", "threshold") == "unit" else theta).sum()


def unit_spike_entries(y: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
    """Per entry of a burst / signed neuron's output ``y``, its unit spikes (float64):
    ``round(|y| / θ)``, or ``round(|y|)`` for unit-scale spikes (``theta`` None)."""
    mag = y.abs() if theta is None else y.abs() / theta.to(y.device)
    return torch.round(mag).to(torch.float64)


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


def _max_pool_shape(shapes: list[Shape], attrs: Attrs) -> Shape:
    return get_op("max_pool").infer_shape(shapes, attrs, {})


@stateful_op(
    "spiking_max_pool",
    ("max_pool", "spiking", "channelwise", "preserves_amplitude"),
    (SNN,),
    shape=_max_pool_shape,
    constant=lambda x, attrs, p: _max_pool([x], attrs, p),  # a constant input: the gate picks the plain maximum
    attrs=_POOL_ATTRS,
)
def _spiking_max_pool(x_seq, attrs, p):
    """Rate-gated max pooling of spike trains (the spiking approximation of MaxPool).

    Each window keeps the running sum c(t) = x(1) + ... + x(t) of its inputs and passes
    on, at step t, the input x(t) of the position whose running sum c(t) is largest
    (first position on ties). The time average of the output tends to the maximum of
    the inputs' time averages as T grows; for small T it can differ, which is why the
    alternative (``--maxpool avg``: treat as average pooling) exists. Attributes as max_pool.
    A constant input gives max_pool of it. Step form: :func:`spiking_max_pool_gate`.
    """
    T = x_seq.shape[0]
    flat = x_seq.reshape(-1, *x_seq.shape[2:])
    csum = torch.cumsum(x_seq, dim=0).reshape(flat.shape)
    picked = spiking_max_pool_gate(csum, flat, **attrs)
    return picked.reshape(T, -1, *picked.shape[1:])


@stateful_op("readout", ("readout",), (SNN,), shape=same_shape, constant=lambda x, attrs, p: x)
def _readout(x_seq, attrs, p):
    """Non-spiking integrator at a graph output: after t steps ``y(t) = (1/t) * sum_s<=t x(s)``,
    the time average of its input so far (same argmax as the running sum). A constant input
    is its own average."""
    steps = torch.arange(1, x_seq.shape[0] + 1, device=x_seq.device, dtype=x_seq.dtype)
    return torch.cumsum(x_seq, dim=0) / steps.view(-1, *([1] * (x_seq.dim() - 1)))


# ------------------------------------------------- attribute and parameter rules
# Each op's rules on its attributes (types and ranges) and on its parameters' shapes, given
# its inputs' per-sample shapes: what a graph read from an untrusted file is checked against
# before anything executes it (:func:`snnc.ir.verify.verify_consistency`). Every failure is
# a VerificationError naming the attribute (``attrs.<key>``) or parameter (``params.<key>``).
_MAX_INT = 2**31 - 1  # attribute integers stay in torch's int32 range


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fail(where: str, msg: str) -> None:
    raise VerificationError(f"{where}: {msg}")


def _ints(attrs: Attrs, key: str, n: int, minimum: int, *, optional: bool = True) -> list[int] | None:
    """``attrs[key]`` as a list of ``n`` integers >= ``minimum`` (None allowed when optional)."""
    v = attrs[key]
    if optional and (v is None or v == []):  # the op's default (an empty list reads as the default too)
        return None
    if not isinstance(v, list) or len(v) != n or not all(_is_int(i) and minimum <= i <= _MAX_INT for i in v):
        _fail(f"attrs.{key}", f"expected a list of {n} integer(s) >= {minimum}, got {_short(v)}")
    return list(v)


def _flag(attrs: Attrs, key: str) -> None:
    if not isinstance(attrs[key], (bool, int)) or attrs[key] not in (0, 1):
        _fail(f"attrs.{key}", f"expected true or false, got {_short(attrs[key])}")


def _choice(attrs: Attrs, key: str, allowed: Sequence[str]) -> None:
    if attrs[key] not in allowed or not isinstance(attrs[key], str):
        _fail(f"attrs.{key}", f"expected one of {', '.join(map(repr, allowed))}, got {_short(attrs[key])}")


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _spatial(shapes: list[Shape], what: str) -> int:
    """The number of spatial axes (1 or 2) of a ``[C, *spatial]`` input."""
    if len(shapes[0]) not in (2, 3):
        _fail("inputs", f"{what} takes [C, L] or [C, H, W] per sample, got {list(shapes[0])}")
    return len(shapes[0]) - 1


def _param_shape(params: Mapping[str, Shape], key: str, want: Sequence[int], why: str) -> None:
    if tuple(params[key]) != tuple(want):
        _fail(f"params.{key}", f"shape {list(params[key])} does not match {why} (expected {list(want)})")


def _broadcasts(params: Mapping[str, Shape], key: str, shape: Shape) -> None:
    """Parameter ``key`` broadcasts over ``shape`` without adding dimensions."""
    try:
        ok = np.broadcast_shapes(params[key], shape) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        _fail(f"params.{key}", f"shape {list(params[key])} does not broadcast over the input's per-sample shape {list(shape)}")


def _window_attrs(attrs: Attrs, nd: int, *, kernel: bool) -> None:
    if kernel:
        _ints(attrs, "kernel", nd, 1, optional=False)
    _ints(attrs, "strides", nd, 1)
    _ints(attrs, "pads", 2 * nd, 0)
    if "dilations" in attrs:
        _ints(attrs, "dilations", nd, 1)


def _check_groups(attrs: Attrs, channels: int, out: int) -> int:
    g = attrs["groups"]
    if not _is_int(g) or g < 1 or channels % g or out % g:
        _fail("attrs.groups", f"expected a positive integer dividing {channels} input and {out} output channels, got {_short(g)}")
    return g


@op_check("conv")
def _conv_check(shapes, attrs, params):
    nd = _spatial(shapes, "conv")
    c_in = shapes[0][0]
    w = params["weight"]
    if len(w) != nd + 2 or min(w) < 1:
        _fail("params.weight", f"expected [C_out, C_in/groups, *kernel] with {nd} kernel axes, got {list(w)}")
    groups = _check_groups(attrs, c_in, w[0])
    if w[1] * groups != c_in:
        _fail("params.weight", f"shape {list(w)} takes {w[1] * groups} input channels (groups {groups}); the input has {c_in}")
    _param_shape(params, "bias", (w[0],), "the weight's output channels")
    _window_attrs(attrs, nd, kernel=False)


@op_check("conv_transpose")
def _conv_transpose_check(shapes, attrs, params):
    nd = _spatial(shapes, "conv_transpose")
    c_in = shapes[0][0]
    w = params["weight"]
    if len(w) != nd + 2 or min(w) < 1:
        _fail("params.weight", f"expected [C_in, C_out/groups, *kernel] with {nd} kernel axes, got {list(w)}")
    if w[0] != c_in:
        _fail("params.weight", f"shape {list(w)} takes {w[0]} input channels; the input has {c_in}")
    groups = attrs["groups"]
    if not _is_int(groups) or groups < 1 or c_in % groups:
        _fail("attrs.groups", f"expected a positive integer dividing the {c_in} input channels, got {_short(groups)}")
    _param_shape(params, "bias", (w[1] * groups,), "the weight's output channels")
    _window_attrs(attrs, nd, kernel=False)
    strides = attrs["strides"] or [1] * nd
    dil = attrs["dilations"] or [1] * nd
    outpad = _ints(attrs, "output_padding", nd, 0) or [0] * nd
    if any(o >= max(s, d) for o, s, d in zip(outpad, strides, dil)):
        _fail("attrs.output_padding", f"{outpad} must be smaller than the stride or the dilation on each axis")


@op_check("linear")
def _linear_check(shapes, attrs, params):
    if not shapes[0]:
        _fail("inputs", "linear takes at least one axis per sample")
    w = params["weight"]
    if len(w) != 2 or min(w) < 1 or w[1] != shapes[0][-1]:
        _fail("params.weight", f"expected [F_out, {shapes[0][-1]}] for an input of {shapes[0][-1]} features, got {list(w)}")
    _param_shape(params, "bias", (w[0],), "the weight's output features")


@op_check("affine")
def _affine_check(shapes, attrs, params):
    for key in ("scale", "shift"):
        _broadcasts(params, key, shapes[0])


@op_check("add")
def _add_check(shapes, attrs, params):
    if any(s != shapes[0] for s in shapes):
        _fail("inputs", f"add takes inputs of one per-sample shape, got {[list(s) for s in shapes]}")
    coeffs = attrs["coeffs"]
    if coeffs is None:
        return
    channels = shapes[0][0] if shapes[0] else 1
    if not isinstance(coeffs, list) or len(coeffs) != len(shapes):
        _fail("attrs.coeffs", f"expected one coefficient (or list per channel) for each of the {len(shapes)} inputs, got {_short(coeffs)}")
    for i, c in enumerate(coeffs):
        ok = _is_number(c) or (isinstance(c, list) and len(c) in (1, channels) and all(_is_number(v) for v in c))
        if not ok:
            _fail(f"attrs.coeffs[{i}]", f"expected a finite number or a list of 1 or {channels} finite numbers, got {_short(c)}")


@op_check("concat")
def _concat_check(shapes, attrs, params):
    axis = attrs["axis"]
    rank = len(shapes[0])
    if not _is_int(axis) or not 1 <= axis <= rank:
        _fail("attrs.axis", f"expected an integer from 1 to {rank} (axis 0 is the batch), got {_short(axis)}")
    for s in shapes:
        if len(s) != rank or any(a != b for i, (a, b) in enumerate(zip(s, shapes[0])) if i != axis - 1):
            _fail("inputs", f"concat along axis {axis} takes inputs equal on every other axis, got {[list(s) for s in shapes]}")


@op_check("reshape")
def _reshape_check(shapes, attrs, params):
    target = attrs["shape"]
    if not isinstance(target, list) or not all(_is_int(d) and 1 <= d <= _MAX_INT for d in target):
        _fail("attrs.shape", f"expected a list of positive integers, got {_short(target)}")
    if math.prod(target) != math.prod(shapes[0]):
        _fail("attrs.shape", f"{target} holds {math.prod(target)} elements; the input {list(shapes[0])} has {math.prod(shapes[0])}")


@op_check("avg_pool")
def _avg_pool_check(shapes, attrs, params):
    _window_attrs(attrs, _spatial(shapes, "avg_pool"), kernel=True)
    _flag(attrs, "count_include_pad")
    _flag(attrs, "ceil_mode")


@op_check("global_avg_pool")
def _global_avg_pool_check(shapes, attrs, params):
    if len(shapes[0]) < 2:
        _fail("inputs", f"global_avg_pool takes [C, *spatial] per sample, got {list(shapes[0])}")
    _flag(attrs, "keepdims")


@op_check("upsample")
def _upsample_check(shapes, attrs, params):
    nd = _spatial(shapes, "upsample")
    _ints(attrs, "scales", nd, 1, optional=False)
    _choice(attrs, "mode", ("nearest",))


@op_check("pad")
def _pad_check(shapes, attrs, params):
    _ints(attrs, "pads", 2 * _spatial(shapes, "pad"), 0, optional=False)


@op_check("relu")
def _relu_check(shapes, attrs, params):
    if attrs["max"] is not None and not (_is_number(attrs["max"]) and attrs["max"] >= 0):
        _fail("attrs.max", f"expected null or a finite number >= 0, got {_short(attrs['max'])}")
    if attrs["threshold_method"] is not None and not isinstance(attrs["threshold_method"], str):
        _fail("attrs.threshold_method", f"expected null or a string, got {_short(attrs['threshold_method'])}")
    if "threshold" in params:
        _broadcasts(params, "threshold", shapes[0])


@op_check("batch_norm")
def _batch_norm_check(shapes, attrs, params):
    if not shapes[0]:
        _fail("inputs", "batch_norm takes [C, ...] per sample")
    if not (_is_number(attrs["epsilon"]) and attrs["epsilon"] >= 0):
        _fail("attrs.epsilon", f"expected a finite number >= 0, got {_short(attrs['epsilon'])}")
    for key in ("scale", "bias", "mean", "var"):
        _param_shape(params, key, (shapes[0][0],), "the input's channels")


def _max_pool_check(shapes, attrs, params):
    _window_attrs(attrs, _spatial(shapes, "max_pool"), kernel=True)
    _flag(attrs, "ceil_mode")


op_check("max_pool")(_max_pool_check)
op_check("spiking_max_pool")(_max_pool_check)


@op_check("softmax")
def _softmax_check(shapes, attrs, params):
    rank = len(shapes[0]) + 1
    if not _is_int(attrs["axis"]) or not -rank <= attrs["axis"] < rank:
        _fail("attrs.axis", f"expected an integer in [{-rank}, {rank - 1}], got {_short(attrs['axis'])}")


@op_check("argmax")
def _argmax_check(shapes, attrs, params):
    _softmax_check(shapes, attrs, params)
    _flag(attrs, "keepdims")


@op_check("if_neuron")
def _if_neuron_check(shapes, attrs, params):
    _choice(attrs, "reset", ("subtract", "zero"))
    _choice(attrs, "spike_scale", ("threshold", "unit"))
    k = attrs["max_spikes"]
    if not _is_int(k) or not 1 <= k <= MAX_SPIKES:
        _fail("attrs.max_spikes", f"must be an integer in [1, {MAX_SPIKES}], got {_short(k)}")
    _flag(attrs, "signed")
    _flag(attrs, "bipolar")
    for key in ("threshold", "v_init"):
        _broadcasts(params, key, shapes[0])


# ------------------------------------------------------------------- temporal ops
TEMPORAL_MODES = ("expectation", "accumulate")


# What a neuromorphic target needs to run each temporal op (``snnc check`` and the report say it).
TEMPORAL_TARGET = {
    "temporal_gelu": "programmable neuron: accumulates its input and applies GELU to the running mean (a lookup table on "
    "Loihi 2's microcoded neurons); host-side elsewhere",
    "temporal_silu": "programmable neuron: accumulates its input and applies SiLU to the running mean (a lookup table); "
    "host-side elsewhere",
    "temporal_layer_norm": "host-side (or near-memory) op: mean and variance over a token's features need every feature of "
    "the token and a division / square root",
    "temporal_softmax": "host-side op: exponentials and a normalisation over a row of attention scores",
    "temporal_matmul": "host-side op: the product of two spike trains (Q K^T, A V) needs synapses whose weights change "
    "every step; a neuromorphic core holds fixed weights",
}


def temporal_name(op_name: str) -> str:
    """The SNN counterpart of a ``nonlinear`` op: ``temporal_<op>``."""
    return f"temporal_{op_name}"


def temporal_totals(xs: Sequence[torch.Tensor], fn: Callable[[list[torch.Tensor]], torch.Tensor], mode: str) -> torch.Tensor:
    """The running totals ``Y(t)`` of a ``temporal`` op on input sequences ``xs`` (each
    ``[T, B, ...]``): ``t f(S(t)/t)`` (``expectation``) or ``T f(S(t)/T)`` (``accumulate``),
    with ``S(t)`` the running sums; ``fn`` is the op on ``[N, ...]`` batches."""
    T, B = xs[0].shape[0], xs[0].shape[1]
    steps = torch.arange(1, T + 1, device=xs[0].device, dtype=xs[0].dtype)
    sums = [torch.cumsum(x, dim=0) for x in xs]
    if mode == "expectation":
        means = [s / steps.view(-1, *([1] * (s.dim() - 1))) for s in sums]
    else:
        means = [s / T for s in sums]
    f = fn([m.reshape(T * B, *m.shape[2:]) for m in means])
    f = f.reshape(T, B, *f.shape[1:])
    scale = steps if mode == "expectation" else torch.full_like(steps, float(T))
    return f * scale.view(-1, *([1] * (f.dim() - 1)))


def _register_temporal(base_name: str) -> None:
    base = get_op(base_name)

    def sequence(x_seq, attrs, p):
        xs = list(x_seq) if isinstance(x_seq, (list, tuple)) else [x_seq]
        inner = {k: v for k, v in attrs.items() if k != "mode"}
        totals = temporal_totals(xs, lambda ms: base.compute(ms, inner, p), attrs["mode"])
        return torch.diff(totals, dim=0, prepend=torch.zeros_like(totals[:1]))

    sequence.__doc__ = f"""The spiking counterpart of ``{base_name}`` (its meaning: the ``{base_name}`` op).

    With ``S(t)`` the running sum of each input over steps 1..t, the op's running total is::

        Y(t) = t * {base_name}(S(t) / t)      mode "expectation" (expectation compensation)
        Y(t) = T * {base_name}(S(t) / T)      mode "accumulate"  (the sum so far, as if complete)

    and its output at step t is ``Y(t) - Y(t-1)`` (Y(0) = 0): the time average of the output up
    to t is {base_name} of the inputs' time averages (expectation), or reaches it at t = T
    (accumulate, as in SpikeZIP-TF). A neuron after it emits that running total as spikes.
    Attributes and parameters: those of ``{base_name}``, plus ``mode``."""
    register_op(
        OpSpec(
            name=temporal_name(base_name),
            doc=sequence.__doc__,
            traits=frozenset({"temporal"} | ({"bilinear"} if base.has("bilinear") else set())),
            stages=frozenset({SNN}),
            arity=base.arity,
            attrs={**base.attrs, "mode": "expectation"},
            params=base.params,
            optional_params=base.optional_params,
            sequence=sequence,
            shape=(lambda shapes, attrs: _temporal_shape(base, shapes, attrs)),
            check=(lambda shapes, attrs, params: _temporal_check(base, shapes, attrs, params)),
        )
    )


def _temporal_shape(base: OpSpec, shapes: list[Shape], attrs: Attrs) -> Shape:
    if base.name == "matmul":
        return _matmul_shape(shapes)
    return tuple(shapes[0])


def _matmul_shape(shapes: list[Shape]) -> Shape:
    a, b = shapes
    lead = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return (*lead, a[-2], b[-1])


def _temporal_check(base: OpSpec, shapes, attrs, params) -> None:
    _choice(attrs, "mode", TEMPORAL_MODES)
    if base.check is not None:
        base.check(shapes, {k: v for k, v in attrs.items() if k != "mode"}, params)


def _axis(attrs: Attrs, key: str, rank: int) -> int:
    """``attrs[key]``: a per-sample axis counted with the batch (1..rank)."""
    a = attrs[key]
    if not _is_int(a) or not 1 <= a <= rank:
        _fail(f"attrs.{key}", f"expected an integer from 1 to {rank} (axis 0 is the batch), got {_short(a)}")
    return a


@op_check("transpose")
def _transpose_check(shapes, attrs, params):
    perm, rank = attrs["perm"], len(shapes[0]) + 1
    if not isinstance(perm, list) or sorted(perm) != list(range(rank)) or not all(_is_int(i) for i in perm) or perm[0] != 0:
        _fail("attrs.perm", f"expected a permutation of 0..{rank - 1} keeping the batch axis first (perm[0] = 0), got {_short(perm)}")


@op_check("slice")
def _slice_check(shapes, attrs, params):
    axis = _axis(attrs, "axis", len(shapes[0]))
    size = shapes[0][axis - 1]
    start, end, step = attrs["start"], attrs["end"], attrs["step"]
    if not (_is_int(start) and _is_int(end) and 0 <= start < end <= size):
        _fail("attrs.end" if _is_int(start) and 0 <= start < size else "attrs.start", f"expected 0 <= start < end <= {size}, got start {_short(start)}, end {_short(end)}")
    if not _is_int(step) or step < 1:
        _fail("attrs.step", f"expected an integer >= 1, got {_short(step)}")


@op_check("select")
def _select_check(shapes, attrs, params):
    axis = _axis(attrs, "axis", len(shapes[0]))
    index, size = attrs["index"], shapes[0][axis - 1]
    if not _is_int(index) or not 0 <= index < size:
        _fail("attrs.index", f"expected an integer in [0, {size - 1}], got {_short(index)}")


@op_check("concat_constant")
def _concat_constant_check(shapes, attrs, params):
    axis = _axis(attrs, "axis", len(shapes[0]))
    _choice(attrs, "position", ("before", "after"))
    v = params["value"]
    if len(v) != len(shapes[0]) or any(a != b for i, (a, b) in enumerate(zip(v, shapes[0])) if i != axis - 1):
        _fail("params.value", f"shape {list(v)} must equal the input's {list(shapes[0])} on every axis but {axis}")


@op_check("matmul")
def _matmul_check(shapes, attrs, params):
    a, b = shapes
    if len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
        _fail("inputs", f"matmul takes [..., n, k] and [..., k, m] per sample, got {list(a)} and {list(b)}")
    try:
        np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    except ValueError:
        _fail("inputs", f"matmul: leading axes {list(a[:-2])} and {list(b[:-2])} do not broadcast")


@op_check("layer_norm")
def _layer_norm_check(shapes, attrs, params):
    if not shapes[0]:
        _fail("inputs", "layer_norm takes at least one axis per sample")
    if not (_is_number(attrs["epsilon"]) and attrs["epsilon"] >= 0):
        _fail("attrs.epsilon", f"expected a finite number >= 0, got {_short(attrs['epsilon'])}")
    for key in ("scale", "bias"):
        _param_shape(params, key, (shapes[0][-1],), "the last axis")


@op_check("gelu")
def _gelu_check(shapes, attrs, params):
    _choice(attrs, "approximate", ("none", "tanh"))


for _name in sorted(ops_with("nonlinear")):
    _register_temporal(_name)
