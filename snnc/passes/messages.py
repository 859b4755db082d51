"""Spike messages for transformers: the part of insert-if that converts attention networks.

A network with ``nonlinear`` ops (layer normalisation, softmax inside the network, GELU /
SiLU, products of two computed tensors) is converted so that every message between layers
is a spike a neuromorphic target carries: one graded spike per neuron and step at most,
with a signed payload of ``message_bits`` bits (K = 2^(b-1) - 1 unit spikes of θ each way).

* Each nonlinear op becomes its ``temporal`` counterpart (:mod:`snnc.ir.ops`): it evaluates
  the op on the running means of its input spike trains and emits the change of the op's
  running total ``t f(mean so far)`` (``mode=expectation``: expectation compensation, as in
  ECMT), or of ``T f(sum so far / T)`` (``mode=accumulate``: the partial sums read as if
  complete, as in SpikeZIP-TF's accumulated-input operators). A **bipolar** burst neuron
  after it turns that running total into spikes: its net output after t steps is the total
  to within one θ.
* Every value read by a synaptic op or a nonlinear op that is not already a spike train
  (the output of a neuron, moved or scaled only by ``preserves_amplitude`` ops or scalar
  multiplications) gets a bipolar neuron: the residual stream after each ``add``, the
  queries, keys and values after their projection, the class-token sequence after the
  position embedding. The network input is direct-coded as in the CNN conversion: the
  first synaptic layer reads the analog image.
* ReLUs (if any) become neurons as in the CNN conversion; with the plain neuron (the
  default) they become burst neurons of the same payload, so that a ReLU MLP is not held to
  binary spikes while everything around it carries graded ones.

Each new neuron's threshold comes from the ANN value it carries, one per layer: θ = R / K
with R = P_p(|a|) over the calibration samples (``message_threshold=percentile``, p =
``message_percentile``) or the R minimising the squared error of the neuron's running
average at the calibrated T (``message_threshold=mse``: clipping traded against resolution,
which matters at small payloads); v(0) = θ/2 (rounding to the nearest level). What a target runs for each op is listed in :data:`snnc.ir.ops.TEMPORAL_TARGET`.
"""

from __future__ import annotations

import numpy as np
import torch

from snnc import parallel
from snnc.errors import CalibrationError, PassError
from snnc.ir.executor import Interpreter, ann_batch_size, iter_batches
from snnc.ir.graph import Graph, Node, Value
from snnc.ir.ops import MAX_SPIKES, TEMPORAL_TARGET, temporal_name
from snnc.passes.balance import mse_from_hist, percentile_from_hist
from snnc.passes.base import PassContext

def has_nonlinear(graph: Graph) -> bool:
    return any(n.spec.has("nonlinear") for n in graph.nodes)


def payload_spikes(bits: int) -> int:
    """K, the largest count of a signed ``bits``-bit payload: 2^(b-1) - 1."""
    if not isinstance(bits, int) or not 2 <= bits <= 9:
        raise PassError(f"insert-if: message_bits must be an integer from 2 to 9, got {bits!r}")
    return min(MAX_SPIKES, 2 ** (bits - 1) - 1)


def _scalar_scaling(node: Node) -> bool:
    """A multiplication by one positive constant (attention's 1/sqrt(d)): spikes stay spikes."""
    if node.op != "affine":
        return False
    scale, shift = node.params["scale"], node.params["shift"]
    return scale.size == 1 and float(scale.reshape(-1)[0]) > 0 and not np.any(shift)


def spike_source(v: Value) -> Value:
    """Walk back from ``v`` through single-input ops that move spikes without weighting them."""
    while v.producer is not None:
        p = v.producer
        if len(p.inputs) != 1 or not (p.spec.has("preserves_amplitude") or _scalar_scaling(p)):
            break
        v = p.inputs[0]
    return v


def _static(graph: Graph) -> set[int]:
    """Values computed from the graph inputs without a synaptic or nonlinear op: the
    direct-coded input the first layer reads."""
    static = {id(v) for v in graph.inputs}
    for n in graph.nodes:
        if n.spec.has("synaptic") or n.spec.has("nonlinear") or n.spec.stateful:
            continue
        if all(id(v) in static for v in n.inputs):
            static.add(id(n.output))
    return static


def message_sites(graph: Graph) -> list[Value]:
    """The values that must become spike trains (see the module docstring), in graph order."""
    static = _static(graph)
    sites: dict[int, Value] = {}
    for node in graph.nodes:
        if node.spec.has("nonlinear"):
            sites[id(node.output)] = node.output
        if not (node.spec.has("nonlinear") or node.spec.has("synaptic")):
            continue
        for v in node.inputs:
            src = spike_source(v)
            p = src.producer
            if id(src) in static or (p is not None and (p.spec.has("neuron") or p.op == "relu")):
                continue
            sites[id(src)] = src
    order = {id(n.output): i for i, n in enumerate(graph.nodes)}
    return sorted(sites.values(), key=lambda v: order.get(id(v), -1))


