"""Each pass: structure on hand-built graphs, numerical equivalence, options and registry."""

from __future__ import annotations

import re

import numpy as np
import pytest
from _graphs import bn_params, conv_params, images, rng, small_cnn

from snnc.errors import CalibrationError, PassError
from snnc.ir import Graph, infer_shapes, run_ann, verify
from snnc.passes import PassContext, default_pipeline, format_pipeline, parse_pipeline, registered_passes, run_passes
from snnc.passes.balance import mse_from_hist, quantise


def run(graph, pipeline, calib=None, **ctx):
    context = PassContext(calib=calib, **ctx)
    results = run_passes(graph, parse_pipeline(pipeline), context)
    return results, context


# ------------------------------------------------------------------ registry
def test_registry_names_docs_and_options():
    passes = registered_passes()
    assert {"canonicalize", "fold-bn", "balance-thresholds", "insert-if"} <= set(passes)
    for name, cls in passes.items():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", name)
        assert "After" in cls.__doc__ or "after" in cls.__doc__
    p = parse_pipeline("fold-bn, balance-thresholds{method=max granularity=layer},insert-if{v-init=zero}")
    assert [x.name for x in p] == ["fold-bn", "balance-thresholds", "insert-if"]
    assert p[1].options.method == "max" and p[1].options.granularity == "layer"
    assert p[2].options.v_init == "zero"
    assert format_pipeline(p) == "fold-bn,balance-thresholds{method=max granularity=layer},insert-if{v-init=zero}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("fold-bn,nope", "unknown pass 'nope'; available passes: "),
        ("balance-thresholds{method=median}", "option 'method' of pass 'balance-thresholds' must be one of max, percentile, mse"),
        ("balance-thresholds{percentile=high}", "option 'percentile' of pass 'balance-thresholds' must be float"),
        ("insert-if{colour=red}", "pass 'insert-if' has no option 'colour'"),
        ("fold-bn{", "missing '}'"),
    ],
)
def test_pipeline_errors(text, message):
    with pytest.raises(PassError, match=re.escape(message)):
        parse_pipeline(text)


def test_default_pipeline_threshold_syntax():
    assert "percentile=99.9" in default_pipeline("percentile:99.9")
    assert "method=mse" in default_pipeline("mse", "channel")
    assert parse_pipeline(default_pipeline())[2].options.method == "percentile"  # the default: 98th percentile, per channel
    with pytest.raises(PassError, match="is not one of: max, mse, percentile:P"):
        default_pipeline("max:3")


def test_stage_requirement_is_reported():
    g = small_cnn()
    with pytest.raises(PassError, match="needs a graph in the ANN stage.*after canonicalize, fold-bn, balance-thresholds, insert-if"):
        run(g, "canonicalize,fold-bn,balance-thresholds,insert-if,fold-bn", calib=images(16))


def test_verification_failure_names_the_pass(monkeypatch):
    from snnc.passes.canonicalize import Canonicalize

    def broken(self, graph, ctx):
        graph.node("relu1").output._uses.clear()
        return True

    monkeypatch.setattr(Canonicalize, "run", broken)
    with pytest.raises(PassError, match="verification failed after pass 'canonicalize'.*stale"):
        run(small_cnn(), "fold-bn,canonicalize")


def test_print_after_each_pass():
    seen = []
    run_passes(small_cnn(), parse_pipeline("canonicalize,fold-bn"), PassContext(), print_after=lambda n, t: seen.append((n, t)))
    assert [n for n, _ in seen] == ["canonicalize", "fold-bn"]
    assert "batch_norm" in seen[0][1] and "batch_norm" not in seen[1][1]


# ------------------------------------------------------------------- fold-bn
def test_fold_bn_structure_and_equivalence():
    g = small_cnn(residual=True)
    x = images(8)
    before = run_ann(g, x)[0]
    (res,), _ = run(g, "fold-bn")
    assert res.changed
    assert not g.find("batch_norm") and not g.find("affine")
    np.testing.assert_allclose(run_ann(g, x)[0], before, rtol=1e-5, atol=1e-5)


