"""The Lava backends: floating point equals the reference simulator; Loihi fixed point stays
within stated bounds of it; deployment gating and reporting work end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from _graphs import OP_CASES, conv, fashion_or_noise, finish, graph_with, images, neuron, rng
from click.testing import CliRunner

import snnc
from snnc.backend import get_backend
from snnc.cli import main
from snnc.errors import BackendError, DataError
from snnc.ir import Graph
from snnc.simulator import simulate

try:
    lava = get_backend("lava")
    lava_fixed = get_backend("lava-fixed")
except BackendError as e:  # lava-nc or the snnc-lava package is missing
    pytest.skip(f"Lava backends unavailable: {e}", allow_module_level=True)

X_OPS = images(6, seed=4, shape=(2, 8, 8)) * 2
FIXED_UNMAPPABLE = {
    "avg-pool": "padded average pooling that excludes the padding",
    "per-neuron-threshold": "scale differs within a channel",
}
FIXED_RATE_TOLERANCE = 0.03  # spikes per neuron per step, per layer, vs the float SNN


@pytest.mark.parametrize("op_case", OP_CASES)
def test_float_processes_equal_the_reference(op_case):
    g = graph_with(op_case)
    assert lava.unsupported(g) == []
    ref = simulate(g, X_OPS, [5, 16])
    got = lava.run(g, X_OPS, [5, 16], batch_size=4)  # two sample batches: state must reset
    for t in (5, 16):
        np.testing.assert_allclose(got.output(t), ref.output(t), rtol=0, atol=1e-5)
    assert got.spike_rates == pytest.approx(ref.spike_rates, abs=1e-9)


@pytest.mark.parametrize("op_case", [c for c in OP_CASES if c not in FIXED_UNMAPPABLE])
def test_fixed_point_spike_rates_stay_close_to_float(op_case):
    g = graph_with(op_case)
    assert lava_fixed.unsupported(g) == []
    ref = simulate(g, X_OPS, [16])
    got = lava_fixed.run(g, X_OPS, [16])
    for name, rate in ref.spike_rates.items():
        assert abs(got.spike_rates[name] - rate) <= FIXED_RATE_TOLERANCE, name
    dep = got.details["deployment"]
    assert {L["layer"] for L in dep["layers"]} >= set(ref.spike_rates)
    for L in dep["layers"]:
        assert 1 <= L["vth"] < 2**17
        for s in L["synapses"]:
            assert -8 <= s["weight_exp"] <= 7 and s["max_mantissa"] <= 128


@pytest.mark.parametrize("op_case", sorted(FIXED_UNMAPPABLE))
def test_fixed_point_lists_what_it_cannot_map(op_case):
    problems = lava_fixed.unsupported(graph_with(op_case))
    assert len(problems) == 1 and FIXED_UNMAPPABLE[op_case] in problems[0].reason


def test_a_current_cannot_feed_a_synapse_in_fixed_point():
    r = rng(1)
    g = Graph("conv-conv", "snn")
    x = g.add_input("x", (2, 8, 8))
    h = neuron(g, conv(g, x, 3, 2, r, pads=[1, 1, 1, 1]), 3, r)
    h = conv(g, conv(g, h, 3, 3, r, pads=[1, 1, 1, 1]), 3, 3, r, pads=[1, 1, 1, 1])  # no neuron between
    g = finish(g, neuron(g, h, 3, r))
    assert lava.unsupported(g) == []
    [p] = lava_fixed.unsupported(g)
    assert "a neuron must sit between two synapses" in p.reason


def test_fixed_point_arithmetic_is_loihis():
    from snnc_lava.kernels import clip24, shift, wrap24

    big = np.array([2**23 + 5, -(2**23) - 5, 2**23, -(2**23)], dtype=np.int64)
    assert wrap24(big).tolist() == [-(2**23) + 5, 2**23 - 5, 2**23, 2**23]  # Lava's single wrap
    assert clip24(big).tolist() == [2**23 - 1, -(2**23) + 1, 2**23 - 1, -(2**23) + 1]
    assert shift(np.array([-5, 5]), -1).tolist() == [-3, 2]  # arithmetic shift floors


def test_compat_shim_rewrites_only_instance_defaults():
    from snnc_lava.compat import patch_source

    src = "@dataclass\nclass A:\n    x: ByteEncoder = ByteEncoder()\n    y: int = 3\n    z: Foo = Bar()\n"
    out = patch_source(src)
    assert "x: ByteEncoder = __import__('dataclasses').field(default_factory=ByteEncoder)" in out
    assert "y: int = 3" in out and "z: Foo = Bar()" in out
    assert out.count("\n") == src.count("\n")  # line numbers unchanged


@pytest.fixture(scope="module")
def digits(digits_model):
    sm = snnc.convert(digits_model.onnx_path, calib=digits_model.x_train[:256], timesteps=32, calibration="light", progress=False)
    return sm, digits_model.x_test[:160], digits_model.y_test[:160]


def test_trained_model_float_agrees_and_fixed_point_is_within_two_points(digits):
    sm, x, y = digits
    ref = sm.simulate(x, [32])
    flt = lava.run(sm.snn, x, [32])
    fix = lava_fixed.run(sm.snn, x, [32])
    agree = np.mean(flt.output(32).argmax(1) == ref.output(32).argmax(1))
    assert agree >= 0.995
    acc = lambda r: np.mean(r.output(32).argmax(1) == y)  # noqa: E731
    assert abs(acc(fix) - acc(ref)) <= 0.02, (acc(fix), acc(ref))
    res = fix.details["deployment"]["resources"]
    assert res["fits_one_chip"] and res["neurons"] == sum(int(np.prod(n.output.shape)) for n in sm.snn.find("if_neuron")) + 10


def test_fashion_vgg_bn_on_both_lava_backends():
    from pathlib import Path

    models = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist" / "models"
    x = fashion_or_noise(160, seed=2)
    sm = snnc.convert(models / "vgg_bn.onnx", calib=x[:128], timesteps=16, calibration="none", progress=False)
    ref = sm.simulate(x[128:], [16])
    flt = lava.run(sm.snn, x[128:], [16])
    fix = lava_fixed.run(sm.snn, x[128:], [16])
    assert np.mean(flt.output(16).argmax(1) == ref.output(16).argmax(1)) == 1.0
    assert np.mean(fix.output(16).argmax(1) == ref.output(16).argmax(1)) >= 0.9


def test_eval_fail_under_gates_on_emulated_hardware(tmp_path, digits):
    sm, x, y = digits
    art = tmp_path / "d.snn"
    sm.save(art)
    data = tmp_path / "t.npz"
    np.savez(data, x=x[:64], y=y[:64])
    runner = CliRunner()
    base = ["eval", str(art), "--data", str(data), "-T", "32", "--backend", "lava-fixed", "--no-progress"]
    res = runner.invoke(main, base + ["--fail-under", "100", "--json"])
    assert res.exit_code == 1, res.output
    out = json.loads(res.output)
    gate = out["fail_under"]
    assert not gate["passed"] and gate["margin"] < 0 and "FAILS --fail-under 100" in gate["message"]
    assert out["results"][0]["reference_accuracy"] is not None and "deployment" in out["details"]
    res = runner.invoke(main, base + ["--fail-under", "10"])
    assert res.exit_code == 0, res.output
    assert "passes --fail-under 10" in res.output and "Loihi 2 estimate" in res.output
    np.savez(tmp_path / "nolabels.npz", x=x[:4])
    res = runner.invoke(main, ["eval", str(art), "--data", str(tmp_path / "nolabels.npz"), "--backend", "lava", "--fail-under", "50"])
    assert res.exit_code == 2 and "no array 'y'" in res.output


def test_lava_errors_are_clear(monkeypatch):
    g = graph_with("affine")
    with pytest.raises(DataError, match="direct-coded input"):
        lava.run(g, X_OPS[:2], [4], encoding="poisson")
    with pytest.raises(BackendError, match="runs on the CPU"):
        get_backend("lava", device="cuda")
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda n: (_ for _ in ()).throw(importlib.metadata.PackageNotFoundError(n)) if n == "lava-nc" else real(n))
    with pytest.raises(BackendError, match="Lava \\(lava-nc\\) is not installed"):
        get_backend("lava-fixed")


def test_interrupt_mid_run_leaves_no_lava_process(monkeypatch):
    import multiprocessing as mp

    import snnc_lava.runtime as lb  # run_batches (unplaced and placed runs) calls it

    real, calls = lb._run_interruptibly, []

    def interrupted(proc, condition, cfg, *args):
        calls.append(1)
        real(proc, condition, cfg, *args)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(lb, "_run_interruptibly", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lava.run(graph_with("concat"), X_OPS, [2, 4], batch_size=3)
    assert mp.active_children() == []


def _same_as_reference(g, x, T, backend, atol=1e-5):
    ref = simulate(g, x, [T])
    got = backend.run(g, x, [T], batch_size=2)
    for i in range(len(g.outputs)):
        np.testing.assert_allclose(got.output(T, i), ref.output(T, i), rtol=0, atol=atol)
    return ref, got


def test_spiking_max_pool_gates_on_the_whole_current_bias_included():
    # conv -> max_pool -> relu converts to a spiking max pool fed by a biased current
    r = rng(0)
    g = Graph("conv-smp", "snn")
    x = g.add_input("x", (2, 8, 8))
    h = neuron(g, conv(g, x, 4, 2, r, pads=[1, 1, 1, 1]), 4, r)
    h = g.add_node("conv", [h], {"pads": [1, 1, 1, 1]}, {"weight": r.normal(0, 0.3, (4, 4, 3, 3)), "bias": np.array([2.0, -2.0, 1.0, 0.5])}).output
    h = g.add_node("spiking_max_pool", [h], {"kernel": [2, 2]}).output
    g = finish(g, neuron(g, h, 4, r))
    _same_as_reference(g, X_OPS[:3], 8, lava)
    assert "needs spikes" in lava_fixed.unsupported(g)[0].reason


def test_two_heads_meeting_only_at_the_input_both_run():
    r = rng(0)
    g = Graph("twohead", "snn")
    x = g.add_input("x", (2, 8, 8))
    a = neuron(g, conv(g, x, 4, 2, r, pads=[1, 1, 1, 1]), 4, r)
    b = neuron(g, conv(g, x, 3, 2, r, pads=[1, 1, 1, 1]), 3, r)
    g.set_outputs([g.add_node("readout", [a]).output, g.add_node("readout", [b]).output])
    from snnc.ir import infer_shapes

    infer_shapes(g)
    ref, got = _same_as_reference(g, X_OPS[:3], 6, lava)
    assert got.spike_rates == pytest.approx(ref.spike_rates)


def test_asymmetric_average_pool_end_padding_in_fixed_point():
    r = rng(2)
    g = Graph("pad-end", "snn")
    x = g.add_input("x", (2, 8, 8))
    h = neuron(g, conv(g, x, 4, 2, r, pads=[1, 1, 1, 1]), 4, r, per="layer")
    h = g.add_node("avg_pool", [h], {"kernel": [3, 3], "strides": [1, 1], "pads": [0, 0, 1, 1], "count_include_pad": True}).output
    g = finish(g, neuron(g, conv(g, h, 4, 4, r, pads=[1, 1, 1, 1]), 4, r))
    ref = simulate(g, X_OPS, [16])
    got = lava_fixed.run(g, X_OPS, [16])
    assert got.output(16).shape == ref.output(16).shape == (6, 4, 7, 7)
    for name, rate in ref.spike_rates.items():
        assert abs(got.spike_rates[name] - rate) <= FIXED_RATE_TOLERANCE


def test_rounded_weights_never_wrap_the_current():
    # 25 neurons firing every step into one neuron through weights just below an exponent edge
    n, w0 = 25, 1.174589966662123
    g = Graph("wrap", "snn")
    x = g.add_input("x", (n,))
    h = g.add_node("linear", [x], {}, {"weight": np.eye(n), "bias": np.zeros(n)}).output
    h = g.add_node("if_neuron", [h], {}, {"threshold": np.array(1.0), "v_init": np.array(0.0)}).output
    h = g.add_node("linear", [h], {}, {"weight": np.full((1, n), w0), "bias": np.zeros(1)}).output
    g = finish(g, g.add_node("if_neuron", [h], {}, {"threshold": np.array(1.0), "v_init": np.array(0.0)}).output)
    xx = np.full((1, n), 1.5, np.float32)
    ref = simulate(g, xx, [16])
    got = lava_fixed.run(g, xx, [16])
    assert got.spike_rates == pytest.approx(ref.spike_rates, abs=1 / 16)


def test_a_failing_process_is_an_error_not_a_hang(monkeypatch):
    import multiprocessing as mp

    from snnc_lava import kernels

    def boom(self, ins):
        raise RuntimeError("boom in a neuron")

    monkeypatch.setattr(kernels.NeuronKernel, "step", boom)  # inherited by Lava's forked workers
    with pytest.raises(BackendError, match="(?s)a Lava process failed.*boom in a neuron"):
        lava.run(graph_with("affine"), X_OPS[:2], [4])
    assert mp.active_children() == []


def test_fail_under_at_exactly_the_accuracy_passes():
    from snnc.cli import _fail_under

    res = {"backend": "lava", "results": [{"timesteps": 32, "accuracy": 29 / 100}]}
    assert _fail_under(res, 29.0)["passed"] and not _fail_under(res, 29.01)["passed"]


def test_lava_loads_after_a_start_method_was_set():
    """torch's dynamo ONNX exporter sets multiprocessing's start method to fork; Lava sets it
    again on import and used to fail with "context has already been set"."""
    code = (
        "import multiprocessing as mp; mp.set_start_method('fork')\n"
        "from snnc.backend import get_backend; get_backend('lava-fixed'); print(mp.get_start_method())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "fork", proc.stderr[-2000:]
