"""Operations and energy estimates (snnc.analysis.energy): hand-computed counts, exact
synaptic operations against a brute-force count of simulated spikes, profile arithmetic,
and the convert command's table and JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _graphs import finish, graph_with, images, neuron, small_cnn
from click.testing import CliRunner

from snnc.analysis.energy import (
    PROFILES,
    ann_operations,
    estimate_energy,
    fan_out,
    layer_operations,
    spike_rate_maps,
)
from snnc.errors import DataError
from snnc.ir import Graph
from snnc.simulator.reference import ReferenceSimulator, simulate

T = 12


def _rows(est_or_rows, kind=None):
    rows = est_or_rows["layers"] if isinstance(est_or_rows, dict) else est_or_rows
    return {r["layer"]: r for r in rows if kind is None or r["kind"] == kind}


def two_conv_snn(seed: int = 0) -> Graph:
    """x[1,12,12] -> conv 3x3 pad 1 (6) -> IF -> conv 3x3 pad 1 (4) -> IF -> readout."""
    r = np.random.default_rng(seed)
    g = Graph("two_conv", "snn")
    x = g.add_input("x", (1, 12, 12))
    h = g.add_node("conv", [x], {"pads": [1, 1, 1, 1]}, {"weight": r.normal(0, 0.6, (6, 1, 3, 3)), "bias": r.normal(0.2, 0.1, 6)}, "conv1").output
    h = neuron(g, h, 6, r)
    h = g.add_node("conv", [h], {"pads": [1, 1, 1, 1]}, {"weight": r.normal(0, 0.3, (4, 6, 3, 3)), "bias": r.normal(0.1, 0.1, 4)}, "conv2").output
    h = neuron(g, h, 4, r)
    return finish(g, h)


# --------------------------------------------------------------- hand-computed counts
def test_ann_macs_hand_computed():
    rows = _rows(ann_operations(small_cnn(bn=False)))
    assert rows["conv1"]["macs"] == 6 * 12 * 12 * (1 * 3 * 3)  # outputs x fan-in, padding included: 7776
    assert rows["conv2"]["macs"] == 6 * 12 * 12 * (6 * 3 * 3)  # 46656
    assert rows["fc"]["macs"] == 4 * 6
    assert rows["relu1"]["activations"] == rows["relu2"]["activations"] == 6 * 12 * 12
    convt = [r for r in ann_operations(graph_with("conv-transpose")) if r["op"] == "conv_transpose"][0]
    assert convt["macs"] == (4 * 8 * 8) * (3 * 3 * 3)  # every input element scatters into C_out x k x k


def test_connections_skip_padding_and_analog_input_modes():
    g = two_conv_snn()
    rates = {n.name: 0.25 for n in g.find("if_neuron")}
    rows = _rows(layer_operations(g, rates, T))
    # per (c_out, c_in) pair: 34 valid taps along each axis (3 x 12 minus one at each border)
    assert rows["conv1"]["connections"] == 6 * 34 * 34
    assert rows["conv1"]["ann_macs"] == 6 * 12 * 12 * 9
    assert rows["conv1"]["input"] == "analog" and rows["conv1"]["snn_synops"] == 0
    assert rows["conv1"]["snn_dense_macs"] == 6 * 34 * 34  # computed once: a bias current
    per_step = _rows(layer_operations(g, rates, T, analog_input="per_step"))
    assert per_step["conv1"]["snn_dense_macs"] == T * 6 * 34 * 34
    assert rows["conv2"]["connections"] == 4 * 6 * 34 * 34
    assert rows["conv2"]["snn_synops"] == pytest.approx(T * 0.25 * 4 * 6 * 34 * 34)  # layer-average: rate x T x connections
    assert rows["conv2"]["input_rate"] == pytest.approx(0.25)
    neurons = _rows(layer_operations(g, rates, T), "neuron")
    first = neurons[g.find("if_neuron")[0].name]
    assert first["neuron_updates"] == 6 * 144 * T and first["spikes"] == pytest.approx(0.25 * 6 * 144 * T)
    readout = [r for r in layer_operations(g, rates, T) if r["kind"] == "readout"][0]
    assert readout["neuron_updates"] == 4 * 144 * T


def test_spiking_input_counts_synaptic_operations():
    g = two_conv_snn()
    rates = {n.name: 0.1 for n in g.find("if_neuron")}
    row = _rows(layer_operations(g, rates, T, input_rate=0.3))["conv1"]
    assert row["input"] == "spikes" and row["snn_dense_macs"] == 0
    assert row["snn_synops"] == pytest.approx(T * 0.3 * 6 * 34 * 34)


def test_fan_out_of_a_padded_conv_is_non_uniform():
    g = two_conv_snn()
    f = fan_out(g, g.node("conv2"))[g.find("if_neuron")[0].name]
    assert f.shape == (6, 12, 12)
    assert f[0, 5, 5] == 4 * 9 and f[0, 0, 5] == 4 * 6 and f[0, 0, 0] == 4 * 4  # interior, edge, corner


# ------------------------------------------------------ exact counts vs brute force
def _record(g: Graph, x: np.ndarray) -> dict[str, torch.Tensor]:
    """Every neuron layer's binary spike trains [T, B, ...], watched on the reference simulator."""
    spikes: dict[str, torch.Tensor] = {}

    def keep(node, out):
        spikes[node.name] = (out.data != 0).double()

    ReferenceSimulator(g).simulate(torch.from_numpy(x), [T], observe=keep, watch=g.having("neuron"))
    return spikes