def _bn_after(op: str, groups: int = 1) -> Graph:
    r = rng(3)
    g = Graph(op)
    if op == "linear":
        x = g.add_input("x", (5,))
        h = g.add_node("linear", [x], {}, {"weight": r.normal(size=(4, 5)), "bias": r.normal(size=4)}).output
        c = 4
    elif op == "conv_transpose":
        x = g.add_input("x", (4, 5, 5))
        h = g.add_node("conv_transpose", [x], {"strides": [2, 2], "groups": groups}, {"weight": r.normal(size=(4, 6 // groups, 3, 3)), "bias": r.normal(size=6)}).output
        c = 6
    elif op == "conv1d":
        x = g.add_input("x", (3, 9))
        h = g.add_node("conv", [x], {"pads": [1, 1]}, conv_params(r, 4, 3, nd=1)).output
        c = 4
    else:  # input normalisation BN: not after a layer
        x = g.add_input("x", (3, 5, 5))
        h = x
        c = 3
    h = g.add_node("batch_norm", [h], {"epsilon": 1e-3}, bn_params(r, c), "bn").output
    g.set_outputs([h])
    infer_shapes(g)
    verify(g)
    return g


@pytest.mark.parametrize("op, groups", [("linear", 1), ("conv_transpose", 1), ("conv_transpose", 2), ("conv1d", 1), ("input", 1)])
def test_fold_bn_variants(op, groups):
    g = _bn_after(op, groups)
    x = rng(4).normal(size=(6, *g.inputs[0].shape)).astype(np.float32)
    before = run_ann(g, x)[0]
    run(g, "fold-bn")
    assert not g.find("batch_norm")
    assert bool(g.find("affine")) == (op == "input")
    np.testing.assert_allclose(run_ann(g, x)[0], before, rtol=1e-4, atol=1e-5)


def test_fold_bn_declines_when_conv_output_is_shared():
    g = small_cnn()
    conv1 = g.node("conv1")
    extra = g.add_node("relu", [conv1.output], name="side")
    g.set_outputs([*g.outputs, extra.output])
    infer_shapes(g)
    x = images(4)
    before = run_ann(g, x)
    run(g, "fold-bn")
    assert g.node("bn1_affine")  # declined: conv1 also feeds 'side'
    for a, b in zip(run_ann(g, x), before):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------- canonicalize
def test_canonicalize_strips_identity_dropout_postprocessing():
    g = small_cnn(bn=False)
    fc = g.node("fc")
    d = g.add_node("dropout", [g.node("gap").output], name="drop", shape=(6,), before=fc)
    g.set_input(fc, 0, d.output)
    sm = g.add_node("softmax", [fc.output], {"axis": 1}, shape=(4,))
    am = g.add_node("argmax", [fc.output], {"axis": 1}, shape=())
    g.set_outputs([sm.output, am.output])
    verify(g)
    x = images(5)
    logits = run_ann(small_cnn(bn=False), x)[0]
    _, ctx = run(g, "canonicalize")
    assert {n.op for n in g.nodes}.isdisjoint({"dropout", "softmax", "argmax"})
    assert [v.name for v in g.outputs] == ["fc"]
    assert any("softmax" in n for n in ctx.notices) and any("argmax" in n for n in ctx.notices)
    np.testing.assert_allclose(run_ann(g, x)[0], logits, rtol=1e-6)


def test_canonicalize_merges_affines_and_reshapes():
    g = Graph()
    x = g.add_input("x", (2, 3, 3))
    a = g.add_node("affine", [x], params={"scale": np.array([[[2.0]], [[3.0]]]), "shift": np.zeros((2, 1, 1))}).output
    b = g.add_node("affine", [a], params={"scale": np.array(0.5), "shift": np.array(-1.0)}).output
    r1 = g.add_node("reshape", [b], {"shape": [2, 9]}).output
    r2 = g.add_node("reshape", [r1], {"shape": [18]}).output
    r3 = g.add_node("reshape", [r2], {"shape": [18]}).output
    g.set_outputs([r3])
    infer_shapes(g)
    xs = rng(1).normal(size=(3, 2, 3, 3)).astype(np.float32)
    before = run_ann(g, xs)[0]
    run(g, "canonicalize")
    assert [n.op for n in g.nodes] == ["affine", "reshape"]
    np.testing.assert_allclose(run_ann(g, xs)[0], before, rtol=1e-6)


# -------------------------------------------------------- balance-thresholds
def _relu_outputs(graph, x, name):
    from snnc.ir.executor import Interpreter

    seen = []
    Interpreter(graph).run(__import__("torch").from_numpy(x), observe=lambda n, o: seen.append(o.numpy()), watch=[graph.node(name)])
    return seen[0]


@pytest.mark.parametrize("method", ["max", "percentile", "mse"])
def test_balance_thresholds_layer(method):
    g = small_cnn()
    x = images(40)
    before = run_ann(g, x)[0]
    _, ctx = run(g, f"fold-bn,balance-thresholds{{method={method} percentile=99.5 granularity=layer}}", calib=x, timesteps=8, batch_size=16)
    a = _relu_outputs(g, x, "relu2")
    theta = float(g.node("relu2").params["threshold"])
    if method == "max":
        assert theta == pytest.approx(a.max(), rel=1e-6)
    elif method == "percentile":
        assert theta == pytest.approx(np.percentile(a[a > 0], 99.5, method="inverted_cdf"), rel=1e-3, abs=2 * float(a.max()) / 4096)
    else:  # brute force on the raw activations, same candidate grid
        m = a.max()
        errs = [np.mean((a - quantise(a, m * (1 - 0.01 * i), 8, 0.5)) ** 2) for i in range(95)]
        best = m * (1 - 0.01 * int(np.argmin(errs)))
        assert np.mean((a - quantise(a, theta, 8, 0.5)) ** 2) <= min(errs) * 1.02
        assert theta == pytest.approx(best, rel=0.05)
    np.testing.assert_allclose(run_ann(g, x)[0], before, rtol=1e-4, atol=1e-5)  # ANN unchanged
    assert set(ctx.records["balance-thresholds"]["layers"]) == {"relu1", "relu2"}


def test_balance_thresholds_channel_and_batch_independence():
    x = images(33)
    thetas = []
    for bs in (5, 64):
        g = small_cnn()
        run(g, "fold-bn,balance-thresholds{method=percentile percentile=99.99 granularity=channel}", calib=x, batch_size=bs)
        thetas.append(g.node("relu1").params["threshold"])
    assert thetas[0].shape == (6, 1, 1)
    np.testing.assert_array_equal(thetas[0], thetas[1])
    a = _relu_outputs(g, x, "relu1")
    for c in range(6):
        pos = a[:, c][a[:, c] > 0]
        assert thetas[0][c, 0, 0] == pytest.approx(np.percentile(pos, 99.99, method="inverted_cdf"), rel=1e-3, abs=2 * float(pos.max()) / 4096)


def test_balance_thresholds_respects_relu_max_and_needs_data():
    g = small_cnn()
    g.node("relu1").attrs["max"] = 0.05
    run(g, "fold-bn,balance-thresholds{method=max granularity=layer}", calib=images(8))
    assert float(g.node("relu1").params["threshold"]) == pytest.approx(0.05)
    with pytest.raises(CalibrationError, match="needs calibration data"):
        run(small_cnn(), "balance-thresholds")


def test_mse_search_prefers_lower_threshold_for_heavy_tail():
    hist = np.zeros(1000)
    hist[:100] = 1000  # bulk near zero
    hist[-1] = 1  # one outlier at the max
    assert mse_from_hist(hist, 10.0, timesteps=8, offset=0.5) < 6.0


# ------------------------------------------------------------------ insert-if
def test_insert_if_structure():
    g = small_cnn(maxpool=True)
    run(g, "canonicalize,fold-bn,balance-thresholds,insert-if", calib=images(16))
    assert g.stage == "snn"
    ops = [n.op for n in g.nodes]
    assert "relu" not in ops and "max_pool" not in ops and "spiking_max_pool" in ops
    for n in g.find("if_neuron"):
        np.testing.assert_allclose(n.params["v_init"], n.params["threshold"] / 2)
        assert n.attr("reset") == "subtract"
    assert [v.producer.op for v in g.outputs] == ["readout"]
    verify(g, "snn")


def test_insert_if_maxpool_avg_is_announced_and_threshold_required():
    g = small_cnn(maxpool=True)
    _, ctx = run(g, "fold-bn,balance-thresholds,insert-if{maxpool=avg v-init=zero}", calib=images(16))
    assert "avg_pool" in [n.op for n in g.nodes]
    assert any("treated as average pooling" in n for n in ctx.notices)
    assert all(np.all(n.params["v_init"] == 0) for n in g.find("if_neuron"))
    with pytest.raises(PassError, match="ReLU 'relu1' has no threshold; run balance-thresholds first"):
        run(small_cnn(), "fold-bn,insert-if")


# ----------------------------------------------------------- normalize-weights
@pytest.mark.parametrize("residual, maxpool, granularity", [(True, False, "layer"), (True, True, "channel"), (False, False, "channel")])
def test_normalize_weights_binary_spikes_same_function(residual, maxpool, granularity):
    from snnc.simulator import simulate

    x = images(24)
    g = small_cnn(residual=residual, maxpool=maxpool)
    run(g, f"canonicalize,fold-bn,balance-thresholds{{granularity={granularity}}},insert-if", calib=x)
    weighted = simulate(g, x, 16).output(16)
    h = g.clone()
    (res,), _ = run(h, "normalize-weights")
    assert res.changed
    assert all(n.attr("spike_scale") == "unit" for n in h.find("if_neuron"))
    if residual:  # the residual add now rescales its branches
        assert h.node("add").attr("coeffs") is not None
    binary = simulate(h, x, 16).output(16)
    np.testing.assert_allclose(binary, weighted, atol=1e-4 * np.abs(weighted).max())


def test_normalize_weights_concat_and_flatten():
    from snnc.simulator import simulate

    r = rng(7)
    g = Graph("cat")
    x = g.add_input("x", (2, 6, 6))
    a = g.add_node("relu", [g.add_node("conv", [x], {"pads": [1, 1, 1, 1]}, conv_params(r, 3, 2)).output], name="ra").output
    b = g.add_node("relu", [g.add_node("conv", [x], {"pads": [1, 1, 1, 1]}, conv_params(r, 4, 2)).output], name="rb").output
    c = g.add_node("concat", [a, b], {"axis": 1}).output
    p = g.add_node("avg_pool", [c], {"kernel": [2, 2]}).output
    f = g.add_node("reshape", [p], {"shape": [63]}).output
    g.set_outputs([g.add_node("linear", [f], {}, {"weight": r.normal(size=(3, 63)), "bias": np.zeros(3)}).output])
    infer_shapes(g)
    xs = images(16, shape=(2, 6, 6))
    run(g, "balance-thresholds{granularity=channel},insert-if", calib=xs)
    before = simulate(g, xs, 8).output(8)
    run(g, "normalize-weights")
    assert not g.find("affine")  # every scale folded into the linear layer's columns
    np.testing.assert_allclose(simulate(g, xs, 8).output(8), before, atol=1e-4 * np.abs(before).max())
