"""balance-thresholds: choose each ReLU's firing threshold from its activations.

The statistics are an analysis: the ANN interpreter streams the calibration data in
batches and hands the ReLU outputs to an accumulator; memory is bounded by one batch
plus a fixed-size histogram per channel, and the result does not depend on the batch
size or order.

* Pass 1 records, per channel, the maximum activation.
* Pass 2 (percentile and MSE only) builds, per channel, a histogram of the positive
  activations with ``bins`` bins on ``[0, max]`` (and the layer-wide histogram on
  ``[0, layer max]``).

Methods (θ per layer, or per channel with ``granularity=channel``):

* ``max``: θ = the maximum activation.
* ``percentile``: θ = the p-th percentile of the positive activations (Rueckauer 2017;
  zeros are excluded so that sparse layers are not pushed below their active range).
* ``mse``: θ = argmin over θ_i = m (1 − 0.01 i), i = 0..94, of mean((a − Q_T(a; θ))²),
  with Q_T the quantiser the IF neuron implements at ``timesteps`` steps:
  Q_T(a; θ) = (θ/T) clip(floor(a T / θ + s), 0, T), s = 1/2 for the half-threshold start
  (the default of insert-if) and 0 without it. The search depends on T. Calibrated for
  several T (``snnc convert --timesteps 8,16,32``: one artifact for all of them), the
  objective is the quantisation error summed over the listed T, Σ_T mean((a − Q_T(a; θ))²):
  the one θ that serves every listed T best in the squared sense. Each term is about
  θ²/(12 T²) for the part of the range below θ, so the smallest T weighs most, as its
  error is the largest; the clipping error above θ is the same at every T.

A ReLU with a finite ``max`` (ReLU6, Clip) never gets a threshold above that max. A
channel that never activates on the calibration data gets its layer's threshold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from snnc import parallel
from snnc.defaults import DEFAULT_GRANULARITY, DEFAULT_PERCENTILE, DEFAULT_THRESHOLD_METHOD
from snnc.errors import CalibrationError, PassError
from snnc.ir.executor import Interpreter, ann_batch_size, iter_batches
from snnc.ir.graph import Graph, Node
from snnc.ir.ops import if_neuron_rate
from snnc.parallel import Group
from snnc.passes.base import Pass, PassContext, choice, register_pass

log = logging.getLogger(__name__)


@dataclass
class ActivationStats:
    """Per-ReLU statistics: per-channel max and histograms of positive activations."""

    channel_max: np.ndarray  # [C]
    count: int  # elements per channel seen (all values, zeros included)
    positive: np.ndarray | None = None  # [C] number of positive values
    channel_hist: np.ndarray | None = None  # [C, bins] on [0, channel_max[c]]
    layer_hist: np.ndarray | None = None  # [bins] on [0, max(channel_max)]

    @property
    def layer_max(self) -> float:
        return float(self.channel_max.max()) if self.channel_max.size else 0.0


def channels_last(out: torch.Tensor) -> torch.Tensor:
    """[B, C, *spatial] -> [C, B*spatial] (a [B, F] output has F channels)."""
    c = out.shape[1] if out.dim() > 1 else 1
    return out.transpose(0, 1).reshape(c, -1)


@torch.no_grad()
def collect_activation_stats(
    graph: Graph,
    nodes: list[Node],
    x: np.ndarray,
    *,
    batch_size: int,
    bins: int,
    histograms: bool,
    progress=None,
    device: str = "cpu",
    group: Group | None = None,
) -> dict[str, ActivationStats]:
    """Stream ``x`` through the ANN graph and accumulate statistics of ``nodes``' outputs.
    With a ``group`` of several ranks each rank streams its shard of ``x`` and the maxima,
    counts and histograms are reduced over the ranks; they are exact (maxima, and integer
    counts in float64), so the result does not depend on the number of ranks."""
    group = group or parallel.current()
    mine = group.shard(len(x))
    x = x[mine.start : mine.stop]
    batch_size = ann_batch_size(graph, batch_size)
    interp = Interpreter(graph, device)
    maxes: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def observe_max(node: Node, out: torch.Tensor) -> None:
        flat = channels_last(out)
        m = flat.max(dim=1).values.clamp_min(0)
        maxes[node.name] = m if node.name not in maxes else torch.maximum(maxes[node.name], m)
        counts[node.name] = counts.get(node.name, 0) + flat.shape[1]

    task = progress("activation statistics", len(x) * (2 if histograms else 1)) if progress else None
    for xb in iter_batches(x, batch_size):
        interp.run(xb, observe=observe_max, watch=nodes)
        if task:
            task.advance(len(xb))
    for n in nodes:
        if n.name not in maxes:  # a rank without samples
            maxes[n.name] = torch.zeros(_channels(n), device=interp.device)
        maxes[n.name] = group.all_reduce(maxes[n.name].cpu(), "max")
        counts[n.name] = int(group.all_reduce(torch.tensor([counts.get(n.name, 0)], dtype=torch.int64))[0])
    stats = {n.name: ActivationStats(maxes[n.name].numpy().astype(np.float64), counts[n.name]) for n in nodes}
    if not histograms:
        return stats

    chist = {n.name: torch.zeros(maxes[n.name].numel() * bins, dtype=torch.float64, device=interp.device) for n in nodes}
    lhist = {n.name: torch.zeros(bins, dtype=torch.float64, device=interp.device) for n in nodes}
    npos = {n.name: torch.zeros(maxes[n.name].numel(), dtype=torch.float64, device=interp.device) for n in nodes}

    def observe_hist(node: Node, out: torch.Tensor) -> None:
        flat = channels_last(out).double()
        cmax = maxes[node.name].double().to(flat.device)
        pos = flat > 0
        npos[node.name] += pos.sum(dim=1).double()
        scale = torch.where(cmax > 0, bins / cmax, torch.zeros_like(cmax))
        idx = (flat * scale[:, None]).long().clamp_(0, bins - 1)
        idx = idx + torch.arange(flat.shape[0], device=flat.device)[:, None] * bins
        chist[node.name] += torch.bincount(idx[pos], minlength=chist[node.name].numel()).double()
        lmax = float(cmax.max())
        if lmax > 0:
            lidx = (flat[pos] * (bins / lmax)).long().clamp_(0, bins - 1)
            lhist[node.name] += torch.bincount(lidx, minlength=bins).double()

    for xb in iter_batches(x, batch_size):
        interp.run(xb, observe=observe_hist, watch=nodes)
        if task:
            task.advance(len(xb))
    for n in nodes:
        npos[n.name], chist[n.name], lhist[n.name] = (_sum_counts(group, t, counts[n.name] * m) for t, m in ((npos[n.name], 1), (chist[n.name], 1), (lhist[n.name], _channels(n))))
        s = stats[n.name]
        s.positive = npos[n.name].numpy()
        s.channel_hist = chist[n.name].numpy().reshape(-1, bins)
        s.layer_hist = lhist[n.name].numpy()
    return stats


def _sum_counts(group: Group, t: torch.Tensor, most: int) -> torch.Tensor:
    """The sum over the ranks of ``t``, integer counts in float64 of which no element can
    exceed ``most`` in total: reduced as int32 where that holds (exact, half the bytes of
    float64: a ResNet-50's per-channel histograms are 746 MB per rank), else as they are."""
    if not group.distributed:
        return t.cpu()
    if most < 2**31:
        return group.all_reduce(t.cpu().to(torch.int32)).to(torch.float64)
    return group.all_reduce(t.cpu())


def _channels(node: Node) -> int:
    shape = node.output.shape
    return int(shape[0]) if shape else 1


# ------------------------------------------------------- threshold choosers
def _bin_centres(hi: float, bins: int) -> np.ndarray:
    return (np.arange(bins) + 0.5) * (hi / bins)


MAX_BINS = 1 << 16  # per channel; 4096 (the default) resolves a percentile to 0.025 % of the range


def percentile_from_hist(hist: np.ndarray, hi: float, p: float) -> float:
    """The p-th percentile of the histogrammed (positive) values on [0, hi]."""
    total = hist.sum()
    if total <= 0 or hi <= 0:
        return 0.0
    cdf = np.cumsum(hist) / total
    i = int(np.searchsorted(cdf, p / 100.0, side="left"))
    i = min(i, len(hist) - 1)
    return float((i + 1) * hi / len(hist))  # upper edge of the bin: never below the data


def quantise(a: np.ndarray, theta: float, timesteps: int, offset: float) -> np.ndarray:
    """Q_T(a; θ): the IF neuron's time-averaged output for a constant input ``a`` over T
    steps, started at v(0) = offset·θ (:func:`snnc.ir.ops.if_neuron_rate`, in float64)."""
    t = torch.as_tensor(np.asarray(a, dtype=np.float64))
    th = torch.tensor(float(theta), dtype=torch.float64)
    return if_neuron_rate(t, th, offset * th, timesteps).numpy()


def mse_from_hist(hist: np.ndarray, hi: float, timesteps: int | tuple[int, ...], offset: float, steps: int = 95) -> float:
    """The θ = hi (1 − 0.01 i) minimising the quantisation MSE of the histogrammed values
    (summed over the T values when ``timesteps`` lists several)."""
    if hist.sum() <= 0 or hi <= 0:
        return 0.0
    a = _bin_centres(hi, len(hist))
    steps_t = (timesteps,) if isinstance(timesteps, (int, np.integer)) else tuple(timesteps)
    best, best_err = hi, np.inf
    for i in range(steps):
        theta = hi * (1 - 0.01 * i)
        err = float(np.dot(hist, (a - quantise(a, theta, steps_t[0], offset)) ** 2))
        for t in steps_t[1:]:
            err += float(np.dot(hist, (a - quantise(a, theta, t, offset)) ** 2))
        if err < best_err - 1e-12 * abs(best_err if np.isfinite(best_err) else 0):
            best, best_err = theta, err
    return float(best)


@register_pass
class BalanceThresholds(Pass):
    """After balance-thresholds every ReLU carries a positive ``threshold`` parameter (a scalar,
    or one per channel) chosen from calibration activations; the ANN's function is unchanged."""

    name = "balance-thresholds"

    @dataclass
    class Options:
        method: str = choice(DEFAULT_THRESHOLD_METHOD, "max", "percentile", "mse")
        percentile: float = DEFAULT_PERCENTILE
        granularity: str = choice(DEFAULT_GRANULARITY, "layer", "channel")
        bins: int = 4096
        half_start: bool = True  # the quantiser MSE assumes (match insert-if's v-init)
        spikes: int = 1  # spikes per step of the neuron insert-if will create (burst: K): MSE quantises to K·T levels

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        o = self.options
        if not 0 < o.percentile <= 100:
            raise PassError(f"balance-thresholds: percentile must be in (0, 100], got {o.percentile}")
        if o.bins > MAX_BINS:
            raise PassError(f"balance-thresholds: bins must be at most {MAX_BINS:,} (one histogram per channel), got {o.bins:,}")
        relus = graph.find("relu")
        if not relus:
            return False
        x = ctx.require_calib(self.name)
        sent = ctx.group.bytes_reduced
        stats = collect_activation_stats(
            graph, relus, x, batch_size=ctx.batch_size, bins=o.bins, histograms=o.method != "max", progress=ctx.progress,
            device=ctx.device, group=ctx.group,
        )  # fmt: skip
        report = {}
        for node in relus:
            s = stats[node.name]
            if not np.isfinite(s.layer_max):
                raise CalibrationError(
                    f"ReLU {node.name!r} computes non-finite values (inf or NaN) on the calibration samples: the network overflows "
                    "float32 on these inputs; check the model's weights and the data's scale"
                )
            layer_theta = self._choose(s.layer_hist, s.layer_max, ctx.calibrated_for)
            if layer_theta <= 0:
                raise CalibrationError(
                    f"ReLU {node.name!r} never activates on the {len(x)} calibration samples, so no threshold can be "
                    "chosen; use more (or more representative) calibration data"
                )
            if o.granularity == "channel":
                theta = np.array(
                    [self._choose(s.channel_hist[c] if s.channel_hist is not None else None, s.channel_max[c], ctx.calibrated_for) for c in range(len(s.channel_max))]
                )
                dead = theta <= 0
                theta[dead] = layer_theta
                shape = (-1,) + (1,) * (len(node.output.shape) - 1)
                theta = theta.reshape(shape)
            else:
                dead = np.zeros(0, dtype=bool)
                theta = np.array(layer_theta)
            cap = node.attr("max")
            if cap is not None:
                theta = np.minimum(theta, float(cap))
            node.set_param("threshold", theta)
            node.attrs["threshold_method"] = self._describe()
            report[node.name] = {
                "threshold": float(np.mean(theta)) if theta.size else 0.0,
                "threshold_min": float(np.min(theta)),
                "threshold_max": float(np.max(theta)),
                "activation_max": s.layer_max,
                "dead_channels": int(dead.sum()),
            }
        ctx.records[self.name] = {"method": self._describe(), "samples": int(len(x)), "layers": report}
        if ctx.group.distributed:
            ctx.records[self.name]["ranks"] = {"world": ctx.group.world, "bytes_reduced_per_rank": ctx.group.bytes_reduced - sent}
        return True

    def _describe(self) -> str:
        o = self.options
        m = f"percentile:{o.percentile:g}" if o.method == "percentile" else o.method
        return f"{m}/{o.granularity}"

    def _choose(self, hist: np.ndarray | None, hi: float, timesteps: tuple[int, ...]) -> float:
        o = self.options
        if o.method == "max" or hi <= 0:
            return float(hi)
        if o.method == "percentile":
            return percentile_from_hist(hist, hi, o.percentile)
        return mse_from_hist(hist, hi, tuple(t * max(1, o.spikes) for t in timesteps), 0.5 if o.half_start else 0.0)
