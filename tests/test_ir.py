"""The IR keeps its invariants; the verifiers catch broken graphs; artifacts round-trip."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
from _graphs import conv_params, images, small_cnn

from snnc.errors import ArtifactError, VerificationError
from snnc.ir import Graph, all_ops, format_graph, infer_shapes, run_ann, verify
from snnc.ir.serialize import load_artifact, save_artifact


def test_use_lists_follow_rewrites():
    g = small_cnn()
    conv1 = g.node("conv1")
    bn1 = g.node("bn1")
    assert [n for n, _ in conv1.output.uses] == [bn1]
    g.replace_all_uses(bn1.output, conv1.output)
    assert g.node("relu1") in conv1.output.users
    assert bn1.output.uses == ()
    g.remove_node(bn1)
    assert conv1.output.users == [g.node("relu1")]
    verify(g)


def test_remove_node_with_users_is_refused():
    g = small_cnn()
    with pytest.raises(VerificationError, match="still read by bn1"):
        g.remove_node(g.node("conv1"))


def test_toposort_restores_order_and_verifier_catches_disorder():
    g = small_cnn()
    g.nodes.reverse()
    with pytest.raises(VerificationError, match="before it is defined"):
        verify(g)
    g.toposort()
    verify(g)


def test_verifier_catches_stale_use_list_and_missing_param():
    g = small_cnn()
    g.node("relu1").output._uses.clear()
    with pytest.raises(VerificationError, match="stale"):
        verify(g)
    g = small_cnn()
    del g.node("conv1").params["bias"]
    with pytest.raises(VerificationError, match="required parameter 'bias'"):
        verify(g)


def test_snn_verifier_requires_converted_graph():
    g = small_cnn()
    with pytest.raises(VerificationError, match="'batch_norm' is not allowed in the SNN stage .*fold-bn"):
        verify(g, "snn")


def test_clone_shares_nothing():
    g = small_cnn()
    h = g.clone()
    h.node("conv1").params["weight"][:] = 0
    assert np.abs(g.node("conv1").params["weight"]).sum() > 0
    x = images(3)
    np.testing.assert_array_equal(run_ann(g, x)[0], run_ann(g.clone(), x)[0])


def test_unknown_op_fails_early():
    g = Graph()
    x = g.add_input("x", (3,))
    with pytest.raises(VerificationError, match="unknown IR op 'sigmoid'"):
        g.add_node("sigmoid", [x])


def test_every_op_has_a_spec_docstring():
    for name, spec in all_ops().items():
        assert spec.doc, name
        assert spec.stages <= {"ann", "snn"}


def _snn_graph_with_every_op() -> Graph:
    r = np.random.default_rng(0)
    g = Graph("all_ops", "snn")
    x = g.add_input("x", (2, 8, 8))
    a = g.add_node("affine", [x], params={"scale": np.full((2, 1, 1), 2.0), "shift": np.full((2, 1, 1), -1.0)}).output
    c = g.add_node("conv", [a], {"pads": [1, 1, 1, 1], "groups": 2}, conv_params(r, 4, 1)).output
    s = g.add_node("if_neuron", [c], {}, {"threshold": np.full((4, 1, 1), 0.7), "v_init": np.full((4, 1, 1), 0.35)}).output
    m = g.add_node("spiking_max_pool", [s], {"kernel": [2, 2]}).output
    u = g.add_node("upsample", [m], {"scales": [2, 2]}).output
    u = g.add_node("pad", [u], {"pads": [1, 0, 0, 1]}).output
    t = g.add_node("conv_transpose", [u], {"strides": [1, 1]}, {"weight": r.normal(size=(4, 2, 3, 3)), "bias": np.zeros(2)}).output
    q = g.add_node("avg_pool", [t], {"kernel": [2, 2], "strides": [2, 2]}).output
    cat = g.add_node("concat", [q, q], {"axis": 1}).output
    ad = g.add_node("add", [cat, cat], {"coeffs": [[1.0], [0.5]]}).output
    gp = g.add_node("global_avg_pool", [ad], {"keepdims": True}).output
    rs = g.add_node("reshape", [gp], {"shape": [4]}).output
    li = g.add_node("linear", [rs], {}, {"weight": r.normal(size=(3, 4)), "bias": np.zeros(3)}).output
    ro = g.add_node("readout", [li]).output
    g.set_outputs([ro])
    infer_shapes(g)
    return g


def test_artifact_round_trip_every_op(tmp_path):
    g = _snn_graph_with_every_op()
    verify(g)
    ann = small_cnn()
    path = tmp_path / "m.snn"
    save_artifact(path, {"snn": g, "ann": ann}, {"timesteps": 8, "note": "x"})
    graphs, manifest = load_artifact(path)
    assert manifest["provenance"] == {"timesteps": 8, "note": "x"}
    assert format_graph(graphs["snn"]) == format_graph(g)
    assert format_graph(graphs["ann"]) == format_graph(ann)
    for n, m in zip(g.nodes, graphs["snn"].nodes):
        assert n.params.keys() == m.params.keys()
        for k in n.params:
            np.testing.assert_array_equal(n.params[k], m.params[k])
    with zipfile.ZipFile(path) as zf:  # weights are plain npz: readable without pickle
        assert set(zf.namelist()) == {"manifest.json", "weights.npz"}


def test_artifact_errors(tmp_path):
    bad = tmp_path / "bad.snn"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="not a snnc artifact"):
        load_artifact(bad)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "missing.snn")
    path = tmp_path / "m.snn"
    save_artifact(path, {"ann": small_cnn()}, {})
    import json

    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        weights = zf.read("weights.npz")
    manifest["format_version"] = 99
    newer = tmp_path / "newer.snn"
    with zipfile.ZipFile(newer, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("weights.npz", weights)
    with pytest.raises(ArtifactError, match="format version 99"):
        load_artifact(newer)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    from snnc.utils.io import atomic_write

    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write(b"partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_atomic_write_gives_the_usual_file_permissions(tmp_path):
    from snnc.utils import io

    io.write_json(tmp_path / "r.json", {"a": 1})
    assert (os.stat(tmp_path / "r.json").st_mode & 0o777) == 0o666 & ~io._UMASK  # not mkstemp's 0600
    os.chmod(tmp_path / "r.json", 0o600)  # a file the user made private stays private
    io.write_json(tmp_path / "r.json", {"a": 2})
    assert (os.stat(tmp_path / "r.json").st_mode & 0o777) == 0o600