@torch.no_grad()
def abs_histograms(graph: Graph, names: list[str], x: np.ndarray, ctx: PassContext, bins: int = 4096) -> dict[str, tuple[np.ndarray, float]]:
    """Per node of ``names``: the histogram of |a| of its output over the samples ``x`` on
    [0, max |a|], and that max (two streamed passes: the maxima, then the histograms; reduced
    over the ranks, exact)."""
    group = ctx.group or parallel.current()
    mine = group.shard(len(x))
    xs = x[mine.start : mine.stop]
    nodes = [graph.node(n) for n in names]
    interp = Interpreter(graph, ctx.device)
    bs = ann_batch_size(graph, ctx.batch_size)
    maxes = {n: torch.zeros((), dtype=torch.float64) for n in names}

    def observe_max(node: Node, out: torch.Tensor) -> None:
        maxes[node.name] = torch.maximum(maxes[node.name], out.abs().max().double().cpu())

    with ctx.progress("message thresholds", 2 * len(xs)) as task:
        for xb in iter_batches(xs, bs):
            interp.run(xb, observe=observe_max, watch=nodes)
            task.advance(len(xb))
        for n in names:
            maxes[n] = group.all_reduce(maxes[n].reshape(1), "max")[0]
        hist = {n: torch.zeros(bins, dtype=torch.float64) for n in names}

        def observe_hist(node: Node, out: torch.Tensor) -> None:
            hi = float(maxes[node.name])
            if hi > 0:
                idx = (out.abs().reshape(-1).double() * (bins / hi)).long().clamp_(0, bins - 1)
                hist[node.name] += torch.bincount(idx.cpu(), minlength=bins).double()

        for xb in iter_batches(xs, bs):
            interp.run(xb, observe=observe_hist, watch=nodes)
            task.advance(len(xb))
    out = {}
    for n in names:
        hi = float(maxes[n])
        if not np.isfinite(hi):
            raise CalibrationError(f"{n!r} computes non-finite values on the calibration samples; check the model and the data's scale")
        out[n] = (group.all_reduce(hist[n]).numpy(), hi)
    return out


def mse_range(hist: np.ndarray, hi: float, k: int, timesteps: tuple[int, ...]) -> float:
    """The range Kθ minimising the squared error of the values a carried by a bipolar
    neuron of K spikes per step over T steps, summed over ``timesteps``. Its running average
    is |a| rounded to θ/T and clipped at Kθ: balance-thresholds' quantiser of K·T levels
    with the half-threshold start, so its search (:func:`~snnc.passes.balance.mse_from_hist`)
    applies to the histogram of |a|."""
    return mse_from_hist(hist, hi, tuple(t * k for t in timesteps), 0.5)


def convert_messages(
    graph: Graph, ctx: PassContext, *, bits: int, mode: str, percentile: float, v_init: str, reset: str, threshold: str = "percentile"
) -> dict:
    """Make every message of an attention network a spike (module docstring). ``graph`` is
    in conversion (its ReLUs already neurons); ``ctx.ann_reference`` the ANN before it.
    Returns the record insert-if saves."""
    if ctx.ann_reference is None:  # pragma: no cover - insert-if sets it
        raise PassError("insert-if: the ANN reference is missing")
    k = payload_spikes(bits)
    sites = message_sites(graph)
    names = [v.producer.name for v in sites]
    x = ctx.require_calib("insert-if")
    hists = abs_histograms(ctx.ann_reference, names, x, ctx)
    if threshold == "mse":
        scale = {n: mse_range(h, hi, k, ctx.calibrated_for) for n, (h, hi) in hists.items()}
    else:
        scale = {n: percentile_from_hist(h, hi, percentile) for n, (h, hi) in hists.items()}
    nonlinear = [n for n in graph.nodes if n.spec.has("nonlinear")]
    made: dict[str, str] = {}
    for node in nonlinear:
        attrs = {**node.attrs, "mode": mode}
        temporal = graph.add_node(
            temporal_name(node.op), list(node.inputs), attrs, dict(node.params), name=f"{node.name}_t", shape=node.output.shape, before=node
        )
        graph.replace_all_uses(node.output, temporal.output)
        ann_name = node.name
        graph.remove_node(node)
        made[ann_name] = temporal.name
    layers = {}
    for v, ann_name in zip(sites, names):
        src = graph.node(made.get(ann_name, ann_name)).output
        a = scale[ann_name]
        if a <= 0:
            raise CalibrationError(
                f"{ann_name!r} is zero on all {len(x)} calibration samples, so no spike threshold can be chosen; "
                "use more (or more representative) calibration data"
            )
        theta = np.array(a / k, dtype=np.float32)
        v0 = theta / 2 if v_init != "zero" else np.zeros_like(theta)
        neuron = graph.add_node(
            "if_neuron",
            [src],
            {"reset": reset, "spike_scale": "threshold", "max_spikes": k, "bipolar": True},
            {"threshold": theta, "v_init": v0},
            name=f"{ann_name}_spk",
            shape=src.shape,
            after=src.producer,
        )
        graph.replace_all_uses(src, neuron.output, except_nodes=[neuron])
        ctx.ann_names[neuron.name] = ann_name
        layers[neuron.name] = {"carries": ann_name, "threshold": float(theta), "abs_percentile": a}
    return {
        "message_bits": bits,
        "max_spikes": k,
        "mode": mode,
        "threshold": "mse" if threshold == "mse" else f"percentile:{percentile:g}",
        "temporal_ops": {t: TEMPORAL_TARGET[graph.node(t).op] for t in made.values()},
        "neurons": layers,
    }
