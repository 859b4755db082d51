"""fuse-synapses: synapses that read synaptic currents are folded, exactly, into synapses that
read spikes (what Loihi needs); graphs without such chains are not touched."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _graphs import OP_CASES, conv, finish, graph_with, images, neuron, rng, small_cnn
from click.testing import CliRunner

import snnc
from snnc.backend import get_backend
from snnc.cli import main
from snnc.errors import BackendError, PassError
from snnc.ir import Graph
from snnc.passes import PassContext, default_pipeline, parse_pipeline, run_passes
from snnc.passes import fuse_synapses as fs
from snnc.simulator import simulate

X = images(6, seed=4, shape=(2, 8, 8)) * 2
FIXED_RATE_TOLERANCE = 0.03  # spikes per neuron per step, per layer, vs the float SNN (as tests/test_lava_backend.py)


def _lava_fixed():
    try:
        return get_backend("lava-fixed")
    except BackendError as e:
        pytest.skip(f"lava-fixed unavailable: {e}")


def pointwise(g, h, cout, cin, r, *, groups=1, k=1, **attrs):
    p = {"weight": r.normal(0, 0.5, (cout, cin // groups, k, k)), "bias": r.normal(0, 0.3, cout)}
    return g.add_node("conv", [h], {"groups": groups, **attrs}, p).output


def spikes(g, r):
    x = g.add_input("x", (2, 8, 8))
    return neuron(g, conv(g, x, 4, 2, r, pads=[1, 1, 1, 1]), 4, r)


def conv1x1_chain() -> Graph:
    r = rng(0)
    g = Graph("conv1x1-conv1x1", "snn")
    h = pointwise(g, pointwise(g, spikes(g, r), 3, 4, r), 5, 3, r)
    return finish(g, neuron(g, h, 5, r))


def inverted_residual() -> Graph:
    """MobileNetV2's pattern: linear projections, a residual stream read by the next add and
    the next expansion (a shared current), an add with per-channel coefficients."""
    r = rng(1)
    g = Graph("inverted-residual", "snn")
    s = spikes(g, r)
    stream = pointwise(g, s, 3, 4, r)  # projection: no neuron after it
    for i in range(2):
        e = neuron(g, pointwise(g, stream, 6, 3, r), 6, r)  # expansion reads the stream
        d = neuron(g, pointwise(g, e, 6, 6, r, groups=6, k=3, pads=[1, 1, 1, 1]), 6, r)
        coeffs = None if i == 0 else [[0.5, 1.0, 2.0], 1.0]
        stream = g.add_node("add", [stream, pointwise(g, d, 3, 6, r)], {"coeffs": coeffs}).output
    return finish(g, neuron(g, pointwise(g, stream, 5, 3, r), 5, r))


def linear_chain() -> Graph:
    r = rng(2)
    g = Graph("linear-linear", "snn")
    h = g.add_node("global_avg_pool", [spikes(g, r)], {"keepdims": False}).output
    h = g.add_node("linear", [h], {}, {"weight": r.normal(0, 0.8, (6, 4)), "bias": r.normal(0, 0.1, 6)}).output
    h = g.add_node("linear", [h], {}, {"weight": r.normal(0, 0.8, (5, 6)), "bias": r.normal(0, 0.1, 5)}).output
    return finish(g, neuron(g, h, 5, r))


def padded_after_biased() -> Graph:
    """A padded 3x3 after a biased 1x1: the 1x1's bias reaches the border only partly."""
    r = rng(3)
    g = Graph("padded-after-biased", "snn")
    h = conv(g, pointwise(g, spikes(g, r), 3, 4, r), 5, 3, r, pads=[1, 1, 1, 1])
    return finish(g, neuron(g, h, 5, r))


def depthwise_after_depthwise_1x1() -> Graph:
    r = rng(4)
    g = Graph("dw-after-dw1x1", "snn")
    h = pointwise(g, spikes(g, r), 4, 4, r, groups=4)  # per-channel scale, as a 1x1 depthwise conv
    h = pointwise(g, h, 4, 4, r, groups=4, k=3, pads=[1, 1, 1, 1], strides=[2, 2])
    return finish(g, neuron(g, h, 4, r))


def shared_stream() -> Graph:
    """A pre-activation residual: one current feeds a neuron and the add after it."""
    r = rng(5)
    g = Graph("shared-stream", "snn")
    x1 = pointwise(g, spikes(g, r), 4, 4, r)
    n1 = neuron(g, x1, 4, r)
    x2 = g.add_node("add", [x1, pointwise(g, n1, 4, 4, r)]).output
    return finish(g, neuron(g, x2, 4, r))


CHAINS = [conv1x1_chain, inverted_residual, linear_chain, padded_after_biased, depthwise_after_depthwise_1x1, shared_stream]


