"""Placement files (snnc.mapping.placement_file) and their emulation on the Lava backends:
a network cut into blocks on chip cores gives exactly the unplaced run's outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _graphs import conv, finish, graph_with, images, neuron, rng
from click.testing import CliRunner

import snnc
from snnc.cli import main
from snnc.errors import BackendError, DataError
from snnc.ir import Graph, infer_shapes
from snnc.ir.serialize import load_artifact, save_artifact
from snnc.mapping import placement_file as pf
from snnc.mapping.placement_file import as_placement, graph_digest, layer_nodes, load_placement, placement_header, save_placement
from snnc.model import SpikingModel

X = images(8, seed=4, shape=(2, 8, 8)) * 2
STEPS = [3, 6]


def _float32(g: Graph) -> Graph:
    for n in g.nodes:
        for k, a in list(n.params.items()):
            n.set_param(k, a)
    return g


def residual_net() -> Graph:
    """conv-IF, conv-IF, add (per-channel coefficients), IF, readout [4, 8, 8]."""
    return _float32(graph_with("residual-add"))


def pooled_classifier() -> Graph:
    """conv-IF, spiking max pool, conv-IF (per-layer threshold), global pool, flatten, linear-IF,
    linear readout [6]: count-domain routing, an unplaced max pool and a 1-D readout."""
    r = rng(7)
    g = Graph("pooled_classifier", "snn")
    x = g.add_input("x", (2, 8, 8))
    h = neuron(g, conv(g, x, 4, 2, r, pads=[1, 1, 1, 1]), 4, r)
    h = g.add_node("spiking_max_pool", [h], {"kernel": [2, 2], "strides": [2, 2]}).output
    h = neuron(g, conv(g, h, 6, 4, r, pads=[1, 1, 1, 1]), 6, r, per="layer")
    h = g.add_node("global_avg_pool", [h], {"keepdims": False}).output
    h = g.add_node("linear", [h], {}, {"weight": r.normal(0, 0.8, (5, 6)), "bias": r.normal(0.2, 0.1, 5)}).output
    h = neuron(g, h, 5, r, per="layer")
    h = g.add_node("linear", [h], {}, {"weight": r.normal(0, 0.8, (6, 5)), "bias": r.normal(0, 0.1, 6)}).output
    return _float32(finish(g, h))


def ann_for(g: Graph) -> Graph:
    """Some ANN with ``g``'s input and output shapes (the artifact's comparison baseline)."""
    r = rng(9)
    a = Graph(g.name, "ann")
    (shape,) = [v.shape for v in g.inputs]
    h = a.add_node("global_avg_pool", [a.add_input("x", shape)], {"keepdims": False}).output
    out = g.outputs[0].shape[0]
    a.set_outputs([a.add_node("linear", [h], {}, {"weight": r.normal(0, 1, (out, shape[0])), "bias": np.zeros(out)}).output])
    infer_shapes(a)
    return _float32(a)


def cut(g: Graph, *, chips: int = 2, same_core: bool = False) -> dict:
    """A hand-made placement: every layer of >= 2 channels in 3 blocks (half the channels;
    the other half cut in two along the next axis), a 1-D layer in 2; cores dealt in turn
    over ``chips`` chips (``same_core``: every block of a layer on one core)."""
    blocks, slot = [], 0
    for n in layer_nodes(g):
        shape = list(n.output.shape)
        whole = [[0, d] for d in shape]
        if len(shape) >= 2 and shape[0] >= 2:
            c, h = shape[0] // 2, shape[1] // 2
            boxes = [[[0, c], *whole[1:]], [[c, shape[0]], [0, h], *whole[2:]], [[c, shape[0]], [h, shape[1]], *whole[2:]]]
        elif shape[0] >= 2:
            boxes = [[[0, shape[0] // 2]], [[shape[0] // 2, shape[0]]]]
        else:
            boxes = [whole]
        for j, box in enumerate(boxes):
            blocks.append({"id": f"{n.name}#{j}", "layer": n.name, "slices": box, "chip": slot % chips, "core": slot // chips, "neurons": 1})
            if not same_core:
                slot += 1
        slot += same_core
    return {**placement_header(g, "loihi2", chips), "blocks": blocks, "cores": [{"note": "kept"}], "links": [], "summary": {"x": 1}}


# ------------------------------------------------------------------- the file
def test_digest_is_stable_across_save_and_load_and_sees_every_change(tmp_path):
    g = residual_net()
    d = graph_digest(g)
    assert d.startswith("sha256:") and len(d) == 71 and graph_digest(g.clone()) == d
    save_artifact(tmp_path / "a.snn", {"snn": g}, {"timesteps": 4})
    graphs, _ = load_artifact(tmp_path / "a.snn")
    assert graph_digest(graphs["snn"]) == d
    g.meta["notices"] = ["imported from somewhere"]  # metadata is not the network
    assert graph_digest(g) == d
    changed = g.clone()
    w = changed.nodes[0].params["weight"].copy()
    w.flat[0] = np.nextafter(w.flat[0], np.float32(np.inf))
    changed.nodes[0].set_param("weight", w)
    assert graph_digest(changed) != d
    th = g.clone()
    th.find("if_neuron")[0].attrs["reset"] = "zero"
    assert graph_digest(th) != d


def test_save_and_load_round_trip_keeps_the_mappers_report(tmp_path):
    g = residual_net()
    data = cut(g)
    data["blocks"][0]["fan_in"] = np.int64(7)  # numpy numbers from the mapper are written as JSON numbers
    save_placement(tmp_path / "p.json", data)
    text = (tmp_path / "p.json").read_text()
    assert text.lstrip().startswith('{\n "format": "snnc-placement",\n "version": 1')
    p = load_placement(tmp_path / "p.json", g)
    assert list(p.layers) == [n.name for n in layer_nodes(g)]
    first = p.layers[layer_nodes(g)[0].name]
    assert [b.slices for b in first] == [((0, 2), (0, 8), (0, 8)), ((2, 4), (0, 4), (0, 8)), ((2, 4), (4, 8), (0, 8))]
    assert first[1].box == (slice(2, 4), slice(0, 4), slice(0, 8)) and first[1].size == 64
    assert p.raw["cores"] == [{"note": "kept"}] and p.raw["summary"] == {"x": 1} and p.raw["blocks"][0]["fan_in"] == 7
    assert len(p.cores) == len(p.blocks) and p.chips == {0, 1}
    assert [n.op for n in layer_nodes(g)] == ["if_neuron", "if_neuron", "if_neuron", "readout"]
    with pytest.raises(DataError, match="with version 2"):
        save_placement(tmp_path / "q.json", {**data, "version": 2})
    assert not (tmp_path / "q.json").exists()


def _load_edited(tmp_path, g, edit, raw: bytes | None = None):
    data = cut(g)
    edit(data)
    path = tmp_path / "p.json"
    path.write_bytes(raw if raw is not None else json.dumps(data).encode())
    return load_placement(path, g)


def _set(path, value):
    def edit(data):
        obj = data
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set(["format"], "snnc-artifact"), "is not a snnc placement file"),
        (_set(["version"], 2), "has version 2; this snnc reads version 1"),
        (_set(["version"], True), "has version True"),
        (_set(["model", "digest"], "sha256:" + "0" * 64), "was made for another model/graph .*re-run snnc map on this artifact"),
        (_set(["model"], None), "model: expected an object, got None"),
        (_set(["target", "chips"], 0), "target.chips: expected a positive integer, got 0"),
        (_set(["blocks"], {}), "blocks: expected a list"),
        (_set(["blocks", 0, "layer"], "nowhere"), "on layer 'nowhere', which is not in the graph"),
        (_set(["blocks", 0, "chip"], -1), r"blocks\[0\] \(.*\)\.chip: expected an integer from 0"),
        (_set(["blocks", 0, "core"], 1.0), r"\.core: expected an integer from 0 .*got 1\.0"),
        (_set(["blocks", 0, "core"], True), r"\.core: expected an integer .*got True"),
        (_set(["blocks", 0, "chip"], 2), "chip 2 on a target of 2 chip"),
        (_set(["target", "cores_per_chip"], 4), r"blocks\[8\] \('if_neuron_2#2'\)\.core: core 4 on a chip of 4 cores"),
        (_set(["blocks", 0, "id"], ""), "id: expected a non-empty string"),
        (_set(["blocks", 1, "id"], "if_neuron#0"), r"blocks\[0\] and blocks\[1\] have the same id 'if_neuron#0'"),
        (_set(["blocks", 0, "slices"], [[0, 2], [0, 8]]), r"slices: expected a list of 3 \[lo, hi\] pairs"),
        (_set(["blocks", 0, "slices"], [[0, 2], [0, 9], [0, 8]]), r"slices\[1\]: expected \[lo, hi\] with 0 <= lo < hi <= 8"),
        (_set(["blocks", 0, "slices"], [[2, 2], [0, 8], [0, 8]]), r"slices\[0\]: expected \[lo, hi\]"),
        (_set(["blocks", 0, "slices"], [[0, 2], [0, 8], [0, "8"]]), r"slices\[2\]: expected \[lo, hi\]"),
        (_set(["blocks", 0, "slices"], [[0, 3], [0, 8], [0, 8]]), r"blocks 'if_neuron#0' and 'if_neuron#1' of layer 'if_neuron' overlap, e.g. at element \[2, 0, 0\]"),
        (_set(["blocks", 0, "slices"], [[0, 1], [0, 8], [0, 8]]), r"leave 64 of its 256 elements out, e.g. element \[1, 0, 0\]"),
        (lambda d: d.update(blocks=[b for b in d["blocks"] if b["layer"] != "readout"]), "places no block of layer\\(s\\) 'readout'"),
    ],
)
def test_every_malformed_placement_is_a_clear_data_error(tmp_path, edit, message):
    with pytest.raises(DataError, match=message):
        _load_edited(tmp_path, residual_net(), edit)


def test_a_block_on_a_node_that_is_no_layer(tmp_path):
    g = residual_net()
    add = g.find("add")[0].name
    with pytest.raises(DataError, match=f"on layer '{add}', which is not a layer \\(a neuron or readout node\\)"):
        _load_edited(tmp_path, g, _set(["blocks", 0, "layer"], add))


def test_unreadable_files_are_clear_data_errors(tmp_path, monkeypatch):
    g = residual_net()
    cases = [
        (b"{not json", "is not valid JSON"),
        (b'{"format": "snnc-placement", "format": "x"}', "duplicate key 'format'"),
        (b"[" * 100 + b"]" * 100, "nests more than 32 levels"),
        (b"\xff\xfe", "not UTF-8 text"),
        (b"[1, 2]", "the file: expected a JSON object"),
    ]
    for raw, message in cases:
        with pytest.raises(DataError, match=message):
            _load_edited(tmp_path, g, lambda d: None, raw)
    with pytest.raises(DataError, match="does not exist; write one with `snnc map`"):
        load_placement(tmp_path / "missing.json", g)
    with pytest.raises(DataError, match="is a directory"):
        load_placement(tmp_path, g)
    monkeypatch.setattr(pf, "MAX_PLACEMENT_BYTES", 100)
    with pytest.raises(DataError, match="is 1,[0-9]+ bytes, more than the 100 bytes it may have"):
        _load_edited(tmp_path, g, lambda d: None)


# ----------------------------------------------------------------- emulation
try:
    from snnc.backend import get_backend

    lava, lava_fixed = get_backend("lava"), get_backend("lava-fixed")
except BackendError:  # lava-nc or the snnc-lava package is missing
    lava = lava_fixed = None
needs_lava = pytest.mark.skipif(lava is None, reason="Lava backends unavailable")


@needs_lava
@pytest.mark.parametrize("build", [residual_net, pooled_classifier])
def test_placed_run_equals_the_unplaced_run_exactly(build):
    g = build()
    placement = cut(g)
    for be in (lava_fixed, lava):
        plain = be.run(g, X, STEPS, batch_size=4)  # two sample batches: every core resets
        placed = be.run(g, X, STEPS, batch_size=4, placement=as_placement(placement, g))
        for t in STEPS:
            if be is lava_fixed:
                assert np.array_equal(placed.output(t), plain.output(t)), t
            else:
                np.testing.assert_allclose(placed.output(t), plain.output(t), rtol=0, atol=1e-6)
        assert placed.spike_rates == plain.spike_rates
        assert max(plain.spike_rates.values()) > 0.05  # the layers do fire
        info = placed.details["placement"]
        on_cores = len(placement["blocks"])
        pools = len(g.find("spiking_max_pool"))
        assert info["blocks"] == on_cores and info["cores"] == on_cores and info["chips"] == 2
        assert info["processes"] == on_cores + pools + info["routers"] == placed.details["lava"]["processes"]
        assert info["routers"] == sum(1 for n in layer_nodes(g) if sum(b["layer"] == n.name for b in placement["blocks"]) > 1 and not n.spec.has("readout"))
        assert info["not_on_cores"] == [n.name for n in g.find("spiking_max_pool")] and info["host_layers"] == []
        if be is lava_fixed:
            assert placed.details["deployment"] == plain.details["deployment"]


@needs_lava
def test_blocks_sharing_a_core_and_one_chip():
    g = residual_net()
    placement = cut(g, chips=1, same_core=True)
    plain = lava_fixed.run(g, X[:4], [5])
    placed = lava_fixed.run(g, X[:4], [5], placement=as_placement(placement, g))
    assert np.array_equal(placed.output(5), plain.output(5)) and placed.spike_rates == plain.spike_rates
    info = placed.details["placement"]
    assert (info["blocks"], info["cores"], info["chips"]) == (len(placement["blocks"]), len(layer_nodes(g)), 1)


@needs_lava
def test_placements_are_checked_before_running_and_refused_elsewhere(tmp_path):
    g, other = pooled_classifier(), residual_net()
    with pytest.raises(DataError, match="made for another model/graph"):
        lava_fixed.run(g, X[:2], [2], placement=as_placement(cut(other), g))
    sm = SpikingModel(g, ann_for(g), {"timesteps": 4})
    with pytest.raises(BackendError, match="backend 'reference' cannot run a placement"):
        sm.simulate(X[:2], 2, placement=cut(g))
    save_placement(tmp_path / "p.json", cut(g))
    res = snnc.evaluate(sm, X[:4], timesteps=[4], backend="lava-fixed", placement=tmp_path / "p.json")
    plain = snnc.evaluate(sm, X[:4], timesteps=[4], backend="lava-fixed")
    assert res["results"] == plain["results"] and res["details"]["placement"]["cores"] == len(cut(g)["blocks"])


# ----------------------------------------------------------------------- CLI
@needs_lava
def test_eval_placement_flag(tmp_path):
    g = pooled_classifier()
    sm = SpikingModel(g, ann_for(g), {"timesteps": 4})
    art = tmp_path / "m.snn"
    sm.save(art)
    np.savez(tmp_path / "d.npz", x=X[:4])
    save_placement(tmp_path / "p.json", cut(g))
    runner = CliRunner()
    base = ["eval", str(art), "--data", str(tmp_path / "d.npz"), "-T", "4", "--no-progress"]
    res = runner.invoke(main, [*base, "--backend", "lava-fixed", "--placement", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    assert "placement p.json (loihi2): 10 blocks on 10 cores of 2 chip(s), 14 Lava processes (3 of them routers gathering a cut layer); not on a core: spiking_max_pool" in res.output
    res = runner.invoke(main, [*base, "--backend", "lava-fixed", "--placement", str(tmp_path / "p.json"), "--json"])
    assert json.loads(res.output)["details"]["placement"]["chips"] == 2
    res = runner.invoke(main, [*base, "--placement", str(tmp_path / "p.json")])
    assert res.exit_code == 2 and "--placement runs only on the lava and lava-fixed backends (got --backend reference)" in res.output
    save_placement(tmp_path / "other.json", cut(residual_net()))
    res = runner.invoke(main, [*base, "--backend", "lava", "--placement", str(tmp_path / "other.json")])
    assert res.exit_code == 2 and "re-run snnc map on this artifact" in res.output
    res = runner.invoke(main, [*base, "--backend", "lava", "--placement", str(tmp_path / "nope.json")])
    assert res.exit_code == 2 and "does not exist" in res.output
