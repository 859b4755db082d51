"""Energy, diagnostics and the report on converted attention networks: graded messages of
bipolar neurons, host ops of temporal ops (hand-counted on a temporal matmul whose input
spike trains are known), and the diagnose / report path on the converted tiny ViT."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _graphs import images, tiny_vit
from click.testing import CliRunner

from snnc.analysis.diagnose import diagnose, findings
from snnc.analysis.energy import (
    PROFILES,
    activity_maps,
    ann_operations,
    estimate_energy,
    layer_operations,
    print_energy_table,
)
from snnc.ir import Graph
from snnc.ir.ops import TEMPORAL_TARGET
from snnc.ir.shapes import infer_shapes
from snnc.ir.verify import verify
from snnc.model import SpikingModel
from snnc.passes import PassContext, default_pipeline, parse_pipeline, run_passes
from snnc.simulator.reference import ReferenceSimulator

T = 8
K = 127


def _rows(est, kind=None):
    return {r["layer"]: r for r in est["layers"] if kind is None or r["kind"] == kind}


def _bipolar(g: Graph, h, theta: float, name: str):
    return g.add_node(
        "if_neuron", [h], {"reset": "subtract", "spike_scale": "threshold", "max_spikes": K, "bipolar": True},
        {"threshold": np.array(theta), "v_init": np.array(0.0)}, name,
    ).output  # fmt: skip


def product_snn() -> Graph:
    """x [2, 3] -> bipolar A (θ 1) ; x^T -> bipolar B (θ 2) ; temporal_matmul(A, B) [2, 2] ->
    bipolar C -> linear (2 -> 3) -> readout. With v(0) = 0 and a constant current c, a
    neuron of threshold θ sends a message at the steps where floor(v / θ) != 0."""
    g = Graph("product", "snn")
    x = g.add_input("x", (2, 3))
    a = _bipolar(g, x, 1.0, "a_spk")
    xt = g.add_node("transpose", [x], {"perm": [0, 2, 1]}, name="xt").output
    b = _bipolar(g, xt, 2.0, "b_spk")
    p = g.add_node("temporal_matmul", [a, b], {"mode": "expectation"}, name="ab_t").output
    c = _bipolar(g, p, 4.0, "c_spk")
    w = np.arange(6, dtype=np.float32).reshape(3, 2) / 6
    h = g.add_node("linear", [c], {}, {"weight": w, "bias": np.zeros(3, np.float32)}, "head").output
    g.set_outputs([g.add_node("readout", [h]).output])
    infer_shapes(g)
    verify(g, "snn")
    return g


# x: currents 0 (no message), 0.5 and 3.0. At T=8:
#   A (θ 1): 0 -> 0 messages, 0.5 -> every other step: 4, 3.0 -> every step: 8
#   B (θ 2, reads x^T): 0 -> 0, 0.5 -> v reaches 2 at steps 4 and 8: 2, 3.0 -> every step: 8
X = np.array([[[0.0, 0.5, 3.0], [3.0, 0.0, 0.5]]], dtype=np.float32)
MSG_A = np.array([[0, 4, 8], [8, 0, 4]]) / T
MSG_B = np.array([[0, 8], [2, 0], [8, 2]]) / T  # B = x^T [3, 2]


def _per_step_nnz(g: Graph, x: np.ndarray) -> dict[str, torch.Tensor]:
    """Brute force: every spiking layer's non-zero outputs per step, summed over samples ([T, *shape])."""
    got: dict[str, torch.Tensor] = {}
    sim = ReferenceSimulator(g)
    watch = g.having("neuron")
    sim.simulate(torch.from_numpy(x), [T], observe=lambda n, out: got.__setitem__(n.name, (out.data != 0).sum(1)), watch=watch)
    return got


