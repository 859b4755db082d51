"""End to end through the Python API: a CNN trained in the test, converted from ONNX and
from torch, simulated, saved and reloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import snnc
from snnc.errors import CalibrationError


@pytest.fixture(scope="module")
def converted(digits_model):
    return snnc.convert(str(digits_model.onnx_path), calib=digits_model.x_train, timesteps=32, calib_samples=256)


def test_snn_accuracy_approaches_ann(converted, digits_model):
    res = snnc.evaluate(converted, digits_model.x_test, digits_model.y_test, timesteps=[8, 32, 128])
    acc = {r["timesteps"]: r["accuracy"] for r in res["results"]}
    agree = {r["timesteps"]: r["agreement"] for r in res["results"]}
    assert res["ann_accuracy"] == pytest.approx(digits_model.ann_accuracy)
    assert acc[32] >= res["ann_accuracy"] - 0.03
    assert agree[8] <= agree[128]
    assert agree[128] > 0.95


def test_mse_thresholds_converge_to_the_ann_at_large_T(digits_model):
    # The default percentile thresholds clip the top 2 % of activations, a bias that
    # remains at any T; the MSE search for a long T clips (almost) nothing.
    model = snnc.convert(str(digits_model.onnx_path), calib=digits_model.x_train, timesteps=128, threshold="mse", calib_samples=256, calibration="none")
    res = snnc.evaluate(model, digits_model.x_test, digits_model.y_test, timesteps=[128])
    assert res["results"][0]["accuracy"] >= res["ann_accuracy"] - 0.01
    assert res["results"][0]["agreement"] > 0.97


def test_provenance(converted, digits_model):
    prov = converted.provenance
    assert prov["calibration_samples"] == 256 and prov["timesteps"] == 32
    assert prov["import_check"]["reference"] == "onnxruntime"
    assert len(prov["source"]["sha256"]) == 64
    assert prov["records"]["balance-thresholds"]["method"] == "percentile:98/channel"
    assert converted.snn.stage == "snn"


def test_artifact_round_trip_same_outputs(converted, digits_model, tmp_path):
    path = tmp_path / "m.snn"
    converted.save(path)
    loaded = snnc.load(path)
    x = digits_model.x_test[:50]
    np.testing.assert_array_equal(loaded.run(x), converted.run(x))
    assert loaded.provenance["pipeline"] == converted.provenance["pipeline"]


def test_torch_and_onnx_frontends_give_the_same_snn(converted, digits_model):
    module = digits_model.module
    before = {k: v.clone() for k, v in module.state_dict().items()}
    module.train()
    from_torch = snnc.convert(module, calib=digits_model.x_train, timesteps=32, calib_samples=256)
    assert module.training  # the caller's model is not switched to eval mode
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k]), k
    module.eval()
    assert from_torch.provenance["import_check"]["reference"] == "torch"
    ops_onnx = [n.op for n in converted.snn.nodes]
    ops_torch = [n.op for n in from_torch.snn.nodes]
    assert ops_onnx == ops_torch
    x = digits_model.x_test[:200]
    a, b = converted.run(x), from_torch.run(x)
    assert np.mean(a.argmax(1) == b.argmax(1)) > 0.98


def test_convert_refuses_without_data(digits_model):
    with pytest.raises(CalibrationError, match="no calibration data"):
        snnc.convert(str(digits_model.onnx_path))


def test_run_accepts_torch_tensors_and_other_T(converted, digits_model):
    x = torch.from_numpy(digits_model.x_test[:5])
    assert converted.run(x, timesteps=4).shape == (5, 10)


# ------------------------------------------------------------ re-calibrating a saved model
def test_recalibrating_a_saved_model_for_another_T_equals_converting_for_it(digits_model, tmp_path):
    """The artifact stores the ANN the calibration passes aim at: a model converted without
    calibration for T=32, saved, loaded and calibrated for T=8 is bit for bit the model
    converted with light calibration for T=8 (thresholds and v(0) do not depend on T)."""
    x = digits_model.x_train[:256]
    plain = snnc.convert(str(digits_model.onnx_path), x, timesteps=32, calibration="none", check=False)
    plain.save(tmp_path / "plain.snn")
    loaded = snnc.load(tmp_path / "plain.snn")
    assert loaded.ann_reference is not None
    again = snnc.calibrate(loaded, x, timesteps=8)
    direct = snnc.convert(str(digits_model.onnx_path), x, timesteps=8, calibration="light", check=False)
    assert [n.name for n in again.snn.nodes] == [n.name for n in direct.snn.nodes]
    for a, b in zip(again.snn.nodes, direct.snn.nodes):
        assert a.params.keys() == b.params.keys()
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=f"{a.name}.{k}")
    assert again.timesteps == 8 and again.provenance["calibration"] == "light"
    assert again.provenance["recalibrated"]["from_timesteps"] == 32
    assert again.provenance["conversion_check"]["timesteps"] == 8
    np.testing.assert_array_equal(again.run(digits_model.x_test, 8), direct.run(digits_model.x_test, 8))
    # the loaded model is untouched
    np.testing.assert_array_equal(loaded.run(digits_model.x_test[:20], 32), plain.run(digits_model.x_test[:20], 32))


def test_calibrate_refuses_ann_passes_and_levels_without_passes(digits_model):
    from snnc.errors import PassError

    x = digits_model.x_train[:64]
    plain = snnc.convert(str(digits_model.onnx_path), x, timesteps=8, calibration="none", check=False)
    with pytest.raises(PassError, match="SNN-stage passes only"):
        snnc.calibrate(plain, x, passes="fold-bn")
    with pytest.raises(PassError, match="no passes to run"):
        snnc.calibrate(plain, x, calibration="none")


def test_cli_calibrate_writes_a_new_artifact(digits_model, tmp_path):
    from click.testing import CliRunner

    from snnc.cli import main

    src = tmp_path / "m.snn"
    r = CliRunner().invoke(main, ["convert", str(digits_model.onnx_path), "--calib", str(digits_model.calib_path), "-T", "16", "--calibration", "none", "-o", str(src), "--no-progress"])
    assert r.exit_code == 0, r.output
    before = src.read_bytes()
    out = tmp_path / "m8.snn"
    r = CliRunner().invoke(main, ["calibrate", str(src), "--calib", str(digits_model.calib_path), "-T", "8", "-o", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "recalibrated" in r.output and "T=8" in r.output
    assert src.read_bytes() == before
    assert snnc.load(out).timesteps == 8
    r = CliRunner().invoke(main, ["calibrate", str(src), "--calib", str(digits_model.calib_path), "-o", str(src), "--no-progress"])
    assert r.exit_code == 2 and "is the artifact being calibrated" in r.output
    assert src.read_bytes() == before
