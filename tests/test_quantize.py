"""Hardware-aware calibration (``snnc convert --quantize loihi2``): the lava-fixed quantiser puts
the float graph on the Loihi grid losslessly, the reference simulator on that graph runs what
lava-fixed runs, and the calibration passes calibrate the quantised network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _graphs import OP_CASES, graph_with, images, small_cnn
from click.testing import CliRunner

import snnc
from snnc.backend import get_backend, get_quantizer
from snnc.cli import main
from snnc.errors import BackendError, DataError
from snnc.passes import PassContext, default_pipeline, parse_pipeline, run_passes
from snnc.passes.calibrate import _on_grid
from snnc.simulator import simulate

X = images(6, seed=4, shape=(2, 8, 8)) * 2
T = 16
MAPPABLE = [c for c in OP_CASES if c not in ("avg-pool", "per-neuron-threshold")]


@pytest.fixture(scope="module")
def lava_fixed():
    try:
        return get_backend("lava-fixed")
    except BackendError as e:  # lava-nc or the snnc-lava package is missing
        pytest.skip(f"Lava backends unavailable: {e}")


def _lowered_layers(graph, timesteps=T):
    from snnc_lava.lower import lower

    return lower(graph, np.zeros((1, *graph.inputs[0].shape), np.float32), timesteps, 1, fixed=True).layers


# ------------------------------------------------------------ the quantiser
@pytest.mark.parametrize("case", MAPPABLE)
def test_projection_puts_every_weight_on_the_grid_and_is_idempotent(lava_fixed, case):
    from snnc_lava.quantize import fake_quantize, grid

    g = graph_with(case)
    before = {(n.name, k): a.copy() for n in g.nodes for k, a in n.params.items()}
    fq = fake_quantize(g, T)
    assert all(np.array_equal(n.params[k], before[(n.name, k)]) for n in g.nodes for k in n.params) and "fixed_point" not in g.meta
    layers = _lowered_layers(fq)
    assert {L["layer"] for L in layers} == set(fq.meta["fixed_point"]["vth"])
    for L in layers:  # the lowering keeps the pinned scale and re-quantises losslessly
        assert L["pinned_vth"] == "kept" and L["vth"] == fq.meta["fixed_point"]["vth"][L["layer"]]
        assert all(s["relative_rms_error"] < 1e-6 for s in L["synapses"]), L
    for name, gr in grid(fq, T).items():  # the straight-through fit's grid: the projected weights are whole steps of it
        k = fq.node(name).params["weight"].astype(np.float64) / np.where(gr["step"] > 0, gr["step"], 1.0)
        assert np.abs(k - np.round(k)).max() < 1e-4 and np.abs(k).max() <= 128, name
    plain = {L["layer"]: L for L in _lowered_layers(g)}
    assert max(s["relative_rms_error"] for L in plain.values() for s in L["synapses"]) > 1e-4  # the original was off the grid
    again = fake_quantize(fq, T)
    assert [n.name for n in again.nodes] == [n.name for n in fq.nodes]
    for a, b in zip(again.nodes, fq.nodes):
        assert a.attrs == b.attrs and all(np.array_equal(a.params[k], b.params[k]) for k in a.params), a.name


@pytest.mark.parametrize("case", ["residual-add", "spiking-max-pool", "flatten-linear", "concat"])
def test_reference_simulation_of_the_fake_quantised_graph_is_what_lava_fixed_runs(lava_fixed, case):
    from snnc_lava.quantize import fake_quantize

    fq = fake_quantize(graph_with(case), T)
    hw, ref = lava_fixed.run(fq, X, [T]), simulate(fq, X, [T])
    for name, rate in ref.spike_rates.items():
        assert abs(hw.spike_rates[name] - rate) <= 1e-3, name  # measured: equal
    np.testing.assert_allclose(hw.output(T), ref.output(T), rtol=0, atol=1e-4)


def test_a_pin_that_no_longer_fits_is_dropped_and_reported(lava_fixed):
    from snnc_lava.quantize import fake_quantize

    fq = fake_quantize(graph_with("flatten-linear"), T)
    readout = [L for L in _lowered_layers(fq, 100 * T) if L["kind"] == "readout"]  # its integral bound shrinks with T
    assert readout and readout[0]["pinned_vth"].startswith("not kept: vth") and "larger T" in readout[0]["pinned_vth"]
    for bad in (0, 2**17, "7", 1.5):
        g = fq.clone()
        g.meta["fixed_point"]["vth"]["readout"] = bad
        with pytest.raises(BackendError, match=r"meta.fixed_point.vth\['readout'\] must be an integer in \[1, 131071\]"):
            _lowered_layers(g)
        [problem] = lava_fixed.unsupported(g)  # what `snnc check` shows
        assert "must be an integer in [1, 131071]" in problem.reason
    g = fq.clone()
    g.meta["fixed_point"] = ["not", "an", "object"]
    with pytest.raises(BackendError, match="must be an object"):
        _lowered_layers(g)


def test_quantiser_lookup_and_errors(lava_fixed):
    q = get_quantizer("loihi2", 32)
    assert q.describe() == {"target": "loihi2", "backend": "lava-fixed", "timesteps": 32}
    assert get_quantizer("lava-fixed", 8).timesteps == 8
    with pytest.raises(BackendError, match="backend 'reference' has no quantiser; --quantize takes loihi2"):
        get_quantizer("reference", 32)
    with pytest.raises(BackendError, match="unknown quantisation target 'loihi9'; --quantize takes loihi2"):
        get_quantizer("loihi9", 32)


# ----------------------------------------- the core's calibration hook (no backend)
class GridQuantizer:
    """A stand-in target: every conv / linear weight on multiples of ``step``."""

    target = "test-grid"

    def __init__(self, step=0.05):
        self.step, self.projected, self.grids = step, [], []

    def _synapses(self, graph, layers):
        from snnc.passes.calibrate import segments

        segs = [s for s in segments(graph) if layers is None or s.node.name in layers]
        return [n for s in segs for n in s.nodes if n.spec.has("synaptic")]

    def project(self, graph, layers=None):
        self.projected.append(None if layers is None else list(layers))
        for n in self._synapses(graph, layers):
            n.set_param("weight", np.round(n.params["weight"].astype(np.float64) / self.step) * self.step)
        return []

    def grid(self, graph, layers=None):
        self.grids.append(list(layers))
        return {n.name: {"param": "weight", "step": np.full(n.params["weight"].shape, self.step), "lo": -1000, "hi": 1000} for n in self._synapses(graph, layers)}

    def describe(self):
        return {"target": self.target}


def test_calibration_passes_refit_through_the_grid_and_keep_every_layer_on_it():
    g = small_cnn(3)
    calib = images(48, seed=2)
    q = GridQuantizer()
    ctx = PassContext(calib=calib, timesteps=8, quantizer=q)
    run_passes(g, parse_pipeline("canonicalize,fold-bn,balance-thresholds,insert-if,calibrate-weights{iterations=20 samples=48},calibrate-bias{samples=48}"), ctx)
    neurons = [n.name for n in g.nodes if n.spec.has("neuron") or n.spec.has("readout")]
    assert q.grids == [[name] for name in neurons]  # calibrate-weights fitted every layer through its grid
    assert q.projected == [[name] for name in neurons] * 2  # each pass put every layer it changed back
    for n in g.nodes:
        if n.spec.has("synaptic"):
            k = n.params["weight"].astype(np.float64) / q.step
            assert np.allclose(k, np.round(k), atol=1e-4), n.name


def test_straight_through_rounding():
    w = torch.tensor([0.26, -0.74, 0.1, 3.0], requires_grad=True)
    grid = (torch.tensor([0.5, 0.5, 0.0, 0.5]), -4, 4)
    y = _on_grid(w, grid)
    assert y.tolist() == pytest.approx([0.5, -0.5, 0.1, 2.0])  # rounded, a 0 step left alone, clipped at hi * step
    y.sum().backward()
    assert w.grad.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_default_pipeline_places_quantize_after_insert_if_and_only_when_asked():
    plain = default_pipeline(calibration="advanced")
    assert "quantize" not in plain
    q = default_pipeline(calibration="advanced", quantize="loihi2")
    assert q.index("insert-if") < q.index("fuse-synapses") < q.index("quantize{target=loihi2}") < q.index("calibrate-weights")
    assert q.endswith("calibrate-potential")
    with pytest.raises(Exception, match="is not a name such as loihi2"):
        default_pipeline(quantize="loihi2}")


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def quantised(digits_model, lava_fixed):
    m = digits_model
    sm = snnc.convert(m.onnx_path, calib=m.x_train[:128], timesteps=T, calibration="advanced", quantize="loihi2", progress=False, check=False)
    return sm, m.x_test[:48], m.y_test[:48]


def test_convert_quantize_records_it_and_the_artifact_lowers_losslessly(quantised, lava_fixed, tmp_path):
    sm, x, y = quantised
    assert sm.provenance["quantized"] == {"target": "loihi2", "backend": "lava-fixed", "timesteps": T}
    assert "quantize" in sm.provenance["pipeline"] and "quantize" in sm.provenance["records"]
    sm.save(tmp_path / "q.snn")
    loaded = snnc.load(tmp_path / "q.snn")
    assert loaded.snn.meta["fixed_point"] == sm.snn.meta["fixed_point"] and loaded.provenance["quantized"]["target"] == "loihi2"
    for L in _lowered_layers(loaded.snn):  # calibrated layers are still on the grid of their pinned scale
        assert L["pinned_vth"] == "kept" and all(s["relative_rms_error"] < 1e-6 for s in L["synapses"]), L
    hw, ref = lava_fixed.run(loaded.snn, x, [T]), loaded.simulate(x, [T])
    assert np.mean(hw.output(T).argmax(1) == ref.output(T).argmax(1)) >= 47 / 48
    for name, rate in ref.spike_rates.items():
        assert abs(hw.spike_rates[name] - rate) <= 2e-3, name


def test_quantize_errors_are_clear(digits_model, tmp_path):
    m = digits_model
    with pytest.raises(BackendError, match="unknown quantisation target 'tpu'"):
        snnc.convert(m.onnx_path, calib=m.x_train[:16], timesteps=4, quantize="tpu", progress=False)
    with pytest.raises(DataError, match=r"put quantize\{target=loihi2\} after insert-if"):
        snnc.convert(m.onnx_path, calib=m.x_train[:16], timesteps=4, quantize="loihi2", passes="canonicalize,insert-if", progress=False)
    runner = CliRunner()
    base = ["convert", str(m.onnx_path), "--calib", str(m.calib_path), "-o", str(tmp_path / "x.snn"), "--no-progress"]
    res = runner.invoke(main, base + ["--quantize", "reference"])
    assert res.exit_code == 2 and "has no quantiser" in res.output and not (tmp_path / "x.snn").exists()
    res = runner.invoke(main, base + ["--quantize", "loihi2", "--passes", "canonicalize,insert-if"])
    assert res.exit_code == 2 and "with --passes, put quantize{target=loihi2} after insert-if" in res.output


def test_recalibration_keeps_or_drops_the_quantisation_explicitly(quantised, lava_fixed):
    sm, x, _ = quantised
    kept = snnc.calibrate(sm, x, calibration="light", quantize="loihi2", check=False)
    assert kept.provenance["quantized"]["target"] == "loihi2" and kept.provenance["pipeline"].endswith("quantize,calibrate-bias")
    for L in _lowered_layers(kept.snn):
        assert L["pinned_vth"] == "kept" and all(s["relative_rms_error"] < 1e-6 for s in L["synapses"]), L
    dropped = snnc.calibrate(sm, x, calibration="light", check=False)
    assert "quantized" not in dropped.provenance and any("re-calibrated without it" in n for n in dropped.provenance["notices"])
    with pytest.raises(DataError, match="with passes=..., put quantize"):
        snnc.calibrate(sm, x, passes="calibrate-bias", quantize="loihi2")
