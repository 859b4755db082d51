"""NIR export: the soft variant re-imported and run (nirtorch) reproduces the reference
simulator spike for spike; the hard variant matches the reference run with reset-to-zero
neurons, through nirtorch and SpikingJelly's importer; what NIR cannot express fails with
a clear error and leaves no file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _graphs import conv, finish, graph_with, images, neuron, rng, small_cnn
from click.testing import CliRunner

import snnc
from snnc.cli import main
from snnc.errors import ExportError, UnsupportedOpError
from snnc.export import export_nir, hard_reset_reference, read_nir, reference_spike_trains, run_nir, to_nir
from snnc.export.nir import spikingjelly_compatible
from snnc.ir import Graph, infer_shapes, verify
from snnc.simulator.reference import simulate

T = 24
X = images(12, shape=(2, 8, 8))


def assert_same_spikes(graph: Graph, nir_graph, x: np.ndarray, steps: int) -> None:
    ref = reference_spike_trains(graph, x, steps)
    run = run_nir(nir_graph, x, [steps], record_spikes=True)
    assert set(run.spike_trains) == set(ref)
    for name, spikes in ref.items():
        got = run.spike_trains[name].astype(bool)
        assert got.shape == spikes.shape, name
        assert np.array_equal(got, spikes), f"{name}: {int((got != spikes).sum())} of {spikes.size} spikes differ"
    expected = simulate(graph, x, [steps]).output(steps)
    np.testing.assert_allclose(run.output(steps), expected, rtol=1e-5, atol=1e-5)


def padded_pool_graph() -> Graph:
    """conv -> IF -> avg_pool with padding not counted -> conv -> IF (per-neuron v_init)."""
    r = rng(5)
    g = Graph("padded_pool", "snn")
    h = g.add_input("x", (2, 8, 8))
    h = neuron(g, conv(g, h, 4, 2, r, pads=[1, 1, 1, 1]), 4, r)
    h = g.add_node("avg_pool", [h], {"kernel": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": False}).output
    h = neuron(g, conv(g, h, 3, 4, r, pads=[1, 1, 1, 1]), 3, r, per="neuron")
    return finish(g, h)


def conv1d_graph() -> Graph:
    """A 1-d network: grouped conv1d, IF, avg pool, global average pool, linear."""
    r = rng(6)
    g = Graph("conv1d", "snn")
    h = g.add_input("x", (2, 16))
    p = {"weight": r.normal(0, 0.6, (4, 1, 3)), "bias": r.normal(0, 0.1, 4)}
    h = g.add_node("conv", [h], {"pads": [1, 1], "groups": 2}, p).output
    h = neuron(g, h, 4, r)
    h = g.add_node("avg_pool", [h], {"kernel": [2]}).output
    h = g.add_node("global_avg_pool", [h], {"keepdims": False}).output
    h = g.add_node("linear", [h], {}, {"weight": r.normal(0, 0.8, (3, 4)), "bias": r.normal(0, 0.1, 3)}).output
    return finish(g, h)


SOFT_CASES = ["residual-add", "affine", "flatten-linear", "per-neuron-threshold", "conv-strided-grouped-dilated"]


@pytest.mark.parametrize("case", SOFT_CASES)
def test_soft_export_reproduces_the_reference_spike_for_spike(case):
    graph = graph_with(case)  # per-channel θ and v_init in (0, θ/2) throughout
    assert_same_spikes(graph, to_nir(graph, reset="soft"), X, T)


@pytest.mark.parametrize("make", [padded_pool_graph, conv1d_graph])
def test_soft_export_of_padded_pooling_and_1d(make):
    graph = make()
    x = images(12, shape=graph.inputs[0].shape)
    assert_same_spikes(graph, to_nir(graph), x, T)


def test_soft_neuron_structure_and_tie():
    # v reaches θ exactly at t = 2 (0.5 + 0.5 = 1.0): snnc fires on v >= θ, NIR's Threshold
    # on w > θ', so θ' is written one float32 below θ − v_init.
    g = Graph("tie", "snn")
    h = g.add_input("x", (1, 2, 2))
    h = g.add_node("conv", [h], {}, {"weight": np.ones((1, 1, 1, 1)), "bias": np.zeros(1)}).output
    h = g.add_node("if_neuron", [h], {}, {"threshold": np.ones((1, 1, 1)), "v_init": np.zeros((1, 1, 1))}).output
    g = finish(g, h)
    ng = to_nir(g)
    kinds = {name: type(n).__name__ for name, n in ng.nodes.items()}
    assert sorted(kinds.values()) == ["Conv2d", "I", "I", "Input", "Output", "Scale", "Threshold"]  # θ = 1: no output Scale
    spk = next(n for n, k in kinds.items() if k == "Threshold")
    assert (spk.replace("_spk", "_reset"), spk.replace("_spk", "_v")) in ng.edges  # the recurrent edge
    assert np.all(ng.nodes[spk].threshold < 1.0) and np.all(np.nextafter(ng.nodes[spk].threshold, np.float32(2)) == 1.0)
    x = np.full((1, 1, 2, 2), 0.5, np.float32)
    run = run_nir(ng, x, [8], record_spikes=True)
    np.testing.assert_array_equal(run.spike_trains["if_neuron"][:, 0, 0, 0, 0], [0, 1, 0, 1, 0, 1, 0, 1])
    assert_same_spikes(g, ng, x, 8)


def test_file_round_trip_and_metadata(tmp_path):
    graph = graph_with("residual-add")
    graph.meta["timesteps"] = 24
    path = tmp_path / "m.nir"
    summary = export_nir(graph, path)
    assert summary.bytes == path.stat().st_size and summary.spiking_layers == 3 and not summary.spikingjelly
    loaded = read_nir(path)
    meta = loaded.metadata
    assert meta["reset"] == "soft" and meta["readout"] == "integrator" and int(meta["timesteps"]) == 24
    assert float(meta["dt"]) == 1e-4 and meta["generator"] == "snnc"
    a = run_nir(path, X, [8, T])
    b = run_nir(to_nir(graph), X, [8, T])
    for t in (8, T):
        np.testing.assert_array_equal(a.output(t), b.output(t))
    assert a.spike_counts == b.spike_counts
    ref = simulate(graph, X, [8, T])
    assert a.spike_rates == pytest.approx(ref.spike_rates, rel=1e-12)
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("case", ["residual-add", "affine", "flatten-linear", "conv-strided-grouped-dilated"])
def test_hard_export_matches_reset_to_zero_reference_in_nirtorch_and_spikingjelly(case, tmp_path):
    graph = graph_with(case)
    path = tmp_path / "hard.nir"
    summary = export_nir(graph, path, reset="hard")
    assert summary.spikingjelly, summary.spikingjelly_reason
    kinds = {type(n).__name__ for n in read_nir(path).nodes.values()}
    assert kinds <= {"Input", "Output", "Conv2d", "Affine", "AvgPool2d", "Flatten", "IF"}
    ref = simulate(hard_reset_reference(graph), X, [8, T])
    for executor in ("nirtorch", "spikingjelly"):
        run = run_nir(path, X, [8, T], executor=executor)
        for t in (8, T):
            np.testing.assert_allclose(run.output(t), ref.output(t), rtol=1e-4, atol=1e-5, err_msg=executor)
    nt = run_nir(path, X, [T])
    assert nt.spike_rates == pytest.approx(ref.spike_rates, abs=1e-3)
    for node in read_nir(path).nodes.values():  # uniform IF parameters, as SpikingJelly requires
        if type(node).__name__ == "IF":
            assert np.all(node.v_threshold == 1) and np.all(node.v_reset == 0) and np.all(node.r == 1e4)


def test_hard_export_differs_from_soft_and_per_neuron_thresholds_need_a_scale():
    graph = graph_with("per-neuron-threshold")
    ng = to_nir(graph, reset="hard")
    ok, why = spikingjelly_compatible(ng)
    assert not ok and "Scale" in why
    ref = simulate(hard_reset_reference(graph), X, [T])
    np.testing.assert_allclose(run_nir(ng, X, [T]).output(T), ref.output(T), rtol=1e-4, atol=1e-5)
    soft = simulate(graph, X, [T]).output(T)
    assert np.abs(soft - ref.output(T)).max() > 1e-3  # a different network


def test_reset_to_zero_neurons_export_as_nir_if():
    graph = graph_with("hard-reset-unit-spikes")
    with pytest.raises(ExportError, match="non-zero initial potential"):
        to_nir(graph)
    node = next(n for n in graph.find("if_neuron") if n.attr("reset") == "zero")
    node.set_param("v_init", np.zeros_like(node.params["v_init"]))
    ng = to_nir(graph)
    assert "IF" in {type(n).__name__ for n in ng.nodes.values()}
    assert_same_spikes(graph, ng, X, T)


@pytest.mark.parametrize(
    "case, op, hint",
    [
        ("spiking-max-pool", "spiking_max_pool", "--maxpool avg"),
        ("concat", "concat", "concatenation"),
        ("upsample", "upsample", "upsampling"),
        ("conv-transpose", "conv_transpose", "transposed convolution"),
    ],
)
def test_inexpressible_ops_raise_with_node_and_remedy(case, op, hint):
    graph = graph_with(case)
    node = graph.find(op)[0]
    with pytest.raises(UnsupportedOpError) as err:
        to_nir(graph)
    msg = str(err.value)
    assert op in msg and node.name in msg and hint in msg and "NIR export" in msg


def test_other_inexpressible_cases():
    with pytest.raises(ExportError, match="ceil_mode"):
        to_nir(graph_with("avg-pool"))
    with pytest.raises(ExportError, match="asymmetric padding"):
        to_nir(graph_with("conv-asymmetric-pads"))
    g = Graph("unflatten", "snn")
    h = g.add_input("x", (8,))
    h = g.add_node("reshape", [h], {"shape": [2, 4]}).output
    h = g.add_node("if_neuron", [h], {}, {"threshold": np.ones(1), "v_init": np.zeros(1)}).output
    with pytest.raises(UnsupportedOpError, match="only flattening reshapes"):
        to_nir(finish(g, h))
    with pytest.raises(ExportError, match="reset variant"):
        to_nir(graph_with("affine"), reset="sideways")
    with pytest.raises(ExportError, match="ANN stage"):
        to_nir(small_cnn())


def _artifact(tmp_path, case: str):
    path = tmp_path / f"{case}.snn"
    snnc.SpikingModel(graph_with(case), small_cnn(), {"timesteps": 16}).save(path)
    return path


@pytest.mark.parametrize("case, words", [("spiking-max-pool", "--maxpool avg"), ("concat", "concat"), ("upsample", "upsample")])
def test_cli_export_errors_exit_2_and_leave_no_file(case, words, tmp_path):
    art = _artifact(tmp_path, case)
    out = tmp_path / "m.nir"
    res = CliRunner(env={"COLUMNS": "240"}).invoke(main, ["export", str(art), "--format", "nir", "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and words in res.output
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_cli_export_writes_both_variants(tmp_path):
    art = _artifact(tmp_path, "residual-add")
    for reset in ("soft", "hard"):
        out = tmp_path / f"m_{reset}.nir"
        res = CliRunner(env={"COLUMNS": "240"}).invoke(main, ["export", str(art), "-o", str(out), "--reset", reset], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert out.exists() and f"{reset} reset" in res.output and "spiking layers" in res.output
        assert read_nir(out).metadata["reset"] == reset and int(read_nir(out).metadata["timesteps"]) == 16
    res = CliRunner().invoke(main, ["export", str(art), "--format", "onnx"])
    assert res.exit_code == 2 and "--format" in res.output


class TinyNet(torch.nn.Module):
    """conv-bn-relu, a residual block, average pooling, global pooling, linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.BatchNorm2d(6)
        self.c2, self.b2 = torch.nn.Conv2d(6, 6, 3, padding=1), torch.nn.BatchNorm2d(6)
        self.c3 = torch.nn.Conv2d(6, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        h = torch.relu(self.b1(self.c1(x)))
        h = torch.relu(self.b2(self.c2(h)) + h)
        h = torch.nn.functional.avg_pool2d(h, 2)
        h = torch.relu(self.c3(h))
        return self.fc(h.mean((2, 3)))


def test_converted_model_round_trip(tmp_path):
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for bn in (net.b1, net.b2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    net.eval()
    calib = images(64, seed=7, shape=(1, 10, 10))
    sm = snnc.convert(net, calib=calib, timesteps=16, calibration="light", check=False)
    x = images(32, seed=8, shape=(1, 10, 10))
    summary = sm.export_nir(tmp_path / "tiny.nir")
    assert summary.timesteps == 16 and summary.spiking_layers == 3
    run = run_nir(tmp_path / "tiny.nir", x, [8, 16])
    ref = sm.simulate(x, [8, 16])
    for t in (8, 16):
        np.testing.assert_allclose(run.output(t), ref.output(t), rtol=1e-4, atol=1e-4)
        assert np.array_equal(run.output(t).argmax(1), ref.output(t).argmax(1))
    assert run.spike_rates == pytest.approx(ref.spike_rates, rel=1e-6)
    hard = sm.export_nir(tmp_path / "tiny_hard.nir", reset="hard")
    assert hard.spikingjelly, hard.spikingjelly_reason
    sj = run_nir(tmp_path / "tiny_hard.nir", x, [16], executor="spikingjelly")
    np.testing.assert_allclose(sj.output(16), simulate(hard_reset_reference(sm.snn), x, [16]).output(16), rtol=1e-4, atol=1e-4)


def test_spikingjelly_refuses_the_soft_variant_with_a_pointer_to_hard():
    with pytest.raises(ExportError, match="--reset hard"):
        run_nir(to_nir(graph_with("affine")), X, [4], executor="spikingjelly")


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_export_leaves_the_graph_untouched(reset):
    g = graph_with("residual-add")
    before = {n.name: {k: a.copy() for k, a in n.params.items()} for n in g.nodes}
    to_nir(g, reset=reset)
    infer_shapes(g)
    verify(g, "snn")
    for n in g.nodes:
        for k, a in n.params.items():
            np.testing.assert_array_equal(a, before[n.name][k])
