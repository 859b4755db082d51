"""The low-latency neuron variants of ``if_neuron`` (signed, burst, signed-burst): their
equations, their closed form, insert-if / the pipeline / the CLI that select them, and a
conversion at small T where they must beat the plain neuron."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import snnc
from snnc.cli import main
from snnc.errors import PassError, VerificationError
from snnc.ir.ops import MAX_SPIKES, _if_neuron_variant, get_op, if_neuron_rate, unit_spikes
from snnc.passes import PassContext, default_pipeline, parse_neuron, parse_pipeline, run_passes
from _graphs import images, small_cnn

SPEC = get_op("if_neuron")


def run(z, theta=1.0, v0=0.5, **attrs) -> torch.Tensor:
    """The op's sequence form on a [T, 1, n] current (theta-scaled outputs)."""
    z = torch.as_tensor(np.asarray(z, dtype=np.float32)).reshape(len(z), 1, -1)
    return SPEC.sequence(z, SPEC.resolve(attrs), {"threshold": torch.tensor(theta), "v_init": torch.tensor(v0)})


def test_signed_neuron_takes_back_an_early_spike_and_never_goes_negative():
    z = [0.9, 0.0, -0.8, -0.8, 0.0, 0.0]  # fires at once, then the input turns negative
    plain = run(z).flatten().tolist()
    signed = run(z, signed=True).flatten().tolist()
    assert plain == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # a plain neuron cannot take it back
    assert signed == [1.0, 0.0, -1.0, 0.0, 0.0, 0.0]  # v: 1.4 -> 0.4 -> -0.4 => -1, v = 0.6; then -0.2, n = 0: no more
    # net output never below zero, however negative the input
    r = np.random.default_rng(0)
    y = run(r.normal(-0.2, 1.0, (40, 50)), signed=True)
    assert float(torch.cumsum(y, 0).min()) >= 0.0
    assert float(y.min()) == -1.0  # and it does use negative spikes


def test_burst_neuron_counts_and_soft_reset():
    y = run([2.7, 0.0, 0.6, 9.0], theta=1.0, v0=0.5, max_spikes=3).flatten().tolist()
    # v: 3.2 -> 3 spikes, 0.2; 0.2 -> 0; 0.8 -> 0; 9.8 -> 3 (clipped at K), v = 6.8
    assert y == [3.0, 0.0, 0.0, 3.0]
    # signed burst: takes back at most K per step and at most what it emitted
    y = run([3.0, -5.0, -5.0], theta=1.0, v0=0.5, max_spikes=2, signed=True).flatten().tolist()
    # v 3.5 -> 2 spikes, 1.5; -3.5 -> floor -4, lo = -min(2, 2) = -2: v = -1.5; -6.5 -> lo = -min(0, 2) = 0
    assert y == [2.0, -2.0, 0.0]


def test_hard_reset_and_unit_scale_variants():
    y = run([2.6, 0.3], theta=1.0, v0=0.0, max_spikes=4, reset="zero", spike_scale="unit").flatten().tolist()
    assert y == [2.0, 0.0]  # v = 2.6 -> 2 spikes and v = 0; then 0.3 stays below θ
    y = run([0.5, 0.5], theta=0.25, v0=0.0, max_spikes=4).flatten().tolist()
    assert y == [0.5, 0.5]  # θ-scaled: 2 spikes of 0.25 per step


def test_general_path_with_one_spike_equals_the_plain_neuron_bit_for_bit():
    r = np.random.default_rng(1)
    z = torch.from_numpy(r.normal(0.2, 0.6, (16, 4, 3, 5, 5)).astype(np.float32))
    theta = torch.from_numpy(r.uniform(0.3, 1.2, (3, 1, 1)).astype(np.float32))
    attrs = SPEC.resolve({})
    plain = SPEC.sequence(z, attrs, {"threshold": theta, "v_init": theta / 2})
    general = _if_neuron_variant(z, attrs, theta, theta / 2)
    assert torch.equal(plain, general)


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("signed", [False, True])
def test_constant_current_matches_the_closed_form(k, signed):
    r = np.random.default_rng(k)
    zc = torch.from_numpy(r.uniform(-0.5, 4.0, (3, 7)).astype(np.float32))
    theta = torch.tensor(0.7)
    for T in (1, 3, 8):
        y = SPEC.sequence(zc.expand(T, 3, 7), SPEC.resolve({"max_spikes": k, "signed": signed}), {"threshold": theta, "v_init": theta / 2})
        torch.testing.assert_close(y.mean(0), if_neuron_rate(zc, theta, theta / 2, T, max_spikes=k), rtol=0, atol=1e-6)


def test_unit_spikes_counts_bursts_and_negative_spikes():
    theta = torch.tensor(0.5)
    y = torch.tensor([[1.5, 0.0, -0.5], [0.5, 0.0, 0.0]])
    assert float(unit_spikes({"max_spikes": 3, "signed": True, "spike_scale": "threshold"}, y, theta)) == 5.0
    assert float(unit_spikes({"max_spikes": 1, "signed": False}, torch.tensor([0.5, 0.0, 0.5]), theta)) == 2.0