def _ones_synapse(node, s: torch.Tensor) -> float:
    """Accumulates of a conv / transposed conv / linear over spike trains s [T, B, ...]: the
    layer's own op with every weight 1 and no bias, summed over steps, samples and outputs."""
    p = {"weight": torch.ones(node.params["weight"].shape, dtype=torch.float64), "bias": None}
    flat = s.reshape(-1, *s.shape[2:])
    return float(node.spec.compute([flat], node.attr_dict(), p).sum())


def _window_members(s: torch.Tensor, node) -> float:
    """Accumulates of an average pool straight into a neuron, by explicit loops over its windows."""
    k, st, pads = node.attr("kernel"), node.attr("strides") or node.attr("kernel"), node.attr("pads") or [0, 0, 0, 0]
    H, W = s.shape[-2:]
    oh, ow = node.output.shape[1:]
    total = 0.0
    for oy in range(oh):
        for ox in range(ow):
            y0, x0 = oy * st[0] - pads[0], ox * st[1] - pads[1]
            ys = slice(max(0, y0), min(H, y0 + k[0]))
            xs = slice(max(0, x0), min(W, x0 + k[1]))
            total += float(s[..., ys, xs].sum())
    return total


CASES = ["conv-asymmetric-pads", "conv-strided-grouped-dilated", "conv-transpose-cropped", "avg-pool", "residual-add", "zero-pad", "flatten-linear"]


@pytest.mark.parametrize("case", CASES)
def test_exact_synops_equal_a_brute_force_count_of_simulated_spikes(case):
    g = graph_with(case)
    x = images(5, seed=2, shape=(2, 8, 8))
    spikes = _record(g, x)
    assert all(float(s.sum()) > 0 for s in spikes.values()), "the test network must spike"
    first, *_ = g.find("if_neuron")
    s1 = spikes[first.name]
    maps = spike_rate_maps(g, x, T)
    for name, s in spikes.items():  # the maps are the recorded spikes, averaged
        np.testing.assert_allclose(maps[name], s.mean(dim=(0, 1)).numpy(), rtol=1e-12)
    est = estimate_energy(g, maps, T)
    assert est["settings"]["rates"] == "per-neuron"
    rows = est["layers"]
    spiking_rows = [r for r in rows if r["kind"] in ("synapse", "elementwise") and r["input"] == "spikes"]
    assert spiking_rows
    for r in spiking_rows:
        if r["op"] == "direct":  # a readout integrating spikes: one accumulate per spike
            assert len(r["sources"]) == 1
            assert r["snn_synops"] == pytest.approx(float(spikes[r["sources"][0]].sum()) / len(x), rel=1e-9)
            continue
        node = g.node(r["layer"])
        if node.op in ("conv", "conv_transpose"):
            src = node.inputs[0].producer
            if src.op == "pad":  # the spikes as the padding moved them (zeros at the border)
                s = spikes[src.inputs[0].producer.name]
                flat = src.spec.compute([s.reshape(-1, *s.shape[2:])], src.attr_dict(), {})
                expected = _ones_synapse(node, flat.reshape(*s.shape[:2], *flat.shape[1:]))
            else:
                expected = _ones_synapse(node, spikes[src.name])
        elif node.op == "linear":  # global pool + reshape between: every spike reaches every output once
            expected = float(s1.sum()) * node.params["weight"].shape[0]
        elif node.op == "avg_pool":
            expected = _window_members(s1, node)
        elif node.op == "add":  # both spiking branches enter the add one synapse per spike (no coefficient is 0)
            n1, n2 = (n.name for n in g.find("if_neuron")[:2])
            expected = float(spikes[n1].sum() + spikes[n2].sum())
        else:
            raise AssertionError(node.op)
        expected /= len(x)  # the estimate is per sample
        assert r["snn_synops"] == pytest.approx(expected, rel=1e-9), (r["layer"], r["snn_synops"], expected)
        assert r["rates"] == "per-neuron"