def test_messages_are_non_zero_outputs_and_matmul_host_ops_are_hand_counted():
    g = product_snn()
    spikes, messages = activity_maps(g, X, T)
    np.testing.assert_array_equal(messages["a_spk"], MSG_A)
    np.testing.assert_array_equal(messages["b_spk"], MSG_B)
    est = estimate_energy(g, spikes, T, ("cmos45nm", "loihi"), message_rates=messages)
    rows = _rows(est)
    host = rows["ab_t"]
    assert host["kind"] == "host" and host["target"] == TEMPORAL_TARGET["temporal_matmul"]
    # [n, k] @ [k, m] with n = 2, k = 3, m = 2: each message of A multiplies a row of B (m MACs),
    # each message of B a column of A (n MACs): 2 * 24 + 2 * 20 = 88 < 8 * (2 * 3 * 2) = 96 (recomputing A B every step)
    d = host["host_detail"]
    assert d["input_messages"] == [24, 20]
    assert d["event_driven_macs"] == 2 * 24 + 2 * 20 == 88 and d["recompute_macs"] == T * 12 == 96
    assert d["strategy"] == "event-driven" and host["host_ops"] == 88
    assert host["ann_host_ops"] == 12  # the ANN's matmul: n k m MACs
    # the brute-force count of the same rule from the recorded spike trains, step by step
    nnz = _per_step_nnz(g, X)
    n, m = 2, 2
    brute = sum(int(nnz["a_spk"][t].sum()) * m + int(nnz["b_spk"][t].sum()) * n for t in range(T))
    assert brute == 88
    # host ops stay out of the synaptic totals
    t = est["totals"]
    assert t["host_ops"] == 88 and t["snn_synops"] == 0
    # the graded messages of C: one MAC per message and fan-out (3 outputs), not |count| accumulates
    c = rows["c_spk"]
    assert c["graded"] and c["messages"] == pytest.approx(float(nnz["c_spk"].sum()))
    assert c["spikes"] > c["messages"]  # unit spikes: the payloads add up
    head = rows["head"]
    assert head["graded_synops"] == pytest.approx(3 * c["messages"]) and head["snn_synops"] == 0
    assert head["unit_equivalent_synops"] == pytest.approx(3 * c["spikes"])
    assert head["messages_from"] == "measured" and head["message_rate"] == pytest.approx(c["message_rate"])
    for name in ("cmos45nm", "loihi"):
        p, e = PROFILES[name], t["energy"][name]
        assert e["snn_parts_nj"]["graded"] == pytest.approx(t["graded_synops"] * p.dense_mac_pj / 1e3)
        assert e["snn_parts_nj"]["host"] == pytest.approx(88 * p.dense_mac_pj / 1e3)
        assert e["snn_parts_nj"]["spikes"] == pytest.approx(t["messages"] * p.spike_pj / 1e3)  # one event per message
        assert e["snn_parts_nj"]["synops"] == 0
    # the same inputs all at 3.0: every element sends every step, and recomputing A B is cheaper
    full_spikes, full_messages = activity_maps(g, np.full_like(X, 3.0), T)
    dense = _rows(estimate_energy(g, full_spikes, T, message_rates=full_messages))
    assert dense["ab_t"]["host_detail"]["event_driven_macs"] == T * (2 * 6 + 2 * 6) == 192
    assert dense["ab_t"]["host_ops"] == 96 and dense["ab_t"]["host_detail"]["strategy"] == "recompute"


def test_without_message_rates_messages_are_an_upper_bound():
    g = product_snn()
    spikes, messages = activity_maps(g, X, T)
    exact = _rows(estimate_energy(g, spikes, T, message_rates=messages))
    bound = estimate_energy(g, spikes, T)
    rows = _rows(bound)
    assert bound["settings"]["messages"] == "bound" and any("bound" in c for c in bound["caveats"])
    assert rows["ab_t"]["host_detail"]["input_messages"][0] >= exact["ab_t"]["host_detail"]["input_messages"][0]
    assert rows["head"]["graded_synops"] >= exact["head"]["graded_synops"] and rows["head"]["notes"]
    # one rate per layer (SimResult.spike_rates) works too
    layer = {k: float(np.mean(v)) for k, v in spikes.items()}
    assert layer_operations(g, layer, T)[-1]["kind"] == "readout"