@pytest.mark.parametrize(
    "attrs, where",
    [({"max_spikes": 0}, "attrs.max_spikes"), ({"max_spikes": MAX_SPIKES + 1}, "attrs.max_spikes"), ({"max_spikes": 2.5}, "attrs.max_spikes"), ({"signed": "yes"}, "attrs.signed")],
)
def test_attribute_rules(attrs, where):
    with pytest.raises(VerificationError, match=where):
        SPEC.validate([(3, 4, 4)], attrs, {"threshold": (), "v_init": ()})


def test_pipeline_spelling_and_default_unchanged():
    assert default_pipeline() == "canonicalize,fold-bn,balance-thresholds{method=percentile percentile=98 granularity=channel},insert-if{maxpool=gate},fuse-synapses"
    assert parse_neuron("burst") == ("burst", 4) and parse_neuron("signed-burst:7") == ("signed-burst", 7) and parse_neuron("signed") == ("signed", 1)
    text = default_pipeline(neuron="burst:8")
    assert "balance-thresholds{method=percentile percentile=98 granularity=channel spikes=8}" in text and "insert-if{maxpool=gate neuron=burst spikes=8}" in text
    for bad in ("burst:1", "signed:3", "lif", "burst:x", f"burst:{MAX_SPIKES + 1}"):
        with pytest.raises(PassError, match="neuron"):
            parse_neuron(bad)


@pytest.mark.parametrize("neuron, k, signed", [("if", 1, False), ("signed", 1, True), ("burst:3", 3, False), ("signed-burst:2", 2, True)])
def test_insert_if_creates_the_variant_with_thresholds_divided_by_k(neuron, k, signed):
    calib = images(32)
    plain, variant = small_cnn(), small_cnn()
    run_passes(plain, parse_pipeline(default_pipeline(calibration="none")), PassContext(calib=calib, timesteps=4))
    run_passes(variant, parse_pipeline(default_pipeline(calibration="none", neuron=neuron)), PassContext(calib=calib, timesteps=4))
    for a, b in zip(plain.find("if_neuron"), variant.find("if_neuron")):
        np.testing.assert_allclose(b.params["threshold"], a.params["threshold"] / k, rtol=1e-6)
        np.testing.assert_allclose(b.params["v_init"], b.params["threshold"] / 2, rtol=1e-6)
        assert (b.attr("max_spikes"), b.attr("signed")) == (k, signed)
        if neuron == "if":  # the default graph carries no new attributes: artifacts as before
            assert "max_spikes" not in b.attrs and "signed" not in b.attrs


def test_variants_beat_the_plain_neuron_at_small_t_and_round_trip(digits_model, tmp_path):
    acc = {}
    for neuron in ("if", "signed", "burst:4"):
        m = snnc.convert(str(digits_model.onnx_path), calib=digits_model.x_train, timesteps=2, calib_samples=256, calibration="light", neuron=neuron, check=False)
        res = snnc.evaluate(m, digits_model.x_test, digits_model.y_test, timesteps=[2])
        acc[neuron] = res["results"][0]["accuracy"]
        if neuron == "burst:4":
            m.save(tmp_path / "burst.snn")
            loaded = snnc.load(tmp_path / "burst.snn")
            assert {n.attr("max_spikes") for n in loaded.snn.find("if_neuron")} == {4}
            again = snnc.evaluate(loaded, digits_model.x_test, digits_model.y_test, timesteps=[2])
            assert again["results"][0]["accuracy"] == acc[neuron]
    assert acc["signed"] > acc["if"] and acc["burst:4"] > acc["if"], acc
    assert acc["burst:4"] >= digits_model.ann_accuracy - 0.05, acc


def test_cli_rejects_an_unknown_neuron(digits_model, tmp_path):
    res = CliRunner().invoke(main, ["convert", str(digits_model.onnx_path), "--calib", str(digits_model.calib_path), "--neuron", "lif", "-o", str(tmp_path / "m.snn")])
    assert res.exit_code == 2 and "neuron 'lif'" in res.output
    assert not (tmp_path / "m.snn").exists()
    with pytest.raises(Exception, match="insert-if"):
        snnc.convert(str(digits_model.onnx_path), calib=digits_model.x_train, passes="canonicalize,fold-bn,balance-thresholds,insert-if", neuron="signed")


def test_advanced_calibration_at_one_step_warns(digits_model):
    m = snnc.convert(str(digits_model.onnx_path), calib=digits_model.x_train, timesteps=1, calib_samples=64, calibration="advanced", check=False)
    assert any("calibrate-weights at T=1" in n for n in m.provenance["notices"]), m.provenance.get("notices")
    m2 = snnc.convert(str(digits_model.onnx_path), calib=digits_model.x_train, timesteps=2, calib_samples=64, calibration="advanced", check=False)
    assert not any("calibrate-weights at T=1" in n for n in m2.provenance.get("notices", []))
