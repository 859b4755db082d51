"""The shipped example models and other exporters' output convert and evaluate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _graphs import fashion_or_noise

import snnc

MODELS = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist" / "models"


@pytest.mark.parametrize("name", ["vgg_bn", "resnet"])
def test_legacy_and_dynamo_exports_give_the_same_snn(name):
    legacy, dynamo = MODELS / f"{name}.onnx", MODELS / f"{name}_dynamo.onnx"
    if not legacy.exists() or not dynamo.exists():
        pytest.skip(f"{name} ONNX files not shipped")
    calib, x = fashion_or_noise(128, 0), fashion_or_noise(64, 1)
    a = snnc.convert(str(legacy), calib=calib, timesteps=16, calibration="light")
    b = snnc.convert(str(dynamo), calib=calib, timesteps=16, calibration="light")
    assert [n.op for n in a.snn.nodes] == [n.op for n in b.snn.nodes]
    for na, nb in zip(a.snn.find("if_neuron"), b.snn.find("if_neuron")):
        np.testing.assert_allclose(na.params["threshold"], nb.params["threshold"], rtol=1e-3)
    ya, yb = a.run(x), b.run(x)
    assert np.mean(ya.argmax(1) == yb.argmax(1)) >= 0.98


def test_skl2onnx_mlp_converts_and_evaluates():
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target
    clf = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=300, random_state=0).fit(x[:1200], y[:1200])
    onx = to_onnx(clf, x[:1], target_opset=17)
    sk_acc = float(np.mean(clf.predict(x[1200:]) == y[1200:]))
    model = snnc.convert(onx, calib=x[:600], timesteps=64)
    assert any("label" in n or "post-processing" in n for n in model.provenance["notices"])
    res = snnc.evaluate(model, x[1200:], y[1200:], timesteps=[64])
    assert res["ann_accuracy"] == pytest.approx(sk_acc, abs=1e-9)
    assert res["results"][0]["accuracy"] >= sk_acc - 0.02
