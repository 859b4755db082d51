"""The burst / signed neuron variants on every backend and exporter: SpikingJelly and Lava
(float) equal the reference simulator, outputs and unit-spike counts; Lava's Loihi fixed
point (graded spikes) stays close to them; NIR export refuses them clearly; the energy
estimate counts a burst of k spikes as k."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _graphs import conv, finish, images, rng

from snnc.analysis.energy import count_spikes, estimate_energy, spike_units
from snnc.backend import get_backend
from snnc.errors import BackendError, ExportError
from snnc.export.nir import to_nir
from snnc.ir import Graph, infer_shapes
from snnc.simulator import simulate
from snnc.simulator.reference import ReferenceSimulator

VARIANTS = {"signed": (1, True), "burst:3": (3, False), "signed-burst:3": (3, True)}
X = images(6, seed=4, shape=(2, 8, 8)) * 2
T = 8
FIXED_RATE_TOLERANCE = 0.03  # unit spikes per neuron per step, per layer, vs the float SNN
FIXED_OUTPUT_TOLERANCE = 0.05  # time-averaged readout, vs the float SNN


def _neuron(g, h, c, r, k, signed, **attrs):
    infer_shapes(g)
    th = r.uniform(0.3, 1.0, (c, 1, 1)) / k  # a burst neuron's threshold: the balanced one / K
    v0 = r.uniform(0, 0.5, h.shape) * th
    attrs = {"reset": "subtract", "spike_scale": "threshold", **attrs, "max_spikes": k, "signed": signed}
    return g.add_node("if_neuron", [h], attrs, {"threshold": th, "v_init": v0}).output


def variant_graph(variant: str) -> Graph:
    """conv → neuron → avg pool → conv → neuron (hard reset) → global pool → linear → readout,
    every neuron the given variant."""
    k, signed = VARIANTS[variant]
    r = rng(5)
    g = Graph(f"net-{variant}", "snn")
    x = g.add_input("x", (2, 8, 8))
    h = _neuron(g, conv(g, x, 4, 2, r, pads=[1, 1, 1, 1]), 4, r, k, signed)
    h = g.add_node("avg_pool", [h], {"kernel": [2, 2]}).output
    h = _neuron(g, conv(g, h, 4, 4, r, pads=[1, 1, 1, 1]), 4, r, k, signed, reset="zero")
    h = g.add_node("global_avg_pool", [h], {"keepdims": False}).output
    h = g.add_node("linear", [h], {}, {"weight": r.normal(0, 0.8, (5, 4)), "bias": r.normal(0, 0.1, 5)}).output
    return finish(g, h)


def _backend(name):
    try:
        return get_backend(name)
    except BackendError as e:  # an optional backend package is missing
        pytest.skip(f"{name} unavailable: {e}")


def _spike_stats(g: Graph) -> tuple[float, float, float]:
    """(unit spikes, non-zero entries, negative spikes) over every neuron layer (reference)."""
    seen = {"units": 0.0, "nonzero": 0.0, "negative": 0.0}

    def observe(node, out):
        th = torch.as_tensor(np.asarray(node.params["threshold"], np.float32))
        seen["units"] += float(torch.round(out.data.abs() / th).sum())
        seen["nonzero"] += float(torch.count_nonzero(out.data))
        seen["negative"] += float(torch.round((-out.data).clamp(min=0) / th).sum())

    ReferenceSimulator(g).simulate(torch.from_numpy(X), [T], observe=observe, watch=g.having("neuron"))
    return seen["units"], seen["nonzero"], seen["negative"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_backends_equal_the_reference_outputs_and_unit_spike_counts(variant):
    g = variant_graph(variant)
    k, signed = VARIANTS[variant]
    units, nonzero, negative = _spike_stats(g)
    if k > 1:
        assert units > nonzero  # bursts happen: counting entries would undercount
    if signed:
        assert negative > 0  # negative spikes happen
    ref = simulate(g, X, [4, T])
    ref_units = sum(ref.spike_rates[n.name] * int(np.prod(n.output.shape)) for n in g.having("neuron")) * len(X) * T
    assert ref_units == pytest.approx(units)  # the reference's rates are unit spikes per neuron per step
    sj = _backend("spikingjelly").run(g, X, [4, T], batch_size=4)
    for t in (4, T):
        np.testing.assert_array_equal(sj.output(t), ref.output(t))  # the same op-set form on the same device: bit-identical
    assert sj.spike_rates == pytest.approx(ref.spike_rates, abs=1e-12)
    lava = _backend("lava").run(g, X, [4, T], batch_size=4)  # two sample batches: state (emitted spikes too) must reset
    for t in (4, T):
        np.testing.assert_allclose(lava.output(t), ref.output(t), rtol=0, atol=1e-5)
    assert lava.spike_rates == pytest.approx(ref.spike_rates, abs=1e-9)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_lava_fixed_point_graded_spikes_stay_close_to_float(variant):
    g = variant_graph(variant)
    fixed = _backend("lava-fixed")
    assert fixed.unsupported(g) == []
    ref = simulate(g, X, [T])
    got = fixed.run(g, X, [T])
    assert np.abs(got.output(T) - ref.output(T)).max() <= FIXED_OUTPUT_TOLERANCE
    for name, rate in ref.spike_rates.items():
        assert abs(got.spike_rates[name] - rate) <= FIXED_RATE_TOLERANCE, name
    for layer in got.details["deployment"]["layers"]:
        assert 1 <= layer["vth"] < 2**17


def test_lava_fixed_refuses_counts_that_do_not_fit_the_graded_payload(monkeypatch):
    fixed = _backend("lava-fixed")
    from snnc_lava import lower

    assert lower.GRADED_PAYLOAD_BITS == 24
    monkeypatch.setattr(lower, "GRADED_PAYLOAD_BITS", 2)  # payload [-2, 1]: a burst of 3 does not fit
    problems = fixed.unsupported(variant_graph("burst:3"))
    assert len(problems) == 1
    assert "burst:3" in problems[0].reason and "2-bit graded-spike payload" in problems[0].reason and "--neuron" in problems[0].reason
    monkeypatch.setattr(lower, "GRADED_PAYLOAD_BITS", 1)  # payload [-1, 0]: not even the sign of a single spike fits
    [p] = fixed.unsupported(variant_graph("signed"))
    assert "signed" in p.reason and "down to -1" in p.reason
    assert _backend("lava").unsupported(variant_graph("burst:3")) == []  # float Lava has no payload


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_nir_export_refuses_variants_clearly(variant, reset):
    g = variant_graph(variant)
    with pytest.raises(ExportError) as e:
        to_nir(g, reset=reset)
    msg = str(e.value)
    first = g.having("neuron")[0].name
    assert repr(first) in msg and f"a {variant} neuron" in msg and "--neuron if" in msg


def _burst_chain() -> tuple[Graph, np.ndarray]:
    """input (2 values) → identity linear → burst:3 neuron (θ = 1, v_init = 0) → linear
    with 4 outputs → readout; returns the graph and the neuron's counts for input [2.5, 0.7]
    over T steps, by hand."""
    g = Graph("burst-chain", "snn")
    x = g.add_input("x", (2,))
    h = g.add_node("linear", [x], {}, {"weight": np.eye(2), "bias": np.zeros(2)}).output
    h = g.add_node("if_neuron", [h], {"max_spikes": 3}, {"threshold": np.array(1.0), "v_init": np.zeros(2)}).output
    h = g.add_node("linear", [h], {}, {"weight": np.ones((4, 2)), "bias": np.zeros(4)}).output
    g = finish(g, h)
    v, counts = np.zeros(2), np.zeros(2)
    for _ in range(T):
        v += [2.5, 0.7]
        s = np.clip(np.floor(v), 0, 3)
        v -= s
        counts += s
    return g, counts


def test_energy_counts_a_burst_of_k_as_k_spikes_and_k_synaptic_events():
    g, counts = _burst_chain()
    x = np.array([[2.5, 0.7]], np.float32)
    assert counts[0] > T  # bursts: more spikes than steps
    maps, _ = count_spikes(g, x, [T])
    [name] = [n.name for n in g.having("neuron")]
    np.testing.assert_allclose(maps[T][name] * T, counts)
    assert simulate(g, x, [T]).spike_rates[name] == pytest.approx(counts.sum() / (2 * T))
    est = estimate_energy(g, maps[T], T)
    rows = {r["layer"]: r for r in est["layers"]}
    assert rows[name]["spikes"] == pytest.approx(counts.sum())
    [fc] = [n.name for n in g.nodes if n.op == "linear" and n.inputs[0].producer is not None and n.inputs[0].producer.op == "if_neuron"]
    assert rows[fc]["snn_synops"] == pytest.approx(4 * counts.sum())  # every unit spike reaches the 4 outputs


def test_spike_units_count_bursts_and_negative_spikes():
    theta = torch.tensor([0.5])
    y = torch.tensor([[0.0, -0.5, 1.5, 0.5]])
    assert spike_units(y, (theta, 3)).tolist() == [[0.0, 1.0, 3.0, 1.0]]
    assert spike_units(torch.tensor([0.0, -1.0, 3.0]), (None, 3)).tolist() == [0.0, 1.0, 3.0]  # unit-scale spikes
    assert spike_units(y, None).tolist() == [[0.0, 1.0, 1.0, 1.0]]  # the plain neuron: non-zero entries
