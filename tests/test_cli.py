"""The CLI end to end: convert, eval, run, inspect, check; exit codes and error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from snnc.cli import main

WIDE = {"COLUMNS": "240"}  # rich tables must not wrap the messages we look for


def invoke(*args: str):
    return CliRunner(env=WIDE).invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def artifact(digits_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "digits.snn"
    res = invoke(
        "convert", digits_model.onnx_path, "--timesteps", "32", "--calib", digits_model.calib_path, "-o", out,
        "--report", out.with_suffix(".json"), "--no-progress", "--time-passes", "--calibration", "light",
    )
    assert res.exit_code == 0, res.output
    out.with_suffix(".txt").write_text(res.output)
    return out


def test_convert_writes_artifact_report_and_summary(artifact, digits_model):
    report = json.loads(artifact.with_suffix(".json").read_text())
    prov = report["provenance"]
    assert prov["timesteps"] == 32 and prov["calibration_samples"] == 256
    assert prov["source"]["sha256"] and prov["import_check"]["max_abs_error"] < 1e-4
    assert prov["pipeline"].startswith("canonicalize,fold-bn,balance-thresholds")
    assert [p["name"] for p in prov["passes"]] == ["canonicalize", "fold-bn", "balance-thresholds", "insert-if", "calibrate-bias", "fuse-synapses"]
    assert prov["calibration"] == "light"
    assert prov["conversion_check"]["agreement"] > 0.9
    assert len(report["layers"]) == 3
    rec = prov["records"]["calibrate-bias"]
    assert rec["timesteps"] == 32 and [row["layer"] for row in rec["layers"]][-1].endswith("readout")
    summary = artifact.with_suffix(".txt").read_text()
    assert "calibrate-bias at T=32 on 256 samples" in summary and "RMS before" in summary
    assert "light (256 samples)" in summary


def test_convert_calibration_levels(digits_model, tmp_path):
    out = tmp_path / "none.snn"
    res = invoke("convert", digits_model.onnx_path, "-T", "8", "--calib", digits_model.calib_path, "-o", out, "--no-progress", "--calibration", "none")
    assert res.exit_code == 0, res.output
    assert "calibrate-" not in res.output and "none (256 samples)" in res.output
    out = tmp_path / "default.snn"
    res = invoke("convert", digits_model.onnx_path, "-T", "8", "--calib", digits_model.calib_path, "-o", out, "--no-progress")
    assert res.exit_code == 0, res.output
    assert "calibrate-weights at T=8" in res.output and "calibrate-potential at T=8" in res.output
    assert "advanced (256 samples)" in res.output
    res = invoke("convert", digits_model.onnx_path, "--calib", digits_model.calib_path, "--calibration", "heavy")
    assert res.exit_code == 2 and "heavy" in res.output


def test_eval_json_is_one_object(artifact, digits_model):
    res = invoke("eval", artifact, "--data", digits_model.test_path, "--timesteps", "8,32", "--json")
    assert res.exit_code == 0
    doc = json.loads(res.stdout)  # exactly one JSON document on stdout
    assert set(doc) == {"backend", "ann_accuracy", "results"}
    assert doc["backend"] == "reference"
    assert [r["timesteps"] for r in doc["results"]] == [8, 32]
    assert doc["ann_accuracy"] == pytest.approx(digits_model.ann_accuracy, abs=1e-9)
    r32 = doc["results"][1]
    assert r32["accuracy"] > doc["ann_accuracy"] - 0.05 and r32["agreement"] > 0.9
    assert set(r32) == {"timesteps", "accuracy", "agreement"}


def test_eval_without_labels_reports_agreement_only(artifact, digits_model, tmp_path):
    p = tmp_path / "nolabels.npz"
    np.savez(p, x=digits_model.x_test[:20])
    doc = json.loads(invoke("eval", artifact, "--data", p, "-T", "16", "--json").stdout)
    assert doc["ann_accuracy"] is None and doc["results"][0]["accuracy"] is None
    assert 0 <= doc["results"][0]["agreement"] <= 1


def test_run_writes_outputs(artifact, digits_model, tmp_path):
    inp, out = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(inp, x=digits_model.x_test[:7])
    res = invoke("run", artifact, "--input", inp, "--timesteps", "16", "-o", out, "--no-progress")
    assert res.exit_code == 0, res.output
    with np.load(out, allow_pickle=False) as z:
        assert z["outputs"].shape == (7, 10)


def test_inspect_and_check(artifact, digits_model):
    res = invoke("inspect", artifact)
    assert res.exit_code == 0 and "if_neuron" in res.stdout and "θ=" in res.stdout
    res = invoke("inspect", digits_model.onnx_path)
    assert res.exit_code == 0 and "conv" in res.stdout and "ANN stage" in res.stdout
    res = invoke("check", digits_model.onnx_path, "--backend", "reference")
    assert res.exit_code == 0 and "ok" in res.stdout
    res = invoke("check", digits_model.onnx_path, "--backend", "no-such-backend")
    assert res.exit_code == 2 and "unknown backend 'no-such-backend'" in res.output.replace("\n", " ")


def _error(res) -> str:
    return " ".join(res.stderr.split())


@pytest.mark.parametrize(
    "args, message",
    [
        (["convert", "missing.onnx", "--calib", "c.npz"], "error: model file 'missing.onnx' does not exist"),
        (["convert", "{onnx}"], "error: no calibration data: thresholds are chosen from the network's activations"),
        (["convert", "{onnx}", "--calib", "missing.npz"], "error: calibration file 'missing.npz' does not exist"),
        (["convert", "{onnx}", "--calib", "{bad}"], "error: calibration file '{bad}' has no array 'x' (arrays found: images)"),
        (["convert", "{onnx}", "--calib", "{calib}", "--threshold", "median"], "error: threshold method 'median' is not one of: max, mse, percentile:P"),
        (["convert", "{onnx}", "--calib", "{calib}", "--passes", "fold-bn,frobnicate"], "error: unknown pass 'frobnicate'"),
        (["convert", "{onnx}", "--calib", "{calib}", "--passes", "canonicalize,fold-bn"], "leaves the graph in the ANN stage; it must end with insert-if"),
        (["convert", "{onnx}", "--calib", "{wrongshape}"], "error: input data has per-sample shape [1, 4, 4] but the model expects [1, 8, 8]"),
        (["eval", "{artifact}", "--data", "{test}", "--backend", "loihi9"], "error: unknown backend 'loihi9'; available backends: reference"),
        (["eval", "{artifact}", "--data", "{test}", "--timesteps", "8,x"], "'8,x' is not a comma-separated list of integers"),
        (["eval", "{onnx}", "--data", "{test}"], "is not a snnc artifact"),
        (["eval", "{artifact}", "--data", "{badlabels}"], "labels must be integers"),
    ],
)
def test_user_errors_exit_2_with_message(args, message, artifact, digits_model, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 1, 8, 8)))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((2, 1, 4, 4), dtype=np.float32))
    badlabels = tmp_path / "badlabels.npz"
    np.savez(badlabels, x=digits_model.x_test[:3], y=np.array([0.5, 1.0, 2.0]))
    subst = {
        "{onnx}": str(digits_model.onnx_path), "{calib}": str(digits_model.calib_path), "{test}": str(digits_model.test_path),
        "{artifact}": str(artifact), "{bad}": str(bad), "{wrongshape}": str(wrong), "{badlabels}": str(badlabels),
    }
    filled = []
    for a in args:
        for k, v in subst.items():
            a = a.replace(k, v)
        filled.append(a)
    for k, v in subst.items():
        message = message.replace(k, v)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        res = CliRunner(env=WIDE).invoke(main, filled)
    finally:
        os.chdir(cwd)
    assert res.exit_code == 2, res.output
    assert message in _error(res), _error(res)
    assert "Traceback" not in res.output
    assert not list(Path(tmp_path).glob("*.snn")) and not list(Path(tmp_path).glob(".*.tmp"))


def test_real_process_exit_codes(digits_model, tmp_path):
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "snnc.cli", "convert", str(digits_model.onnx_path), "-o", str(tmp_path / "m.snn")]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("error: no calibration data")
    assert not (tmp_path / "m.snn").exists()
    res = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_unsupported_op_names_op_node_and_remedy(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"), helper.make_node("Sigmoid", ["h"], ["y"], name="act")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "sig.onnx")
    np.savez(tmp_path / "c.npz", x=np.random.rand(10, 4).astype(np.float32))
    res = CliRunner(env=WIDE).invoke(main, ["convert", str(tmp_path / "sig.onnx"), "--calib", str(tmp_path / "c.npz"), "-o", str(tmp_path / "m.snn")])
    assert res.exit_code == 2
    assert _error(res).startswith("error: unsupported op 'Sigmoid' at node 'act' (import): this Sigmoid is not part of SiLU")
    assert "Replace it by one of those" in _error(res) and "neurons approximate ReLU" in _error(res)
    assert not (tmp_path / "m.snn").exists()


def test_convert_writes_nothing_outside_its_outputs(digits_model, tmp_path):
    """`snnc convert` (whose import check runs onnxruntime) in a fresh process with an empty
    home: afterwards only the named artifact exists. onnxruntime 1.32 on Linux would otherwise
    leave a device id and a telemetry database under ~/.cache/Microsoft/DeveloperTools."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    proc = subprocess.run(
        [sys.executable, "-m", "snnc", "convert", str(digits_model.onnx_path), "--calib", str(digits_model.calib_path), "--calib-samples", "32",
         "-T", "8", "--calibration", "none", "--check-samples", "8", "--no-progress", "-o", "m.snn"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == ["work/m.snn"]
