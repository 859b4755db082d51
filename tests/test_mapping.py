"""Core mapping (`snnc map`): connectivity, tiling, placement within every budget, the naive
baseline, the failure messages, and the CLI (docs/mapping.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from snnc.cli import main
from snnc.errors import DataError
from snnc.mapping.api import map_model
from snnc.mapping.connectivity import Connectivity, box_size
from snnc.mapping.place import BUDGETS, DoesNotFit, block_graph, place, tile
from snnc.mapping.placement_file import load_placement
from snnc.mapping.targets import load_target
from snnc.mapping.traffic import assumed_rates, measured_rates
from snnc.passes import PassContext, parse_pipeline, run_passes
from _graphs import images, small_cnn

TEMPLATE = Path(__file__).resolve().parents[1] / "snnc" / "targets" / "generic.toml"


@pytest.fixture(scope="module")
def snn():
    g = small_cnn(residual=True)
    run_passes(g, parse_pipeline("canonicalize,fold-bn,balance-thresholds{method=max},insert-if"), PassContext(calib=images(32)))
    return g


def tiny_target(tmp_path, **core) -> str:
    """The generic template with a small core (so the 12x12 test network needs many)."""
    text = TEMPLATE.read_text()
    values = {"neurons": 300, "synapses": 20000, "fan_in": 1000, "fan_out": 4000, **core}
    out = []
    section = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("["):
            section = s
        key = s.split("=")[0].strip() if "=" in s and not s.startswith("#") else None
        if section == "[core]" and key in values:
            line = f"{key} = {values.pop(key)}" if values.get(key) is not None else "# removed"
        if section == "[chip]" and key == "cores":
            line = "cores = 8"
        out.append(line)
    p = tmp_path / "tiny.toml"
    p.write_text("\n".join(out) + "\n")
    return str(p)


def test_connectivity_counts_synaptic_paths_and_fan_in(snn):
    conn = Connectivity(snn)
    names = [n.name for n in conn.layers]
    assert len(names) == 3  # relu1, relu2 neurons and the readout
    first, second, readout = names
    assert conn.sources[first] == []  # driven by the analog input (a bias current), no spikes
    assert set(conn.sources[second]) == {first}
    # conv 3x3, pad 1, 6 -> 6 channels on 12x12: per channel pair 34^2 valid taps; plus the residual add (1 per neuron)
    assert conn.whole(second).connections() == 6 * 6 * 34 * 34 + 6 * 12 * 12
    # one interior neuron reads a 3x3 window of every input channel (54) and itself through the residual (same element)
    needs = conn.needs(second, ((0, 1), (5, 6), (5, 6)))
    assert needs.fan_in() == 54
    assert needs.connections() == 55
    # the readout (pool -> global pool -> linear) reads every neuron of relu2 once per output
    assert conn.whole(readout).connections() == 4 * 6 * 12 * 12
    assert conn.whole(readout).fan_in() == 6 * 12 * 12


def test_tiles_cover_every_layer_and_fit_the_largest_core(snn, tmp_path):
    t = load_target(tiny_target(tmp_path))
    conn = Connectivity(snn)
    blocks = tile(snn, conn, t)
    for node in conn.layers:
        mine = [b for b in blocks if b.layer == node.name]
        assert sum(box_size(b.box) for b in mine) == int(np.prod(node.output.shape))
        cover = np.zeros(node.output.shape, dtype=int)
        for b in mine:
            cover[tuple(slice(lo, hi) for lo, hi in b.box)] += 1
        assert (cover == 1).all()
    for b in blocks:
        assert b.neurons <= 300 and b.synapses <= 20000 and b.fan_in <= 1000
    assert len([b for b in blocks if b.layer == conn.layers[1].name]) > 1  # 864 neurons do not fit one 300-neuron core


def test_placement_meets_every_budget_and_beats_or_equals_naive(snn, tmp_path):
    t = load_target(tiny_target(tmp_path))
    rates = measured_rates(snn, images(6, seed=3), 8)
    assert set(rates) == {n.name for n in snn.nodes if n.spec.has("neuron")}
    assert all(((r >= 0) & (r <= 1)).all() for r in rates.values())
    rep = place(snn, t, 2, rates)
    base = place(snn, t, 2, rates, naive=True)
    for row in rep["cores"] + base["cores"]:
        for k in BUDGETS:
            if row["budget"][k] is not None:
                assert row["used"][k] <= row["budget"][k], (row, k)
    assert rep["summary"]["cores_used"] <= base["summary"]["cores_used"]
    assert rep["summary"]["spikes_per_step_between_chips"] <= base["summary"]["spikes_per_step_between_chips"] + 1e-6
    # a spike goes once to every core that needs it: at one rate r, all links together carry
    # r x the cores' fan-ins (distinct presynaptic neurons per core)
    flat = place(snn, t, 2, assumed_rates(snn, 0.25))
    total = sum(x["spikes_per_step"] for x in flat["links"])
    assert total == pytest.approx(0.25 * sum(row["used"]["fan_in"] for row in flat["cores"]))


def test_block_graph_weights_are_the_spikes_a_destination_reads(snn, tmp_path):
    t = load_target(tiny_target(tmp_path))
    conn = Connectivity(snn)
    blocks = tile(snn, conn, t)
    rates = assumed_rates(snn, 0.25)
    g = block_graph(blocks, rates)
    for u, v, w in g.edges(data="weight"):
        assert w == pytest.approx(0.25 * g.edges[u, v]["routes"])
    # every block of the second layer reads the first layer
    second = conn.layers[1].name
    for b in blocks:
        if b.layer == second:
            assert any(g.nodes[u]["layer"] == conn.layers[0].name for u in g.predecessors(b.id))


def test_too_few_chips_names_the_cores_budget(snn, tmp_path):
    t = load_target(tiny_target(tmp_path, neurons=100))
    with pytest.raises(DoesNotFit) as e:
        place(snn, t, 1, assumed_rates(snn))
    assert e.value.budget == "cores" and e.value.need > e.value.have == 8
    assert "--chips" in str(e.value)


def test_fan_in_beyond_any_core_is_named(snn, tmp_path):
    t = load_target(tiny_target(tmp_path, fan_in=50))  # one interior neuron alone reads 54
    with pytest.raises(DoesNotFit) as e:
        tile(snn, Connectivity(snn), t)
    assert e.value.budget == "fan_in" and "fan-in" in str(e.value)


def test_weight_sharing_stores_kernels_once(snn, tmp_path):
    speck = load_target("speck")
    rep = map_model(snn, speck, chips=1)
    second = [b for b in rep["blocks"] if b["layer"] == small_second(snn)]
    # the stored entries of a conv block with weight sharing: its output channels' kernel rows (6 x 3 x 3 each), plus the residual's elementwise weights
    assert all(b["synapses"] < b["connections"] for b in second)
    assert all(len(row["layers"]) == 1 for row in rep["cores"])  # Speck: one layer per core
    assert all(row["used"]["destinations"] <= 2 for row in rep["cores"])


def small_second(g):
    return [n.name for n in g.nodes if n.spec.has("neuron")][1]


def test_attention_graphs_are_refused_with_the_reason():
    from snnc.errors import DataError
    from _graphs import tiny_vit

    g = tiny_vit()
    run_passes(g, parse_pipeline("canonicalize,fold-bn,balance-thresholds{method=max},insert-if"), PassContext(calib=np.random.default_rng(0).normal(size=(16, *g.inputs[0].shape)).astype(np.float32)))
    with pytest.raises(DataError, match="host"):
        Connectivity(g)


@pytest.fixture(scope="module")
def artifact(snn, tmp_path_factory):
    from snnc.model import SpikingModel

    d = tmp_path_factory.mktemp("map")
    path = d / "m.snn"
    SpikingModel(snn=snn, ann=small_cnn(residual=True), provenance={"timesteps": 8}).save(path)
    np.savez(d / "x.npz", x=images(6, seed=4))
    return d, path


def test_cli_map_writes_placement_and_picture(artifact, tmp_path):
    d, path = artifact
    out = tmp_path / "p.json"
    r = CliRunner().invoke(main, ["map", str(path), "--target", tiny_target(tmp_path), "--chips", "2", "--data", str(d / "x.npz"), "-o", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "naive placement" in r.output and "spikes/step between cores" in r.output
    assert out.exists() and out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    import snnc

    placement = load_placement(out, snnc.load(path).snn)  # validates: blocks tile every layer exactly
    assert placement.raw["traffic"]["source"] == "measured"
    r = CliRunner().invoke(main, ["map", str(path), "--target", tiny_target(tmp_path), "--chips", "2", "--json", "-o", str(tmp_path / "q.json")])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["format"] == "snnc-placement" and doc["summary"]["cores_used"] >= 2


def test_cli_map_exits_2_naming_the_budget_and_writes_nothing(artifact, tmp_path):
    d, path = artifact
    out = tmp_path / "p.json"
    r = CliRunner().invoke(main, ["map", str(path), "--target", tiny_target(tmp_path, neurons=100), "--chips", "1", "-o", str(out)])
    assert r.exit_code == 2
    assert "does not fit 1" in r.output and "--chips" in r.output
    assert not out.exists() and not out.with_suffix(".png").exists()
    r = CliRunner().invoke(main, ["map", str(path), "--target", "nosuchchip", "-o", str(out)])
    assert r.exit_code == 2 and "loihi2" in r.output
    r = CliRunner().invoke(main, ["map", str(path), "--target", "loihi2", "--chips", "100000", "-o", str(out)])
    assert r.exit_code == 2 and "at most" in r.output
    with pytest.raises(DataError):
        assumed_rates(small_cnn(), 0.0)
