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