def fuse(g: Graph, **ctx) -> tuple[bool, PassContext]:
    c = PassContext(timesteps=16, **ctx)
    [res] = run_passes(g, parse_pipeline("fuse-synapses"), c)
    return res.changed, c


def reads_current(g: Graph) -> list[str]:
    dom = fs._domains(g)
    return fs._targets(g, dom) + [v.name for v in fs._shared_currents(g, dom)]


@pytest.mark.parametrize("make", CHAINS, ids=lambda f: f.__name__)
def test_fused_graph_computes_what_the_unfused_one_does(make):
    g = make()
    before = g.clone()
    assert reads_current(g)
    changed, ctx = fuse(g)
    assert changed and reads_current(g) == []
    rec = ctx.records["fuse-synapses"]
    assert rec["refused"] == {} and rec["max_relative_error"] < 1e-5
    assert g.meta["fused_synapses"] == len(rec["fused"])
    ref, got = simulate(before, X, [16]), simulate(g, X, [16])
    np.testing.assert_allclose(got.output(16), ref.output(16), rtol=0, atol=1e-5 * max(1.0, float(np.abs(ref.output(16)).max())))
    assert got.spike_rates == pytest.approx(ref.spike_rates, abs=1e-9)


def test_shapes_of_the_fusions():
    g = conv1x1_chain()
    fuse(g)
    [c1, c2] = g.find("conv")
    assert c2.params["weight"].shape == (5, 4, 1, 1) and c2.inputs[0].producer.op == "if_neuron"
    g = inverted_residual()
    fuse(g)
    head = g.find("readout")[0].inputs[0].producer.inputs[0].producer
    assert head.op == "add" and [v.producer.inputs[0].producer.op for v in head.inputs] == ["if_neuron"] * 3  # one synapse per leaf
    assert len(g.find("add")) == 2  # the expansions' sums; the residual adds, now unread, are gone
    g = padded_after_biased()
    fuse(g)
    [shift] = g.find("affine")  # the 1x1's bias through the 3x3's zero border: a per-position shift
    assert shift.params["shift"].shape == (5, 8, 8) and not np.allclose(shift.params["shift"][:, 0, 0], shift.params["shift"][:, 4, 4])
    g = depthwise_after_depthwise_1x1()
    fuse(g)
    dw = g.find("conv")[-1]
    assert dw.attrs["groups"] == 4 and dw.params["weight"].shape == (4, 1, 3, 3)  # the product is still depthwise
    g = shared_stream()
    _, ctx = fuse(g)
    assert ctx.records["fuse-synapses"]["duplicated"] and len(g.find("conv")) == 4  # the stream's synapse, once per reader


def test_two_spatial_kernels_in_a_row_are_refused_and_left_alone():
    r = rng(6)
    g = Graph("kxk-kxk", "snn")
    h = conv(g, conv(g, spikes(g, r), 3, 4, r, pads=[1, 1, 1, 1]), 3, 3, r, pads=[1, 1, 1, 1])
    g = finish(g, neuron(g, h, 3, r))
    before = g.clone()
    changed, ctx = fuse(g)
    assert not changed and _same(g, before)
    [(name, why)] = ctx.records["fuse-synapses"]["refused"].items()
    assert "two spatial kernels" in why and any(name in n and "cannot be fused" in n for n in ctx.notices)


def _same(a: Graph, b: Graph) -> bool:
    def structure(g: Graph) -> list:
        return [(n.name, n.op, n.attrs, [v.name for v in n.inputs]) for n in g.nodes]

    if structure(a) != structure(b):
        return False
    for m, n in zip(a.nodes, b.nodes):
        if set(m.params) != set(n.params) or not all(np.array_equal(m.params[k], n.params[k]) for k in m.params):
            return False
    return True


@pytest.mark.parametrize("case", OP_CASES)
def test_graphs_without_chains_are_untouched(case):
    g = graph_with(case)
    before = g.clone()
    changed, ctx = fuse(g)
    assert not changed and _same(g, before) and g.meta == before.meta and ctx.records == {} and ctx.notices == []


def test_converted_cnns_and_attention_networks_are_untouched():
    from _graphs import tiny_vit

    calib = images(32)
    for residual in (False, True):
        ann = small_cnn(residual=residual)
        unfused, fused = ann.clone(), ann.clone()
        base = default_pipeline(calibration="none").replace(",fuse-synapses", "")
        run_passes(unfused, parse_pipeline(base), PassContext(calib=calib, timesteps=4))
        run_passes(fused, parse_pipeline(default_pipeline(calibration="none")), PassContext(calib=calib, timesteps=4))
        assert _same(unfused, fused)
    vit = tiny_vit()
    ctx = PassContext(calib=images(32, shape=(1, 8, 8)), timesteps=8)
    run_passes(vit, parse_pipeline(default_pipeline(calibration="none")), ctx)
    before = vit.clone()
    changed, _ = fuse(vit)
    assert not changed and _same(vit, before) and "fuse-synapses" not in ctx.records


