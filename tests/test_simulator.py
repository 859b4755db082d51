"""The reference simulator implements the op docstrings' equations exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _graphs import images, small_cnn

from snnc.ir import Graph, infer_shapes, run_ann, verify
from snnc.passes import PassContext, parse_pipeline, run_passes
from snnc.simulator import simulate


def neuron_graph(theta, v_init, n: int = 7, reset: str = "subtract", spike_scale: str = "threshold") -> Graph:
    g = Graph("neuron", "snn")
    x = g.add_input("x", (n,))
    s = g.add_node("if_neuron", [x], {"reset": reset, "spike_scale": spike_scale}, {"threshold": np.asarray(theta), "v_init": np.asarray(v_init)}).output
    g.set_outputs([g.add_node("readout", [s]).output])
    infer_shapes(g)
    verify(g)
    return g


@pytest.mark.parametrize("T", [1, 4, 7, 32, 64])
@pytest.mark.parametrize("theta", [0.5, 1.0, 2.3])
def test_constant_input_quantisation_identity(T, theta):
    z = np.linspace(-0.5, 1.3 * theta, 41, dtype=np.float32)[None, :]
    g = neuron_graph(theta, theta / 2, n=z.shape[1])
    out = simulate(g, z, T).output(T)
    expected = (theta / T) * np.floor(np.clip((z * T + theta / 2) / theta, 0, T))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def _manual(z_seq, theta, v0, reset):
    v = np.full(z_seq.shape[1:], v0, dtype=np.float64)
    spikes = []
    for z in z_seq:
        v = v + z
        s = (v >= theta).astype(np.float64)
        v = v - theta * s if reset == "subtract" else v * (1 - s)
        spikes.append(s)
    return np.array(spikes)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_neuron_matches_hand_loop_on_time_varying_input(reset):
    r = np.random.default_rng(0)
    T, n = 16, 9
    # A time-varying input: the spikes of a first neuron layer fed to a second.
    g = Graph("two", "snn")
    x = g.add_input("x", (n,))
    s1 = g.add_node("if_neuron", [x], {"spike_scale": "unit"}, {"threshold": np.array(0.3), "v_init": np.array(0.0)}).output
    s2 = g.add_node("if_neuron", [s1], {"reset": reset, "spike_scale": "unit"}, {"threshold": np.array(1.7), "v_init": np.array(0.2)}).output
    g.set_outputs([g.add_node("readout", [s2]).output])
    infer_shapes(g)
    z = r.uniform(0, 0.5, (1, n)).astype(np.float32)
    first = _manual(np.repeat(z, T, 0), 0.3, 0.0, "subtract")
    second = _manual(first, 1.7, 0.2, reset)
    np.testing.assert_allclose(simulate(g, z, T).output(T)[0], second.mean(0), atol=1e-6)


def test_per_channel_thresholds_and_spike_rates():
    theta = np.array([[0.5], [1.0], [2.0]], dtype=np.float32)  # [C, 1]
    g = Graph("pc", "snn")
    x = g.add_input("x", (3, 4))
    s = g.add_node("if_neuron", [x], {}, {"threshold": theta, "v_init": theta / 2}).output
    g.set_outputs([g.add_node("readout", [s]).output])
    infer_shapes(g)
    z = np.full((2, 3, 4), 0.5, dtype=np.float32)
    res = simulate(g, z, 8)
    expected = (theta / 8) * np.floor(np.clip((0.5 * 8 + theta / 2) / theta, 0, 8))
    np.testing.assert_allclose(res.output(8)[0], np.broadcast_to(expected, (3, 4)), atol=1e-6)
    spikes_per_step = (np.floor(np.clip((0.5 * 8 + theta / 2) / theta, 0, 8)) / 8).mean()
    assert res.spike_rates["if_neuron"] == pytest.approx(float(spikes_per_step))


def converted(graph: Graph, calib: np.ndarray, pipeline="canonicalize,fold-bn,balance-thresholds{method=max},insert-if", **kw):
    run_passes(graph, parse_pipeline(pipeline), PassContext(calib=calib, **kw))
    return graph


def test_many_timesteps_in_one_run_equal_separate_runs_and_batches():
    snn = converted(small_cnn(residual=True, maxpool=True), images(32))
    x = images(10, seed=5)
    multi = simulate(snn, x, [3, 8, 20], batch_size=4)
    for T in (3, 8, 20):
        alone = simulate(snn, x, T, batch_size=10).output(T)
        np.testing.assert_allclose(multi.output(T), alone, atol=1e-5)


def test_snn_converges_to_ann():
    ann = small_cnn(residual=True)
    x = images(64)
    snn = converted(ann.clone(), x)
    ref = run_ann(ann, x)[0]
    errs = [np.abs(simulate(snn, x, T).output(T) - ref).mean() for T in (8, 64, 256)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.02 * np.abs(ref).mean()


def test_spiking_max_pool_gates_by_rate():
    # Two inputs spiking at rates 0.25 and 0.75 in one window: output -> the higher rate.
    g = Graph("mp", "snn")
    x = g.add_input("x", (1, 1, 2))
    s = g.add_node("if_neuron", [x], {"spike_scale": "unit"}, {"threshold": np.array(1.0), "v_init": np.array(0.5)}).output
    p = g.add_node("spiking_max_pool", [s], {"kernel": [1, 2]}).output
    g.set_outputs([g.add_node("readout", [p]).output])
    infer_shapes(g)
    z = np.array([[[[0.25, 0.75]]]], dtype=np.float32)
    out = simulate(g, z, 64).output(64)
    assert out.shape == (1, 1, 1, 1)
    assert out.item() == pytest.approx(0.75, abs=1 / 64)


def test_static_values_are_computed_once_but_equal_dense():
    # Direct coding: graph input constant over time; the pre-neuron conv is static.
    snn = converted(small_cnn(), images(16))
    x = images(3, seed=9)
    direct = simulate(snn, x, 8).output(8)
    # Feed the same input as a 'time-varying' (poisson with p in {0,1}) sequence: binary x.
    xb = (x > 0.5).astype(np.float32)
    np.testing.assert_allclose(simulate(snn, xb, 8, encoding="poisson").output(8), simulate(snn, xb, 8).output(8), atol=1e-5)
    assert direct.shape == (3, 4)


def test_poisson_encoding_is_seeded():
    snn = converted(small_cnn(), images(16))
    x = images(4, seed=2)
    a = simulate(snn, x, 16, encoding="poisson", seed=3).output(16)
    b = simulate(snn, x, 16, encoding="poisson", seed=3).output(16)
    c = simulate(snn, x, 16, encoding="poisson", seed=4).output(16)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():  # pragma: no cover - runs on GPU machines
    snn = converted(small_cnn(residual=True), images(16))
    x = images(8)
    np.testing.assert_allclose(simulate(snn, x, 16, device="cuda").output(16), simulate(snn, x, 16).output(16), atol=1e-4)
