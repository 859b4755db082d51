"""snnc finetune / snnc.finetune: surrogate-gradient training of a converted SNN.

The forward pass is the op set's (bit-identical to the reference simulator), the hand-written
BPTT equals autograd through the same surrogate, training lowers the loss without changing the
graph's structure or its neurons, and bad input is a clear error (exit 2, nothing written).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import snnc
from snnc.cli import main
from snnc.errors import DataError
from snnc.ir import Graph, infer_shapes, verify
from snnc.ir.executor import Executor, Timed
from snnc.ir.ops import spike_counts_step
from snnc.model import SpikingModel
from snnc.train import TrainingExecutor, loss_fn, surrogate_if_sequence

T = 4
VARIANTS = [
    {},
    {"reset": "zero"},
    {"spike_scale": "unit"},
    {"signed": True},
    {"max_spikes": 3},
    {"max_spikes": 2, "signed": True, "reset": "zero"},
]


def _neuron_graph(attrs: dict, shape=(3, 5), seed: int = 0) -> tuple[Graph, object]:
    r = np.random.default_rng(seed)
    g = Graph("one_neuron", "snn")
    x = g.add_input("x", shape)
    th = r.uniform(0.3, 1.0, (shape[0], 1))
    n = g.add_node("if_neuron", [x], attrs, {"threshold": th, "v_init": 0.5 * th})
    g.set_outputs([g.add_node("readout", [n.output]).output])
    infer_shapes(g)
    verify(g, "snn")
    return g, n


def _autograd_reference(x_seq, attrs, theta, v_init):
    """The same surrogate written with autograd ops (straight-through on the window)."""
    a = {"reset": "subtract", "spike_scale": "threshold", "max_spikes": 1, "signed": False, **attrs}
    K = a["max_spikes"]
    v = torch.zeros(x_seq.shape[1:]) + v_init
    n = torch.zeros(x_seq.shape[1:]) if a["signed"] else None
    ys = []
    for t in range(x_seq.shape[0]):
        v = v + x_seq[t]
        with torch.no_grad():
            s0 = spike_counts_step(v.detach(), theta, n, K)
            lo = torch.zeros(()) if n is None else -n.clamp(max=float(K))
            window = ((v >= (lo + 0.5) * theta) & (v < (K + 0.5) * theta)).float()
        u = v / theta * window
        s = s0 + (u - u.detach())
        v = v - s * theta if a["reset"] == "subtract" else v.masked_fill(s0 != 0, 0.0)
        if n is not None:
            n = n + s0
        ys.append(s * theta if a["spike_scale"] == "threshold" else s)
    return torch.stack(ys)


@pytest.mark.parametrize("attrs", VARIANTS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()) or "plain")
def test_surrogate_neuron_forward_is_the_op_and_backward_is_bptt(attrs):
    g, node = _neuron_graph(attrs)
    x = torch.from_numpy(np.random.default_rng(1).normal(0.3, 0.8, (6, 8, 3, 5)).astype(np.float32))
    want = Executor(g, "cpu", 6).call_stateful(node, [Timed(x, False)]).data  # the op's own sequence
    ex = Executor(g, "cpu", 6)
    resolved, p = ex.attrs(node), ex.params(node)
    xg = x.clone().requires_grad_(True)
    got = surrogate_if_sequence(xg, resolved, p["threshold"], p["v_init"])
    assert torch.equal(got.detach(), want)
    k = resolved["max_spikes"]
    counts = got.detach() / (p["threshold"] if resolved["spike_scale"] == "threshold" else 1.0)
    assert torch.allclose(counts, counts.round(), atol=1e-5) and counts.max() <= k and (resolved["signed"] or counts.min() >= 0)
    w = torch.from_numpy(np.random.default_rng(2).normal(0, 1, got.shape).astype(np.float32))
    (got * w).sum().backward()
    xr = x.clone().requires_grad_(True)
    (_autograd_reference(xr, attrs, p["threshold"], p["v_init"]) * w).sum().backward()
    assert torch.allclose(xg.grad, xr.grad, atol=1e-5), (xg.grad - xr.grad).abs().max()
    assert xg.grad.abs().sum() > 0


def test_losses():
    out = torch.randn(T, 5, 3)
    y = torch.tensor([0, 1, 2, 1, 0])
    ce_t = sum(torch.nn.functional.cross_entropy(out[t], y) for t in range(T)) / T
    mse = ((out - 1.0) ** 2).mean()
    assert torch.allclose(loss_fn("tet", out, y), (1 - 1e-3) * ce_t + 1e-3 * mse)
    assert torch.allclose(loss_fn("tet", out, y, tet_lambda=0.0), ce_t)
    assert torch.allclose(loss_fn("ce", out, y), torch.nn.functional.cross_entropy(out.mean(0), y))


@pytest.fixture(scope="module")
def digits_snn(digits_model, tmp_path_factory):
    """The digits CNN converted for T=4 without calibration (room to improve), saved."""
    sm = snnc.convert(digits_model.onnx_path, calib=np.load(digits_model.calib_path)["x"], timesteps=T, calibration="none")
    path = tmp_path_factory.mktemp("ft") / "digits_T4.snn"
    sm.save(path)
    return sm, path


def _loss_on(sm: SpikingModel, x, y, loss="tet") -> float:
    ex = TrainingExecutor(sm.snn, "cpu", T, {})
    with torch.no_grad():
        return float(loss_fn(loss, ex.forward(torch.from_numpy(x)), torch.from_numpy(y)))


def test_finetune_lowers_the_loss_keeps_the_structure_and_is_exact(digits_snn, digits_model, tmp_path):
    sm, _ = digits_snn
    x, y = digits_model.x_test[:320], digits_model.y_test[:320]
    new = snnc.finetune(sm, x, y, epochs=2, lr=2e-3, batch_size=32, val_fraction=0.25, patience=None, seed=0)
    rec = new.provenance["finetuned"][-1]
    assert rec["epochs_run"] == 2 and rec["loss"] == "tet" and rec["tet_lambda"] == 1e-3 and rec["val_samples"] == 80
    assert [h["epoch"] for h in rec["history"]] == [0, 1, 2] and rec["seconds"] > 0
    assert rec["val_accuracy"] >= rec["val_accuracy_before"]  # the best epoch (epoch 0 included) is kept
    assert rec["best_epoch"] > 0 and rec["val_accuracy"] > rec["val_accuracy_before"]  # uncalibrated at T=4: room to improve
    assert rec["history"][2]["train_loss"] < rec["history"][1]["train_loss"]
    assert _loss_on(new, x, y) < _loss_on(sm, x, y)
    assert "finetuned" not in sm.provenance  # the input model is not changed
    # same graph: nodes, ops, attributes, neurons' thresholds and initial potentials
    assert [(n.name, n.op, n.attrs) for n in new.snn.nodes] == [(n.name, n.op, n.attrs) for n in sm.snn.nodes]
    for a, b in zip(sm.snn.nodes, new.snn.nodes):
        if a.spec.has("neuron"):
            assert all(np.array_equal(a.params[k], b.params[k]) for k in ("threshold", "v_init"))
    assert any(not np.array_equal(a.params["weight"], b.params["weight"]) for a, b in zip(sm.snn.having("synaptic"), new.snn.having("synaptic")))
    # the saved artifact, simulated by the reference simulator, is the network that was trained
    path = tmp_path / "ft.snn"
    new.save(path)
    loaded = snnc.load(path)
    ref = loaded.run(x[:64], T)
    ex = TrainingExecutor(new.snn, "cpu", T, {})
    xt = torch.from_numpy(x[:64])
    readout = ex.run(xt)[0].data[-1]  # grad mode: the surrogate neuron's forward
    assert np.array_equal(readout.detach().numpy(), ref)
    res = loaded.simulate(x[:64], T)
    assert set(res.spike_rates) == {n.name for n in new.snn.having("neuron")}


def test_finetune_burst_neuron_keeps_its_counts(digits_model):
    sm = snnc.convert(digits_model.onnx_path, calib=np.load(digits_model.calib_path)["x"][:128], timesteps=2, calibration="none", neuron="signed-burst:2", check=False)
    x, y = digits_model.x_test[:160], digits_model.y_test[:160]
    new = snnc.finetune(sm, x, y, epochs=1, lr=2e-3, batch_size=32, loss="ce", val_fraction=0.2)
    assert new.provenance["finetuned"][-1]["loss"] == "ce" and new.timesteps == 2
    neurons = {n.name: n for n in new.snn.having("neuron")}
    seen = []

    def check(node, value):
        if node.name in neurons:
            q = value.data / torch.from_numpy(node.params["threshold"])
            assert torch.allclose(q, q.round(), atol=1e-4) and q.max() <= 2 and q.min() >= -2
            seen.append(node.name)

    from snnc.simulator.reference import ReferenceSimulator

    ReferenceSimulator(new.snn).simulate(torch.from_numpy(x[:32]), [2], observe=check)
    assert sorted(seen) == sorted(neurons) and all(n.attrs["max_spikes"] == 2 and n.attrs["signed"] for n in neurons.values())


def test_finetune_api_errors(digits_snn, digits_model):
    sm, _ = digits_snn
    x, y = digits_model.x_test[:40], digits_model.y_test[:40]
    with pytest.raises(DataError, match="labels"):
        snnc.finetune(sm, x, None)
    with pytest.raises(DataError, match="labels"):
        snnc.finetune(sm, x, y[:10])
    with pytest.raises(DataError, match="dtype"):
        snnc.finetune(sm, x, y.astype(np.float32))
    with pytest.raises(DataError, match="per-sample shape"):
        snnc.finetune(sm, x[:, :, :4], y)
    with pytest.raises(DataError, match="epochs"):
        snnc.finetune(sm, x, y, epochs=1.5)
    with pytest.raises(DataError, match="loss"):
        snnc.finetune(sm, x, y, loss="mse")
    with pytest.raises(DataError, match="lr"):
        snnc.finetune(sm, x, y, lr=float("nan"))
    with pytest.raises(DataError, match="val_fraction"):
        snnc.finetune(sm, x, y, val_fraction=1.0)
    g = sm.snn.clone()  # a model whose output is not a readout
    ro = g.outputs[0].producer
    g.set_outputs([ro.inputs[0]])
    with pytest.raises(DataError, match="readout"):
        snnc.finetune(SpikingModel(g, sm.ann, dict(sm.provenance)), x, y)


def _invoke(*args):
    return CliRunner(env={"COLUMNS": "240"}).invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_finetune_cli(digits_snn, digits_model, tmp_path):
    _, artifact = digits_snn
    data = tmp_path / "train.npz"
    np.savez(data, x=digits_model.x_test[:120], y=digits_model.y_test[:120])
    out = tmp_path / "ft.snn"
    res = _invoke("finetune", artifact, "--data", data, "--epochs", "1", "--batch-size", "40", "-o", out, "--json")
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["artifact"] == str(out) and rec["epochs_run"] == 1 and rec["train_samples"] == 108 and len(rec["history"]) == 2
    assert snnc.load(out).provenance["finetuned"][-1]["best_epoch"] == rec["best_epoch"]
    res = _invoke("finetune", artifact, "--data", data, "--epochs", "1", "--batch-size", "40", "-o", tmp_path / "table.snn", "--no-progress", "--val-fraction", "0")
    assert res.exit_code == 0 and "wrote" in res.output and (tmp_path / "table.snn").exists()
    # user errors: exit 2, one line, nothing written
    nolabels = tmp_path / "x_only.npz"
    np.savez(nolabels, x=digits_model.x_test[:20])
    bad = tmp_path / "bad.snn"
    for args in (
        ("--data", nolabels),
        ("--data", data, "--epochs", "1.5"),
        ("--data", data, "--epochs", "0"),
        ("--data", data, "--loss", "mse"),
        ("--data", data, "--val-fraction", "1"),
        ("--data", tmp_path / "missing.npz"),
        ("--data", data, "-o", artifact),  # the input itself
    ):
        res = _invoke("finetune", artifact, "-o", bad, *args)
        assert res.exit_code == 2, (args, res.output)
        assert "error" in res.output and "Traceback" not in res.output
        assert not bad.exists()
    if not torch.cuda.is_available():
        res = _invoke("finetune", artifact, "--data", data, "-o", bad, "--device", "cuda")
        assert res.exit_code == 2 and "CUDA" in res.output and not bad.exists()