@pytest.fixture(scope="module")
def vit():
    g = tiny_vit()
    x = images(40, shape=(1, 8, 8))
    snn = g.clone()
    ctx = PassContext(calib=x, timesteps=T)
    pipeline = default_pipeline(calibration="none")
    run_passes(snn, parse_pipeline(pipeline), ctx)
    ann = g.clone()
    run_passes(ann, parse_pipeline("canonicalize"), PassContext())
    prov = {"timesteps": T, "ann_names": dict(ctx.ann_names), "records": ctx.records, "pipeline": pipeline, "calibration": "none"}
    return SpikingModel(snn, ann, prov, ctx.ann_reference), x


def test_tiny_vit_energy_has_graded_and_host_rows(vit):
    sm, x = vit
    spikes, messages = activity_maps(sm, x[:16], T)
    est = estimate_energy(sm, spikes, T, ("cmos45nm", "cmos45nm-int8", "loihi"), message_rates=messages, samples=16)
    json.dumps(est)
    hosts = _rows(est, "host")
    assert set(hosts) == {n.name for n in sm.snn.nodes if n.spec.has("temporal")} and len(hosts) == 7
    # dense host ops, hand-counted: 5 tokens of D = 8; attention rows of 5 in 2 heads; 5 x 16 GELU inputs
    assert hosts["norm1_t"]["host_ops"] == T * 5 * (4 * 8 + 1) and hosts["norm1_t"]["host_detail"]["rsqrt"] == T * 5
    assert hosts["attn_t"]["host_ops"] == T * 3 * (2 * 5 * 5)
    assert hosts["act_t"]["host_ops"] == T * 5 * 16
    for name in ("scores_t", "av_t"):
        d = hosts[name]["host_detail"]
        assert hosts[name]["host_ops"] == min(d["event_driven_macs"], d["recompute_macs"]) and d["recompute_macs"] == T * 2 * 5 * 4 * 5
    # messages are the non-zero outputs, per neuron and step, of every (bipolar) neuron
    nnz = _per_step_nnz(sm.snn, x[:16])
    neurons = _rows(est, "neuron")
    assert neurons and all(r["graded"] for r in neurons.values())
    for name, r in neurons.items():
        assert r["messages"] == pytest.approx(float(nnz[name].sum()) / 16), name
        assert r["messages"] <= r["neuron_updates"] and r["ann_activations"] == 0
    t = est["totals"]
    assert t["snn_synops"] == 0 and t["graded_synops"] > 0 and t["host_ops"] == sum(r["host_ops"] for r in hosts.values())
    assert t["ann_macs"] == sum(r["macs"] for r in ann_operations(sm.ann))
    assert t["ann_host_ops"] == sum(r["host_ops"] for r in ann_operations(sm.ann)) == sum(r["ann_host_ops"] for r in hosts.values())
    assert t["ann_activations"] == sum(r["activations"] for r in ann_operations(sm.ann)) == 0
    assert est["totals"]["energy"]["cmos45nm"]["host_fraction"] > 0
    from rich.console import Console

    console = Console(width=200, record=True)
    print_energy_table(console, est)
    text = console.export_text()
    assert "graded ops" in text and "Host ops per sample" in text and "temporal_layer_norm" in text and "messages" in text


