"""`snnc report`: the diagnostics are measured right, the findings follow the cause, the
page renders in a real browser (headless Chromium) with its plots and no console errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import snnc
from snnc.analysis.diagnose import Probe, diagnose, findings, residual_adds, spiking_inputs
from snnc.cli import main
import _graphs

WIDE = {"COLUMNS": "240"}
T = 16


def invoke(*args):
    return CliRunner(env=WIDE).invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def digits_snn(digits_model):
    calib = np.load(digits_model.calib_path)["x"]
    return snnc.convert(str(digits_model.onnx_path), calib, timesteps=T, calibration="none")


def test_replacing_every_spiking_layer_by_the_ann_gives_the_ann(digits_snn, digits_model):
    """The ablation machinery: with all spiking layers exact, the SNN computes the ANN; with
    none replaced it computes what the reference simulator computes."""
    probe = Probe(digits_snn)
    xb = torch.from_numpy(digits_model.x_test[:64])
    acts, ann_y = probe.ann_batch(xb)
    every = {n.name: "exact" for n in probe.layers}
    out = probe.snn_batch(xb, [T], ann=acts, replace=every)[T]
    assert torch.allclose(out, ann_y, atol=1e-4)
    snapshots: dict = {}
    base = probe.snn_batch(xb, [T], ann=acts, snapshots=snapshots)[T]
    ref = digits_snn.simulate(digits_model.x_test[:64], T).output(T)
    np.testing.assert_allclose(base.numpy(), ref, atol=1e-5)
    # resuming from a snapshot gives the same as a run from the input
    last = probe.layers[-1].name
    resumed = probe.snn_batch(xb, [T], ann=acts, replace={last: "clip"}, snapshots=snapshots)[T]
    fresh = probe.snn_batch(xb, [T], ann=acts, replace={last: "clip"})[T]
    assert torch.equal(resumed, fresh)


def test_layer_statistics_match_the_simulator(digits_snn, digits_model):
    x, y = digits_model.x_test[:200], digits_model.y_test[:200]
    diag = diagnose(digits_snn, x, y, timesteps=[8, T], ablation_samples=0)
    sim = digits_snn.simulate(x, T)
    for row in diag["layers"]:
        assert row["spike_rate"] == pytest.approx(sim.spike_rates[row["layer"]], rel=1e-6)
    # every statistic of the first layer, recomputed from its spike trains and the ANN activation
    from snnc.export.nir import reference_spike_trains

    first = digits_snn.snn.find("if_neuron")[0]
    theta = first.params["threshold"]
    spikes = reference_spike_trains(digits_snn.snn, x, T, [first.name])[first.name]  # [T, N, ...]
    acts, _ = Probe(digits_snn).ann_batch(torch.from_numpy(x))
    a = acts[diag["layers"][0]["ann_layer"]].numpy()
    err = theta * spikes.mean(0) - a
    counts = spikes.sum(0)
    row = diag["layers"][0]
    assert row["error_mean"] == pytest.approx(err.mean(), abs=1e-6)
    assert row["error_rms"] == pytest.approx(np.sqrt((err**2).mean()), rel=1e-5)
    assert row["saturated"] == pytest.approx((counts == T).mean())
    assert row["silent"] == pytest.approx(((counts == 0) & (a >= theta / T)).mean())
    assert row["clipped"] == pytest.approx((a > theta).mean())
    acc = float(np.mean(sim.output(T).argmax(1) == y))
    assert diag["timesteps"][-1]["accuracy"] == pytest.approx(acc)
    assert diag["ann_accuracy"] == pytest.approx(float(np.mean(digits_snn.ann_outputs(x).argmax(1) == y)))
    assert diag["ablation"] is None


def test_statistics_at_a_smaller_t_and_without_labels(digits_snn, digits_model):
    """--at below the largest T reads the first `at` steps; without labels the metric is
    agreement with the ANN (which then scores 1)."""
    x = digits_model.x_test[:100]
    diag = diagnose(digits_snn, x, None, timesteps=[16], at=6, ablation_samples=0)
    assert diag["at"] == 6 and [r["timesteps"] for r in diag["timesteps"]] == [6, 16]
    assert diag["metric"] == "agreement with the ANN" and diag["ann_accuracy"] == 1.0
    sim = digits_snn.simulate(x, 6)
    for row in diag["layers"]:
        assert row["spike_rate"] == pytest.approx(sim.spike_rates[row["layer"]], rel=1e-6)
    assert diag["timesteps"][0]["accuracy"] == diag["timesteps"][0]["agreement"]
    # without the ablation no finding claims a measured per-layer loss
    assert not [f for f in findings(diag) if f["kind"] in ("quantisation", "clipping") and f["impact"] is not None]


def test_single_logit_outputs_are_binary_decisions():
    from snnc.metrics import predictions

    out = np.array([[-1.0], [2.0], [0.5]])
    assert predictions(out).tolist() == [0, 1, 1]
    assert predictions(np.array([[0.1, 0.3], [2.0, -1.0]])).tolist() == [1, 0]


def test_spiking_inputs_follow_the_residual_path(digits_snn):
    names = [n.name for n in digits_snn.snn.find("if_neuron")]
    second = digits_snn.snn.node(names[1])
    # relu(bn2(conv2(h)) + h): the second layer's inputs are the first layer (twice: conv and shortcut)
    assert [n.name for n in spiking_inputs(second)] == [names[0]]
    assert spiking_inputs(digits_snn.snn.node(names[0])) == []


def test_findings_name_clipping_when_thresholds_are_too_low(digits_model):
    """A 60th-percentile threshold clips: the findings blame clipping and advise raising θ."""
    calib = np.load(digits_model.calib_path)["x"]
    low = snnc.convert(
        str(digits_model.onnx_path), calib, timesteps=32, calibration="none",
        passes="canonicalize,fold-bn,balance-thresholds{method=percentile percentile=60},insert-if",
    )  # fmt: skip
    diag = diagnose(low, digits_model.x_test, digits_model.y_test, timesteps=[32], ablation_samples=200)
    found = findings(diag)
    layer_findings = [f for f in found if f["kind"] in ("clipping", "quantisation")]
    assert layer_findings, found
    top = layer_findings[0]
    assert top["kind"] == "clipping" and "Raise its threshold" in top["text"]
    row = next(r for r in diag["layers"] if r["layer"] == top["layer"])
    assert row["gain_clipping"] > row["gain_quantisation"] and row["clipped"] > 0.1


def test_findings_name_quantisation_at_few_timesteps(digits_model):
    """With good thresholds but T=4, what is lost is quantisation, and T is the lever."""
    calib = np.load(digits_model.calib_path)["x"]
    m = snnc.convert(str(digits_model.onnx_path), calib, timesteps=4, calibration="none", passes="canonicalize,fold-bn,balance-thresholds{method=max},insert-if")
    diag = diagnose(m, digits_model.x_test, digits_model.y_test, timesteps=[4, 32], ablation_samples=200)
    found = findings(diag)
    kinds = [f["kind"] for f in found if f["kind"] in ("clipping", "quantisation")]
    assert kinds and set(kinds) == {"quantisation"}, found
    assert any(f["kind"] == "timesteps" and "T=4 loses" in f["text"] for f in found)
    ranks = [f["rank"] for f in found]
    assert ranks == list(range(1, len(found) + 1))
    impacts = [f["impact"] or 0 for f in found]
    assert impacts == sorted(impacts, reverse=True)


def test_residual_add_with_mismatched_amplitudes_is_reported():
    g = _graphs.small_cnn(residual=True, bn=False)
    from snnc.passes import PassContext, parse_pipeline, run_passes

    x = _graphs.images(64)
    run_passes(g, parse_pipeline("canonicalize,balance-thresholds{granularity=layer},insert-if"), PassContext(calib=x, timesteps=16))
    adds = residual_adds(g)
    assert adds, "small_cnn(residual=True) has an add"
    a = adds[0]
    srcs = [i for i in a["inputs"] if i["from"]]
    assert srcs and all(i["amplitude"] > 0 for i in srcs)
    # make the shortcut's spikes 10x larger than the layer it drives
    src = g.node(srcs[0]["from"][0])
    src.set_param("threshold", src.params["threshold"] * 10)
    a = residual_adds(g)[0]
    assert a["ratio"] >= 5
    diag = {"at": 16, "ann_accuracy": 1.0, "layers": [], "ablation": None, "residual_adds": [a], "timesteps": [{"timesteps": 16, "accuracy": 1.0, "agreement": 1.0}], "target": {"smallest_T": 16}}
    texts = [f["text"] for f in findings(diag)]
    assert any(f"residual add {a['add']} mixes spike amplitudes" in t for t in texts)


@pytest.fixture(scope="module")
def report_dir(digits_model, tmp_path_factory):
    calib = np.load(digits_model.calib_path)["x"]
    art = tmp_path_factory.mktemp("report") / "digits.snn"
    snnc.convert(str(digits_model.onnx_path), calib, timesteps=T, calibration="light").save(art)
    out = art.parent / "digits.report"
    res = invoke("report", art, "--data", digits_model.test_path, "-T", "4,8,16", "--ablation-samples", "100", "--no-progress", "-o", out)
    assert res.exit_code == 0, res.output
    assert "Findings" in res.output and "report:" in res.output
    return out


def test_report_files_and_json(report_dir):
    names = {p.name for p in report_dir.iterdir()}
    assert {"index.html", "report.json", "accuracy_vs_timesteps.png", "layers.png", "layer_errors.png", "ablation.png"} <= names
    assert not [p for p in report_dir.parent.iterdir() if p.name.startswith(".digits.report")], "temporary directory left behind"
    rep = json.loads((report_dir / "report.json").read_text())
    diag = rep["diagnostics"]
    assert [r["timesteps"] for r in diag["timesteps"]] == [4, 8, 16]
    assert diag["at"] == T and diag["ablation"]["samples"] == 100
    assert rep["findings"] and all(f["text"] for f in rep["findings"])
    # the calibration pass's before/after errors are carried into the per-layer rows
    assert any(r["passes"] and r["passes"][0]["stage"] == "insert-if" for r in diag["layers"])
    assert set(rep["plots"].values()) <= names
    # operations and energy from the per-neuron spike rates measured on the report's data
    en = rep["energy"]
    assert en["timesteps"] == T and en["settings"]["rates"] == "per-neuron"
    assert en["totals"]["ann_macs"] > 0 and en["totals"]["snn_synops"] > 0
    assert "operations.png" in names


def test_report_renders_in_headless_chromium(report_dir):
    """Load the page in Debian's chromium: it renders, every plot image decodes, no console
    errors or failed requests."""
    pytest.importorskip("playwright.sync_api", reason="playwright is installed by make setup")
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        pytest.skip("chromium is not installed (make setup installs it with apt-get)")
    from snnc.analysis.report import check_rendering

    seen = check_rendering(report_dir / "index.html")
    assert seen["errors"] == []
    assert len(seen["images"]) >= 5, seen["images"]
    assert all(i["width"] > 100 and i["height"] > 100 for i in seen["images"]), seen["images"]
    assert seen["findings"] >= 1 and seen["title"].startswith("snnc report")


def test_bad_data_exits_2_and_writes_nothing(report_dir, digits_model, tmp_path):
    art = next(report_dir.parent.glob("*.snn"))
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 3, 8, 8), np.float32))
    out = tmp_path / "rep"
    res = invoke("report", art, "--data", bad, "-o", out, "--no-progress")
    assert res.exit_code == 2 and "per-sample shape" in res.output
    assert not out.exists()
    res = invoke("report", art, "--data", tmp_path / "missing.npz", "-o", out, "--no-progress")
    assert res.exit_code == 2 and not out.exists()


def test_residual_amplitudes_with_binary_spikes_are_the_thresholds():
    """After normalize-weights a spike is 1 and θ sits in the add's coefficients: the
    amplitude is θ, not θ² (and the report refuses such graphs for its ANN comparison)."""
    from snnc.passes import PassContext, parse_pipeline, run_passes

    x = _graphs.images(64)
    plain = _graphs.small_cnn(residual=True, bn=False)
    run_passes(plain, parse_pipeline("canonicalize,balance-thresholds{granularity=layer},insert-if"), PassContext(calib=x, timesteps=16))
    norm = _graphs.small_cnn(residual=True, bn=False)
    run_passes(norm, parse_pipeline("canonicalize,balance-thresholds{granularity=layer},insert-if,normalize-weights"), PassContext(calib=x, timesteps=16))
    a, b = residual_adds(plain)[0], residual_adds(norm)[0]
    amp = [i["amplitude"] for i in a["inputs"] if i["amplitude"] is not None]
    amp_norm = [i["amplitude"] for i in b["inputs"] if i["amplitude"] is not None]
    assert amp and amp_norm == pytest.approx(amp, rel=1e-5)
