"""The stock-direction example: a chronological split without look-ahead, and the shipped
ONNX model converts and runs the same on the reference, SpikingJelly and Lava backends."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import snnc

pytest.importorskip("pandas")
if importlib.util.find_spec("skfolio") is None:
    pytest.skip("the skfolio package (which ships the price data) is not installed", allow_module_level=True)

from examples.stocks import data as sd  # noqa: E402

ONNX = Path(__file__).resolve().parents[1] / "examples" / "stocks" / "models" / "stocks_tcn.onnx"


@pytest.fixture(scope="module")
def splits():
    return sd.load_splits()


def test_split_is_chronological_without_overlap(splits):
    s, _ = splits
    tr, va, te = s["train"], s["val"], s["test"]
    assert tr["label_date"].max() <= 20151231 < va["label_date"].min()
    assert va["label_date"].max() <= 20181231 < te["label_date"].min()
    assert te["label_date"].min() >= 20190101 and te["label_date"].max() == 20221228
    for part in (tr, va, te):
        assert (part["date"] < part["label_date"]).all()  # the input window ends before the predicted day
        assert part["x"].shape[1:] == (3, sd.WINDOW) and np.isfinite(part["x"]).all()
    # every (stock, label day) appears once, in one split only
    keys = [set(zip(p["ticker"].tolist(), p["label_date"].tolist())) for p in (tr, va, te)]
    assert sum(len(k) for k in keys) == sum(len(p["y"]) for p in (tr, va, te))
    assert not (keys[0] & keys[1] or keys[1] & keys[2] or keys[0] & keys[2])


def test_labels_are_the_next_days_sign_and_windows_end_on_the_decision_day():
    prices, spx = sd.load_prices()
    panel = sd.build_panel(prices, spx)
    w = sd.make_windows(panel)
    rng = np.random.default_rng(0)
    dates = sd._yyyymmdd(panel.dates)
    for i in rng.choice(len(w["y"]), 50, replace=False):
        d = int(np.searchsorted(dates, w["date"][i]))
        s = panel.tickers.index(str(w["ticker"][i]))
        assert dates[d + 1] == w["label_date"][i]  # label day = the next trading day
        p0, p1 = prices.iloc[d, s], prices.iloc[d + 1, s]
        assert w["y"][i] == int(p1 > p0)
        np.testing.assert_allclose(w["ret_next"][i], np.log(p1 / p0), rtol=1e-5, atol=1e-7)
        # the window's last column is day d's own features, the first is day d - L + 1's
        np.testing.assert_allclose(w["x"][i][:, -1], panel.features[d, s], rtol=1e-6)
        np.testing.assert_allclose(w["x"][i][:, 0], panel.features[d - sd.WINDOW + 1, s], rtol=1e-6)


def test_features_use_past_prices_only():
    """Features computed from prices cut off at day K equal those from the full history."""
    prices, spx = sd.load_prices()
    full = sd.build_panel(prices, spx)
    for k in (400, 3000, 7000):
        cut = sd.build_panel(prices.iloc[:k], spx.iloc[:k])
        np.testing.assert_allclose(cut.features, full.features[:k], rtol=1e-12, atol=1e-12, equal_nan=True)


def test_standardisation_uses_training_statistics(splits):
    s, norm = splits
    x = s["train"]["x"]
    np.testing.assert_allclose(x.mean(axis=(0, 2)), 0, atol=1e-3)
    np.testing.assert_allclose(x.std(axis=(0, 2)), 1, atol=1e-3)
    assert len(norm["mean"]) == len(sd.CHANNELS)


@pytest.fixture(scope="module")
def converted(splits):
    if not ONNX.exists():
        pytest.skip("stocks_tcn.onnx not shipped")
    s, _ = splits
    calib = s["train"]["x"][np.random.default_rng(0).choice(len(s["train"]["x"]), 512, replace=False)]
    # light calibration keeps this fast; the README's conversion uses the advanced default
    return snnc.convert(str(ONNX), calib=calib, timesteps=32, threshold="max", calibration="light")


def test_shipped_onnx_matches_onnxruntime(converted, splits):
    ort = pytest.importorskip("onnxruntime")
    x = splits[0]["test"]["x"][:500]
    sess = ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert ref.shape == (500, 2)
    np.testing.assert_allclose(converted.ann_outputs(x), ref, rtol=1e-4, atol=1e-5)


def test_snn_agrees_with_ann_at_T32(converted, splits):
    x = splits[0]["test"]["x"][::40][:500]  # spread over the four test years
    ann = converted.ann_outputs(x)
    snn = converted.run(x, 32)
    assert np.mean(ann.argmax(1) == snn.argmax(1)) >= 0.95


def test_spikingjelly_equals_reference(converted, splits):
    pytest.importorskip("spikingjelly.activation_based.neuron")
    x = splits[0]["test"]["x"][:64]
    ref = converted.simulate(x, [4, 32])
    got = converted.simulate(x, [4, 32], backend="spikingjelly", device="cpu")
    for t in (4, 32):
        np.testing.assert_allclose(got.output(t), ref.output(t), rtol=0, atol=1e-5)


def test_lava_float_equals_reference(converted, splits):
    from snnc.backend import get_backend
    from snnc.errors import BackendError

    try:
        get_backend("lava")
    except BackendError as e:
        pytest.skip(f"Lava backend unavailable: {e}")
    x = splits[0]["test"]["x"][:6]
    ref = converted.simulate(x, [8])
    got = converted.simulate(x, [8], backend="lava")
    np.testing.assert_allclose(got.output(8), ref.output(8), rtol=0, atol=1e-5)