def test_burst_neurons_keep_binary_equivalent_counts_unless_asked():
    g = tiny_vit(act="relu")
    x = images(8, shape=(1, 8, 8))
    snn = g.clone()
    run_passes(snn, parse_pipeline(default_pipeline(calibration="none")), PassContext(calib=x, timesteps=T))
    burst = [n for n in snn.having("neuron") if not n.attr("bipolar")]
    assert burst and int(burst[0].attr("max_spikes")) > 1
    spikes, messages = activity_maps(snn, x, T)
    plain = _rows(estimate_energy(snn, spikes, T, message_rates=messages))
    assert not plain[burst[0].name]["graded"] and plain[burst[0].name]["messages"] == plain[burst[0].name]["spikes"]
    assert plain["fc2"]["snn_synops"] > 0 and plain["fc2"]["graded_synops"] == 0  # unit spikes, one accumulate each
    graded = _rows(estimate_energy(snn, spikes, T, message_rates=messages, graded="burst"))
    assert graded[burst[0].name]["graded"] and graded["fc2"]["snn_synops"] == 0 and graded["fc2"]["graded_synops"] > 0


def test_diagnose_covers_message_neurons_and_temporal_ops(vit):
    sm, x = vit
    diag = diagnose(sm, x[:24], timesteps=[4, T], ablation_samples=8)
    layers = {r["layer"]: r for r in diag["layers"]}
    assert set(layers) == {n.name for n in sm.snn.having("neuron")}
    for name, r in layers.items():
        assert r["ann_layer"] == sm.provenance["ann_names"][name] and r["neuron"] == f"bipolar:{K}" and r["bipolar"]
        assert r["relative_rms"] is not None and r["relative_rms"] < 0.1, name  # graded messages carry the ANN value closely
        assert 0 < r["message_rate"] <= 1 and r["spike_rate"] >= r["message_rate"]
        assert "gain_exact" in r and not r["notes"]
    temporal = {r["layer"]: r for r in diag["temporal_ops"]}
    assert set(temporal) == {n.name for n in sm.snn.nodes if n.spec.has("temporal")}
    for r in temporal.values():
        assert r["target"] == TEMPORAL_TARGET[r["op"]] and r["ann_layer"] == r["layer"][: -len("_t")]
        assert r["relative_rms"] is not None and "not_applicable" in r and r["feeds"] == [f"{r['ann_layer']}_spk"]
    assert set(diag["message_maps"]) == set(layers)
    assert findings(diag)
    off = {**diag, "temporal_ops": [{**diag["temporal_ops"][0], "relative_rms": 0.5}]}  # a temporal op far from the ANN is reported
    assert any(f["kind"] == "temporal" and f["layer"] == "norm1_t" for f in findings(off))


def test_bipolar_statistics_count_negative_values():
    from snnc.analysis.diagnose import _LayerStats

    st = _LayerStats(neurons=3)
    theta, k = torch.tensor(0.5), 2
    net = torch.tensor([[-2.0 * T, 0.0, 1.0]])  # -K every step, silent, one spike
    counts = net.abs()
    ann = torch.tensor([[-1.5, -0.3, 0.1]])  # clipped (|a| > K θ = 1), silent (|a| >= θ / T), fine
    st.add(counts, net * theta / T, ann, theta, T, k, net, bipolar=True)
    s = st.summary(T, True)
    assert s["saturated"] == pytest.approx(1 / 3) and s["clipped"] == pytest.approx(1 / 3) and s["silent"] == pytest.approx(1 / 3)


def test_report_command_on_a_converted_attention_network(vit, tmp_path):
    from snnc.cli import main

    sm, x = vit
    art, data = tmp_path / "vit.snn", tmp_path / "data.npz"
    sm.save(art)
    np.savez(data, x=x[:16])
    out = tmp_path / "rep"
    args = ["report", str(art), "--data", str(data), "-T", "4,8", "--ablation-samples", "4", "-o", str(out), "--no-progress"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["diagnostics"]["temporal_ops"]) == 7
    en = rep["energy"]
    assert en["settings"]["messages"] == "measured" and en["totals"]["host_ops"] > 0 and en["host_layers"] == 7
    page = (out / "index.html").read_text()
    assert "Temporal ops (attention networks)" in page and "SNN host ops" in page and "graded synaptic ops" in page
    assert TEMPORAL_TARGET["temporal_softmax"].split(":")[0] in page