def test_layer_average_rates_are_exact_only_for_uniform_fan_out():
    x = images(5, seed=2, shape=(2, 8, 8))
    # linear after a global pool: every neuron reaches every output once, so the layer average suffices
    g = graph_with("flatten-linear")
    maps = spike_rate_maps(g, x, T)
    res = simulate(g, x, T)
    exact, approx = _rows(estimate_energy(g, maps, T), "synapse"), _rows(estimate_energy(g, res.spike_rates, T), "synapse")
    lin = [n for n in g.nodes if n.op == "linear"][0].name
    assert approx[lin]["snn_synops"] == pytest.approx(exact[lin]["snn_synops"], rel=1e-9)
    # padded conv: border neurons have smaller fan-out; the average gives rate x T x connections instead
    g = graph_with("conv-asymmetric-pads")
    maps = spike_rate_maps(g, x, T)
    res = simulate(g, x, T)
    exact, approx = _rows(estimate_energy(g, maps, T), "synapse"), _rows(estimate_energy(g, res.spike_rates, T), "synapse")
    conv = g.find("conv")[1].name
    src = g.find("if_neuron")[0].name
    assert approx[conv]["snn_synops"] == pytest.approx(T * res.spike_rates[src] * approx[conv]["connections"])
    assert approx[conv]["snn_synops"] != pytest.approx(exact[conv]["snn_synops"], rel=1e-6)
    assert approx[conv]["snn_synops"] == pytest.approx(exact[conv]["snn_synops"], rel=0.3)
    assert approx[conv]["rates"] == "layer-average" and exact[conv]["rates"] == "per-neuron"


def test_spike_rate_maps_average_to_the_simulators_rates_for_every_t():
    g = graph_with("residual-add")
    x = images(4, seed=3, shape=(2, 8, 8))
    maps = spike_rate_maps(g, x, [4, T])
    for t in (4, T):
        rates = simulate(g, x, t).spike_rates
        assert set(rates) <= set(maps[t])
        for name, r in rates.items():
            assert maps[t][name].mean() == pytest.approx(r, rel=1e-12)


# ----------------------------------------------------------------- profile arithmetic
def test_profile_constants_and_citations():
    cmos, int8, loihi = PROFILES["cmos45nm"], PROFILES["cmos45nm-int8"], PROFILES["loihi"]
    assert cmos.mac_pj == pytest.approx(3.7 + 0.9) and cmos.ac_pj == 0.9
    assert int8.mac_pj == pytest.approx(0.2 + 0.1) and int8.ac_pj == 0.1
    assert loihi.ac_pj == 23.6 and loihi.neuron_update_pj == 81.0 and loihi.spike_pj == 1.7 and loihi.mac_pj is None
    for p in PROFILES.values():
        assert p.sources and all("doi:10.1109/" in s for s in p.sources)
    assert "Horowitz" in cmos.sources[0] and "Davies" in loihi.sources[0]


def test_energy_is_counts_times_profile_constants():
    g = two_conv_snn()
    rates = {n.name: 0.2 for n in g.find("if_neuron")}
    est = estimate_energy(g, rates, T, ("cmos45nm", "cmos45nm-int8", "loihi"), samples=7)
    json.dumps(est)  # JSON-able as it is
    t = est["totals"]
    assert est["samples"] == 7 and est["timesteps"] == T and set(est["profiles"]) == {"cmos45nm", "cmos45nm-int8", "loihi"}
    rows = est["layers"]
    assert t["ann_macs"] == sum(r["ann_macs"] for r in rows) == 6 * 144 * 9 + 4 * 144 * 54
    assert t["snn_synops"] == pytest.approx(sum(r["snn_synops"] for r in rows))
    for name in ("cmos45nm", "cmos45nm-int8", "loihi"):
        p = PROFILES[name]
        e = t["energy"][name]
        snn_pj = t["snn_synops"] * p.ac_pj + t["snn_dense_macs"] * p.dense_mac_pj + t["neuron_updates"] * p.neuron_update_pj + t["spikes"] * p.spike_pj
        assert e["snn_nj"] == pytest.approx(snn_pj / 1e3)
        assert e["snn_nj"] == pytest.approx(sum(r["energy"][name]["snn_nj"] for r in rows))
        if p.mac_pj is None:
            assert e["ann_nj"] is None and e["ratio"] is None
        else:
            ann_pj = t["ann_macs"] * p.mac_pj + t["ann_activations"] * p.activation_pj
            assert e["ann_nj"] == pytest.approx(ann_pj / 1e3) and e["ratio"] == pytest.approx(snn_pj / ann_pj)
    # memory model: a synaptic op reads a weight and reads + writes an accumulator (fp32: 12 bytes)
    conv2 = _rows(est)["conv2"]
    assert conv2["energy"]["cmos45nm"]["snn_bytes"] == pytest.approx(conv2["snn_synops"] * 12)
    assert conv2["energy"]["cmos45nm"]["ann_bytes"] == conv2["ann_macs"] * 8 + 4 * 144 * 4


