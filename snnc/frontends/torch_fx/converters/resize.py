"""Upsampling: ``F.interpolate`` / ``nn.Upsample`` / ATen ``upsample_nearest*`` as nearest
upsampling by an integer factor per spatial axis."""

from __future__ import annotations

from typing import Any

from snnc.frontends.torch_fx.context import Context, int_list, spatial_rank
from snnc.ir.graph import Value


def interpolate(
    cx: Context,
    input: Any,
    size: Any = None,
    scale_factor: Any = None,
    mode: Any = "nearest",
    align_corners: Any = None,
    recompute_scale_factor: Any = None,
    antialias: Any = False,
) -> Value:
    x = cx.tensor(input)
    nd = spatial_rank(cx, x, "upsampling")
    if mode != "nearest":
        cx.unsupported(f"upsampling mode {mode!r} is not supported; only mode='nearest' with an integer scale_factor")
    in_sizes = list(x.shape[1:])
    if scale_factor is not None:
        factors = list(scale_factor) if isinstance(scale_factor, (tuple, list)) else [scale_factor] * nd
        if len(factors) != nd or not all(isinstance(f, (int, float)) and f >= 1 and float(f).is_integer() for f in factors):
            cx.unsupported(f"scale_factor {scale_factor!r} is not a positive integer per spatial axis")
        scales = [int(f) for f in factors]
    elif size is not None:
        out = int_list(cx, size, nd, "size")
        if any(o % i for o, i in zip(out, in_sizes)):
            cx.unsupported(f"upsampling {in_sizes} to {out} is not by an integer factor")
        scales = [o // i for o, i in zip(out, in_sizes)]
    else:
        cx.unsupported("upsampling needs a size or a scale_factor")
    return cx.emit("upsample", [x], {"scales": scales, "mode": "nearest"})


def aten_upsample_vec(cx: Context, input: Any, output_size: Any, scale_factors: Any) -> Value:
    return interpolate(cx, input, size=output_size, scale_factor=scale_factors)


def aten_upsample(cx: Context, input: Any, output_size: Any, *scales: Any) -> Value:
    return interpolate(cx, input, size=output_size)
