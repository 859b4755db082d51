"""Resize and the deprecated Upsample: ``upsample`` (nearest, integer factors) when the
coordinate transformation and rounding pick input index ``o // s`` for output index ``o``
on every spatial axis (checked numerically against the ONNX Resize formulas)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx

from snnc.frontends.onnx.helpers import BATCH, check_spatial, node_attrs, normalize_axis, reject
from snnc.frontends.onnx.trust import MAX_ELEMENTS
from snnc.ir.graph import Value

if TYPE_CHECKING:
    from snnc.frontends.onnx.importer import Importer


def convert_resize(ctx: Importer, node: onnx.NodeProto) -> Value:
    x = ctx.value(node)
    nd = check_spatial(node, x)
    a = node_attrs(node)
    if a.get("mode", "nearest") != "nearest":
        raise reject(node, f"mode {a.get('mode')!r}: snnc supports nearest-neighbour upsampling by integer factors only")
    ctm = a.get("coordinate_transformation_mode", "half_pixel")
    nearest_mode = a.get("nearest_mode", "round_prefer_floor")
    rank = nd + 2
    axes = [normalize_axis(int(v), rank, node) for v in a.get("axes", range(rank))]
    scales = ctx.optional_const(node, 2, "scales")
    sizes = ctx.optional_const(node, 3, "sizes", integer=True)
    full_in = [None, *x.shape]
    factors = dict.fromkeys(range(rank), 1.0)
    if scales is not None and scales.size:
        factors.update(zip(axes, (float(s) for s in scales.reshape(-1))))
    elif sizes is not None and sizes.size:
        for ax, want in zip(axes, sizes.reshape(-1).tolist()):
            if ax == 0:
                if want not in (BATCH, ctx.fixed_batch):
                    raise reject(node, "Resize changes the batch size")
                continue
            factors[ax] = want / full_in[ax]
        policy = a.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch" and len({factors[ax] for ax in axes if ax >= 2}) > 1:
            raise reject(node, f"keep_aspect_ratio_policy {policy!r} with unequal size ratios is not supported")
    else:
        raise reject(node, "Resize needs constant scales or sizes")
    return _emit_upsample(ctx, node, x, factors, ctm, nearest_mode)


def convert_upsample(ctx: Importer, node: onnx.NodeProto) -> Value:
    """The deprecated Upsample op: nearest means ``floor(o / s)`` (asymmetric)."""
    x = ctx.value(node)
    check_spatial(node, x)
    a = node_attrs(node)
    if a.get("mode", "nearest") != "nearest":
        raise reject(node, f"mode {a.get('mode')!r}: only nearest upsampling is supported")
    scales = a.get("scales")
    if scales is None:
        scales = ctx.const(node, 1, "scales").reshape(-1).tolist()
    return _emit_upsample(ctx, node, x, dict(enumerate(float(s) for s in scales)), "asymmetric", "floor")


def _emit_upsample(ctx: Importer, node: onnx.NodeProto, x: Value, factors: dict[int, float], ctm: str, nearest_mode: str) -> Value:
    if factors.get(0, 1.0) != 1.0 or factors.get(1, 1.0) != 1.0:
        raise reject(node, "resizing the batch or channel axis is not supported")
    ints = []
    for ax in range(2, len(x.shape) + 1):
        f = factors.get(ax, 1.0)
        if not math.isfinite(f) or f * x.shape[ax - 1] > MAX_ELEMENTS:
            raise reject(node, f"scale {f:g} on axis {ax}: snnc supports integer upsampling factors (>= 1) of a sensible size only")
        s = round(f)
        if s < 1 or abs(f - s) > 1e-6:
            raise reject(node, f"scale {f:g} on axis {ax}: snnc supports integer upsampling factors (>= 1) only")
        length = x.shape[ax - 1]
        picked = _nearest_source_index(ctm, nearest_mode, length, s)
        if picked is None or not np.array_equal(picked, np.arange(length * s) // s):
            raise reject(
                node,
                f"coordinate_transformation_mode={ctm!r} with nearest_mode={nearest_mode!r} and scale {s} is not a "
                "plain nearest upsample (repeat each element); export with mode='nearest' (asymmetric/floor)",
            )
        ints.append(s)
    return ctx.emit("upsample", [x], node, attrs={"scales": ints, "mode": "nearest"})


def _nearest_source_index(ctm: str, nearest_mode: str, length: int, scale: int) -> np.ndarray | None:
    """The input index ONNX Resize (mode nearest) reads for each output index, or None for
    modes snnc does not model. Formulas from the ONNX Resize specification."""
    out_len = length * scale
    o = np.arange(out_len, dtype=np.float64)
    if ctm in ("half_pixel", "half_pixel_symmetric"):
        # With an integer scale the symmetric variant's adjustment is exactly 1.
        x = (o + 0.5) / scale - 0.5
    elif ctm == "pytorch_half_pixel":
        x = (o + 0.5) / scale - 0.5 if out_len > 1 else np.zeros_like(o)
    elif ctm == "asymmetric":
        x = o / scale
    elif ctm == "tf_half_pixel_for_nn":
        x = (o + 0.5) / scale
    elif ctm == "align_corners":
        x = o * (length - 1) / (out_len - 1) if out_len > 1 else np.zeros_like(o)
    else:
        return None
    frac = x - np.floor(x)
    tie = np.isclose(frac, 0.5)
    if nearest_mode == "round_prefer_floor":
        idx = np.where(tie, np.floor(x), np.round(x))
    elif nearest_mode == "round_prefer_ceil":
        idx = np.where(tie, np.ceil(x), np.round(x))
    elif nearest_mode == "floor":
        idx = np.floor(x + 1e-9)
    elif nearest_mode == "ceil":
        idx = np.ceil(x - 1e-9)
    else:
        return None
    return np.clip(idx, 0, length - 1).astype(np.int64)