def test_errors_name_the_problem():
    g = two_conv_snn()
    with pytest.raises(DataError, match="no spike rate for spiking layer"):
        layer_operations(g, {}, T)
    name = g.find("if_neuron")[0].name
    with pytest.raises(DataError, match="have shape"):
        layer_operations(g, {n.name: np.zeros((3, 3)) if n.name == name else 0.1 for n in g.find("if_neuron")}, T)
    with pytest.raises(DataError, match="unknown energy profile 'tpu'"):
        estimate_energy(g, {n.name: 0.1 for n in g.find("if_neuron")}, T, ("tpu",))
    with pytest.raises(DataError, match="ANN stage"):
        layer_operations(small_cnn(), {}, T)


def test_ann_graph_and_snn_graph_rows_join(digits_model):
    import snnc

    sm = snnc.convert(digits_model.onnx_path, digits_model.x_train[:64], timesteps=8, calib_samples=64, calibration="none")
    ann = {r["layer"]: r["macs"] for r in ann_operations(sm.ann) if r["macs"]}
    est = estimate_energy(sm, spike_rate_maps(sm, digits_model.x_test[:16], 8), 8)
    snn = {r["layer"]: r["ann_macs"] for r in est["layers"] if r["kind"] == "synapse"}
    assert ann == snn and sum(ann.values()) == est["totals"]["ann_macs"]
    assert sum(r["activations"] for r in ann_operations(sm.ann)) == est["totals"]["ann_activations"]
    assert any(r["kind"] == "elementwise" and r["op"] == "add" for r in est["layers"])  # the residual skip


def test_convert_prints_the_table_and_writes_the_estimate(digits_model, tmp_path):
    from snnc.cli import main

    out, report = tmp_path / "d.snn", tmp_path / "d.json"
    args = ["convert", str(digits_model.onnx_path), "-T", "8", "--calib", str(digits_model.calib_path), "-o", str(out),
            "--report", str(report), "--no-progress", "--calibration", "none", "--energy-profile", "cmos45nm,cmos45nm-int8"]  # fmt: skip
    res = CliRunner(env={"COLUMNS": "240"}).invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "Operations and energy per sample (T=8, estimated from spike rates on 128 calibration samples)" in res.output
    assert "SynOps/MAC" in res.output and "cmos45nm-int8: ANN" in res.output
    energy = json.loads(report.read_text())["energy"]
    assert energy["timesteps"] == 8 and energy["samples"] == 128 and set(energy["profiles"]) == {"cmos45nm", "cmos45nm-int8"}
    assert energy["totals"]["snn_synops"] > 0 and energy["totals"]["energy"]["cmos45nm"]["ratio"] > 0
    bad = CliRunner().invoke(main, ["convert", str(digits_model.onnx_path), "--calib", str(digits_model.calib_path), "--energy-profile", "gpu"])
    assert bad.exit_code == 2 and "unknown energy profile 'gpu'" in bad.output

    # snnc eval --energy: the estimate from the rates the evaluating backend measured
    args = ["eval", str(out), "--data", str(digits_model.test_path), "-T", "4,8", "--no-progress", "--energy", "default", "--json"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    ev = json.loads(res.output)
    assert ev["energy"]["timesteps"] == 8 and ev["energy"]["samples"] == len(digits_model.y_test)
    assert set(ev["energy"]["profiles"]) == {"cmos45nm", "loihi"}
    res = CliRunner(env={"COLUMNS": "240"}).invoke(main, args[:-1], catch_exceptions=False)
    assert res.exit_code == 0 and "estimated from spike rates on" in res.output and "evaluation samples" in res.output
    bad = CliRunner().invoke(main, ["eval", str(out), "--data", str(digits_model.test_path), "--energy", "gpu"])
    assert bad.exit_code == 2 and "unknown energy profile 'gpu'" in bad.output