def test_the_equivalence_check_catches_a_wrong_fusion(monkeypatch):
    real = fs._compose

    def off_by_a_bit(outer, inner):
        m = real(outer, inner)
        return m.with_weight(m.weight * 1.001)

    monkeypatch.setattr(fs, "_compose", off_by_a_bit)
    with pytest.raises(PassError, match="changed the input current"):
        fuse(conv1x1_chain())


def test_the_default_pipeline_ends_with_it():
    assert default_pipeline().endswith(",insert-if{maxpool=gate},fuse-synapses")
    assert default_pipeline(calibration="advanced").endswith("calibrate-potential,fuse-synapses")


def test_lava_fixed_runs_the_fused_graph_close_to_float():
    lava_fixed = _lava_fixed()
    g = inverted_residual()
    [p] = lava_fixed.unsupported(g)
    assert "a neuron must sit between two synapses" in p.reason and "fuse-synapses" in p.reason
    fuse(g)
    assert lava_fixed.unsupported(g) == []
    ref = simulate(g, X, [16])
    got = lava_fixed.run(g, X, [16])
    for name, rate in ref.spike_rates.items():
        assert abs(got.spike_rates[name] - rate) <= FIXED_RATE_TOLERANCE, name
    for s in got.details["deployment"]["layers"]:
        assert 1 <= s["vth"] < 2**17


def tiny_mobilenet() -> torch.nn.Module:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.fashion_mnist.models import MobileNetV2

    torch.manual_seed(0)
    m = MobileNetV2(stages=((1, 4, 1, 1), (2, 6, 2, 2)), stem_channels=4, head_channels=8, num_classes=3)
    for mod in m.modules():  # non-trivial inference statistics, so BatchNorm folds into real biases
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


def test_tiny_mobilenet_converts_fuses_and_runs_on_lava_fixed(tmp_path):
    x = images(40, shape=(1, 12, 12))
    sm = snnc.convert(tiny_mobilenet(), calib=x[:32], timesteps=16, calibration="none", check=False, progress=False)
    rec = sm.provenance["records"]["fuse-synapses"]
    assert sm.provenance["pipeline"].endswith("fuse-synapses") and len(rec["fused"]) >= 2 and rec["max_relative_error"] < 1e-5
    unfused = snnc.convert(
        tiny_mobilenet(), calib=x[:32], timesteps=16, check=False, progress=False,
        passes=default_pipeline(calibration="none").replace(",fuse-synapses", ""),
    )  # fmt: skip
    a, b = unfused.simulate(x[32:], [16]).output(16), sm.simulate(x[32:], [16]).output(16)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * max(1.0, float(np.abs(a).max())))

    lava_fixed = _lava_fixed()
    assert lava_fixed.unsupported(sm.snn) == []
    ref = sm.simulate(x[32:], [16])
    got = lava_fixed.run(sm.snn, x[32:], [16])
    for name, rate in ref.spike_rates.items():
        assert abs(got.spike_rates[name] - rate) <= FIXED_RATE_TOLERANCE, name

    # snnc check: the unfused artifact says how to fuse it; the fused one says what was fused
    sm.save(tmp_path / "fused.snn")
    unfused.save(tmp_path / "unfused.snn")
    runner = CliRunner()
    out = runner.invoke(main, ["check", str(tmp_path / "unfused.snn"), "--backend", "lava-fixed"])
    assert out.exit_code == 1 and "fuse-synapses" in out.output and "neuron must sit between" in out.output
    out = runner.invoke(main, ["check", str(tmp_path / "fused.snn"), "--backend", "lava-fixed"])
    assert out.exit_code == 0, out.output
    assert f"fuse-synapses folded {len(rec['fused'])} synapse(s)" in " ".join(out.output.split())
    # the hint's way to fuse an existing artifact
    later = snnc.calibrate(tmp_path / "unfused.snn", x[:32], passes="fuse-synapses", check=False, progress=False)
    assert lava_fixed.unsupported(later.snn) == [] and later.snn.meta["fused_synapses"] == len(rec["fused"])

    # the energy estimate's ANN side counts the ANN's own layers, not the composed synapses
    from snnc.analysis.energy import ann_operations, estimate_energy

    rates = ref.spike_rates
    est = estimate_energy(sm, rates, 16)
    ann = sum(r["macs"] for r in ann_operations(sm.ann))
    assert est["totals"]["ann_macs"] == ann == estimate_energy(unfused, rates, 16)["totals"]["ann_macs"]
    assert estimate_energy(sm.snn, rates, 16)["totals"]["ann_macs"] != ann  # the graph alone: the composed synapses
    assert any("fuse-synapses composed" in c for c in est["caveats"])
