"""The SpikingJelly backend computes exactly what the reference simulator computes.

Every SNN-stage op is lowered and compared spike for spike (outputs bit-identical: both
run the same float32 arithmetic), on hand-built graphs and on the shipped Fashion-MNIST
models. ``SNNC_TEST_DEVICE=cuda`` runs the whole file with both backends on a GPU
(benchmarks/throughput/gpu_check.sh does, next to the 2000-image check).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _graphs import OP_CASES, conv_params, fashion_or_noise, finish, graph_with, images, neuron, rng, small_cnn
from click.testing import CliRunner

import snnc
from snnc.backend import backend_names, get_backend
from snnc.cli import main
from snnc.errors import BackendError
from snnc.ir import Graph, infer_shapes
from snnc.passes import PassContext, parse_pipeline, run_passes
from snnc.simulator import simulate

pytest.importorskip("spikingjelly.activation_based.neuron", reason="SpikingJelly 2.0 is installed by `make setup`")
DEVICE = os.environ.get("SNNC_TEST_DEVICE", "cpu")
try:
    sj = get_backend("spikingjelly", device=DEVICE)
except BackendError as e:  # the backend package or a 2.0 SpikingJelly is missing
    pytest.skip(f"spikingjelly backend unavailable: {e}", allow_module_level=True)

MODELS = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist" / "models"


def assert_same(graph: Graph, x: np.ndarray, steps=(1, 5, 16), batch_size: int = 4, **kw) -> None:
    ref = simulate(graph, x, list(steps), batch_size=batch_size, device=DEVICE, **kw)
    got = sj.run(graph, x, list(steps), batch_size=batch_size, **kw)
    for t in steps:
        for a, b in zip(ref.outputs[t], got.outputs[t]):
            assert a.shape == b.shape
            np.testing.assert_array_equal(a, b, err_msg=f"T={t}")
    assert got.spike_rates == ref.spike_rates
    assert any(r > 0 for r in ref.spike_rates.values())  # the comparison saw spikes


@pytest.mark.parametrize("op_case", OP_CASES)
def test_every_op_matches_the_reference_spike_for_spike(op_case):
    g = graph_with(op_case)
    assert sj.unsupported(g) == []
    x = images(6, seed=4, shape=(2, 8, 8)) * 2
    assert_same(g, x)


def test_poisson_input_gives_the_same_spikes():
    g = graph_with("residual-add")
    assert_same(g, images(5, seed=2, shape=(2, 8, 8)), steps=(4, 9), encoding="poisson", seed=7)


def test_one_dimensional_convolution_and_pooling():
    r = rng(5)
    g = Graph("conv1d", "snn")
    x = g.add_input("x", (3, 20))
    h = g.add_node("conv", [x], {"pads": [1, 1]}, conv_params(r, 5, 3, nd=1)).output
    h = neuron(g, h, 5, r)
    h = g.add_node("avg_pool", [h], {"kernel": [2]}).output
    h = g.add_node("spiking_max_pool", [h], {"kernel": [2]}).output
    h = g.add_node("linear", [h], {}, {"weight": r.normal(0, 0.5, (4, 5)), "bias": r.normal(0, 0.1, 4)}).output  # row-wise linear
    infer_shapes(g)
    h = neuron(g, h, 5, r)
    g = finish(g, h)
    assert_same(g, rng(6).normal(0, 1, (7, 3, 20)).astype(np.float32))


def test_converted_pipeline_with_maxpool_and_residual():
    g = small_cnn(residual=True, maxpool=True)
    run_passes(g, parse_pipeline("canonicalize,fold-bn,balance-thresholds,insert-if"), PassContext(calib=images(32)))
    assert_same(g, images(9, seed=8), steps=(2, 7, 32))


@pytest.fixture(scope="module")
def fashion_models():
    x = fashion_or_noise(160, seed=3)
    return {name: snnc.convert(MODELS / f"{name}.onnx", timesteps=16, calib=x[:128], calibration="light", progress=False) for name in ("vgg_bn", "resnet")}, x[128:]


@pytest.mark.parametrize("name", ["vgg_bn", "resnet"])
def test_example_models_match_the_reference(fashion_models, name):
    models, x = fashion_models
    assert_same(models[name].snn, x, steps=(4, 16), batch_size=16)


def test_to_spikingjelly_hands_out_the_network(fashion_models):
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.neuron import ActivationAwareIFNode

    models, x = fashion_models
    sm = models["vgg_bn"]
    net = sm.to_spikingjelly(device=DEVICE)
    assert isinstance(net, torch.nn.Module)
    kinds = [type(m) for m in net.modules()]
    assert sum(issubclass(k, ActivationAwareIFNode) for k in kinds) == len(sm.snn.find("if_neuron"))
    xb = torch.from_numpy(x[:16]).to(DEVICE)
    with torch.inference_mode():
        y = net(xb, 16).cpu()
        seq = net.sequence(xb, 16)[0].cpu()
    np.testing.assert_array_equal(y.numpy(), sm.run(x[:16], 16, device=DEVICE, batch_size=16))
    # Step 4 of a 16-step run is the 4-step readout of the same run (on a GPU, runs of other
    # lengths batch the convolutions differently, and TF32 rounding then differs).
    np.testing.assert_array_equal(seq[3].numpy(), sm.simulate(x[:16], [4, 16], device=DEVICE, batch_size=16).output(4))
    functional.reset_net(net)  # SpikingJelly's own utilities work on it
    # A [T, B, ...] input sequence: the analog input repeated equals direct coding.
    with torch.inference_mode():
        rep = net(xb.unsqueeze(0).expand(16, *xb.shape).contiguous()).cpu()
    np.testing.assert_allclose(rep.numpy(), y.numpy(), atol=1e-5)


def test_cli_eval_run_and_check_on_spikingjelly(tmp_path, fashion_models):
    models, x = fashion_models
    art = tmp_path / "vgg.snn"
    models["vgg_bn"].save(art)
    data = tmp_path / "d.npz"
    np.savez(data, x=x[:20], y=np.zeros(20, dtype=np.int64))
    runner = CliRunner()
    res = runner.invoke(main, ["eval", str(art), "--data", str(data), "-T", "4,8", "--backend", "spikingjelly", "--device", DEVICE, "--json", "--no-progress"])
    assert res.exit_code == 0, res.output
    sj_res = json.loads(res.output)
    ref = json.loads(runner.invoke(main, ["eval", str(art), "--data", str(data), "-T", "4,8", "--device", DEVICE, "--json", "--no-progress"]).output)
    assert sj_res["backend"] == "spikingjelly" and sj_res["results"] == ref["results"]
    out = tmp_path / "o.npz"
    res = runner.invoke(main, ["run", str(art), "--input", str(data), "-T", "8", "--backend", "spikingjelly", "--device", DEVICE, "-o", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(out)["outputs"], models["vgg_bn"].run(x[:20], 8, device=DEVICE))
    res = runner.invoke(main, ["check", str(MODELS / "resnet.onnx"), "--backend", "spikingjelly"])
    assert res.exit_code == 0, res.output
    assert "ok" in res.output


def test_unlowerable_nodes_are_listed_before_running():
    ann = small_cnn()  # ANN stage: relu and batch_norm have no SpikingJelly lowering
    problems = sj.unsupported(ann)
    assert {p.op for p in problems} == {"relu", "batch_norm"}
    with pytest.raises(BackendError, match="cannot run"):
        sj.check(ann)


def test_missing_spikingjelly_is_a_clear_error(monkeypatch):
    import importlib.metadata

    real = importlib.metadata.version

    def version(name):
        if name == "spikingjelly":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(BackendError, match="SpikingJelly is not installed; install it without its declared dependencies"):
        get_backend("spikingjelly")
    assert "spikingjelly" in backend_names()  # still listed; `snnc backends` says why it is unavailable
    res = CliRunner().invoke(main, ["backends"])
    assert res.exit_code == 0 and "unavailable" in res.output
    # The core keeps working.
    g = graph_with("concat")
    assert simulate(g, images(2, shape=(2, 8, 8)), 4).output(4).shape == (2, 7, 8, 8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    for name in ("spikingjelly", "reference"):
        with pytest.raises(BackendError, match="torch sees no CUDA device"):
            get_backend(name, device="cuda")
    g = graph_with("affine")
    sm = snnc.SpikingModel(g, g, {"timesteps": 4})
    art = tmp_path / "m.snn"
    sm.save(art)
    data = tmp_path / "x.npz"
    np.savez(data, x=images(2, shape=(2, 8, 8)))
    res = CliRunner().invoke(main, ["run", str(art), "--input", str(data), "--backend", "spikingjelly", "--device", "cuda", "-o", str(tmp_path / "o.npz")])
    assert res.exit_code == 2 and "no CUDA device" in res.output
    assert not (tmp_path / "o.npz").exists()


def test_mlp_with_a_static_first_layer_and_unit_spikes():
    r = rng(9)
    g = Graph("mlp", "snn")
    x = g.add_input("x", (16,))
    h = g.add_node("linear", [x], {}, {"weight": r.normal(0, 0.5, (12, 16)), "bias": r.normal(0, 0.1, 12)}).output
    h = neuron(g, h, 12, r, per="channel", scale="unit")
    h = g.add_node("linear", [h], {}, {"weight": r.normal(0, 0.5, (5, 12)), "bias": r.normal(0, 0.1, 5)}).output
    h = neuron(g, h, 5, r, per="layer")
    g = finish(g, h)
    assert_same(g, r.normal(0.5, 1, (9, 16)).astype(np.float32), steps=(1, 3, 30))


@pytest.mark.parametrize(("theta", "shape"), [(np.array([0.2, 0.5, 1.0, 2.0]).reshape(4, 1), (4, 4, 5)), (np.array([0.2, 0.7, 1.5]), (3, 3))])
def test_thresholds_broadcast_from_the_right_like_the_reference(theta, shape):
    # [C, 1] on [C, C, W] is one value per row, [C] on [C, L] one per position: not per channel.
    g = Graph("b", "snn")
    x = g.add_input("x", shape)
    h = g.add_node("if_neuron", [x], {}, {"threshold": theta, "v_init": np.zeros(1)}).output
    g = finish(g, h)
    assert_same(g, rng(2).uniform(0, 2, (3, *shape)).astype(np.float32), steps=(3, 12))


def test_bad_timesteps_and_devices_are_clear_errors():
    from snnc.errors import DataError

    g = graph_with("affine")
    with pytest.raises(DataError, match="timesteps must be a positive integer or a non-empty list"):
        sj.run(g, images(2, shape=(2, 8, 8)), [0, 3])
    for name in ("spikingjelly", "reference"):
        with pytest.raises(BackendError, match="unknown device 'gpu'"):
            get_backend(name, device="gpu")
