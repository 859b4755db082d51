"""The front door for data files, options and the Python API (issue 15, items 8 and 9):
every bad value ends in an SnncError naming it (exit 2 from the CLI), before any work."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import snnc
from snnc.cli import main
from snnc.errors import CalibrationError, DataError, PassError, SnncError
from snnc.passes import default_pipeline, parse_pipeline
from snnc.simulator.budget import check_run_budget
from snnc.utils.io import load_npz


@pytest.fixture(scope="module")
def model(digits_model):
    return snnc.convert(str(digits_model.onnx_path), digits_model.x_train[:64], timesteps=4, calibration="none", calib_samples=64)


@pytest.fixture(scope="module")
def artifact(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("front_door") / "m.snn"
    model.save(path)
    return path


def invoke(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in res.output, res.output
    return res


def assert_refused(res, fragment: str) -> None:
    assert res.exit_code == 2, res.output
    assert fragment in res.output, res.output


# ------------------------------------------------------------------ data files
def test_npy_file_is_named_with_the_fix(digits_model, tmp_path):
    npy = tmp_path / "calib.npy"
    np.save(npy, digits_model.x_train[:16])
    with pytest.raises(DataError, match=r"is a \.npy file .*numpy\.savez"):
        load_npz(npy)
    assert_refused(invoke("convert", digits_model.onnx_path, "--calib", npy, "-o", tmp_path / "m.snn", "--no-progress"), ".npy file")
    assert not (tmp_path / "m.snn").exists()


def _forge_npz(path, key: str, claimed_shape: tuple[int, ...], real: np.ndarray) -> None:
    """An NPZ whose member header claims ``claimed_shape`` but holds ``real``'s bytes."""
    header = {"descr": np.lib.format.dtype_to_descr(real.dtype), "fortran_order": False, "shape": claimed_shape}
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(real.tobytes())
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{key}.npy", buf.getvalue())


def test_npz_header_claiming_huge_sample_count_is_refused_before_reading(tmp_path):
    bad = tmp_path / "huge.npz"
    _forge_npz(bad, "x", (10**12, 1, 8, 8), np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_npz(bad)


def test_npz_larger_than_memory_budget_is_refused(tmp_path):
    p = tmp_path / "big.npz"
    np.savez(p, x=np.zeros((64, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match="more than the .* of memory available"):
        load_npz(p, max_bytes=1024)
    assert load_npz(p)["x"].shape == (64, 1, 8, 8)


def test_unused_arrays_are_never_read(tmp_path):
    p = tmp_path / "extra.npz"
    _forge_npz(p, "junk", (10**9,), np.zeros(3, np.float32))  # corrupt, but nobody asked for it
    with zipfile.ZipFile(p, "a") as zf:
        import io

        buf = io.BytesIO()
        np.save(buf, np.ones((2, 1, 8, 8), np.float32))
        zf.writestr("x.npy", buf.getvalue())
    assert set(load_npz(p)) == {"x"}


def test_non_finite_input_names_the_first_bad_sample(digits_model, tmp_path):
    x = digits_model.x_test[:10].copy()
    x[7, 0, 3, 3] = np.nan
    p = tmp_path / "nan.npz"
    np.savez(p, x=x)
    with pytest.raises(DataError, match="sample 7 contains NaN"):
        load_npz(p)


@pytest.mark.parametrize("labels", [[100], [-1], [2**62]])
def test_labels_out_of_range_are_refused(artifact, digits_model, tmp_path, labels):
    p = tmp_path / "labels.npz"
    y = digits_model.y_test[:6].copy()
    y[2] = labels[0]
    np.savez(p, x=digits_model.x_test[:6], y=y)
    res = invoke("eval", artifact, "--data", p, "-T", "4", "--no-progress")
    assert_refused(res, "labels y range from")
    assert "10 classes" in res.output


def test_labels_of_the_wrong_shape_are_refused(model, digits_model):
    with pytest.raises(DataError, match="per-sample shape"):
        snnc.evaluate(model, digits_model.x_test[:4], np.zeros((4, 3), np.int64), timesteps=4)


# ---------------------------------------------------------------------- options
@pytest.mark.parametrize(
    "threshold",
    ["percentile:50 method=max", "percentile:", "percentile:abc", "percentile:0", "percentile:101", "max:3", "Max", "mse ", "percentile:nan", ""],
)
def test_threshold_option_is_parsed_strictly(threshold):
    with pytest.raises(PassError, match="threshold"):
        default_pipeline(threshold)


@pytest.mark.parametrize("threshold, option", [("max", "method=max"), ("mse", "method=mse"), ("percentile:99.9", "percentile=99.9")])
def test_threshold_option_accepts_the_documented_forms(threshold, option):
    assert option in default_pipeline(threshold)


@pytest.mark.parametrize(
    "pipeline, fragment",
    [
        ("", "pipeline is empty"),
        (" , ", "pipeline is empty"),
        ("insert-if{maxpool=gate}fold-bn", "expected ','"),
        ("balance-thresholds{method=max method=mse}", "given twice"),
        ("balance-thresholds{method=}", "must be key=value"),
        ("balance-thresholds{percentile=inf}", "finite number"),
        ("fold-bn insert-if", "is not a pass name"),
    ],
)
def test_pipeline_strings_are_parsed_strictly(pipeline, fragment):
    with pytest.raises(PassError, match=fragment):
        parse_pipeline(pipeline)


def test_cli_refuses_empty_passes_and_loose_threshold(digits_model, tmp_path):
    out = tmp_path / "m.snn"
    base = ["convert", digits_model.onnx_path, "--calib", digits_model.calib_path, "-o", out, "--no-progress"]
    assert_refused(invoke(*base, "--passes", ""), "pipeline is empty")
    assert_refused(invoke(*base, "--threshold", "percentile:50 method=max"), "threshold method")
    assert_refused(invoke(*base, "--threshold", "percentile:"), "threshold method")
    assert not out.exists()


def test_absurd_timesteps_are_refused_with_the_estimate(model, digits_model, tmp_path):
    res = invoke("convert", digits_model.onnx_path, "--calib", digits_model.calib_path, "-T", "1000000000", "-o", tmp_path / "m.snn", "--no-progress")
    assert_refused(res, "too large for this machine")
    assert "GiB" in res.output and not (tmp_path / "m.snn").exists()
    with pytest.raises(DataError, match="would take at least"):
        check_run_budget(model.snn, 10**6, 10**6)
    check_run_budget(model.snn, 32, 1000)  # an ordinary run passes


# ------------------------------------------------------------------- Python API
@pytest.mark.parametrize("timesteps", ["8", 8.5, 0, -3, True, None, [], [8, "16"], [0, 8]])
def test_convert_refuses_bad_timesteps(digits_model, timesteps):
    with pytest.raises(DataError, match="timesteps must be a positive integer"):
        snnc.convert(str(digits_model.onnx_path), digits_model.x_train[:16], timesteps=timesteps)


def test_convert_takes_a_calibration_file_path(digits_model):
    sm = snnc.convert(str(digits_model.onnx_path), str(digits_model.calib_path), timesteps=4, calibration="none", calib_samples=32, check=False)
    assert sm.provenance["calibration_samples"] == 32


@pytest.mark.parametrize(
    "calib, error, fragment",
    [
        (None, CalibrationError, "no calibration data"),
        ("no-such-file.npz", DataError, "does not exist"),
        (np.zeros((0, 1, 8, 8), np.float32), DataError, "is empty"),
        (np.array(["a", "b"]), DataError, "numeric array"),
        (np.zeros(5, np.float32), DataError, "must be a batch"),
    ],
)
def test_convert_refuses_bad_calibration_data(digits_model, calib, error, fragment):
    with pytest.raises(error, match=fragment):
        snnc.convert(str(digits_model.onnx_path), calib, timesteps=4)


def test_convert_refuses_non_finite_calibration_data(digits_model):
    x = digits_model.x_train[:16].copy()
    x[3] = np.inf
    with pytest.raises(DataError, match="sample 3 contains NaN or infinite"):
        snnc.convert(str(digits_model.onnx_path), x, timesteps=4)


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda m, x: m.run(x, 0), "timesteps must be"),
        (lambda m, x: m.run(x, "8"), "timesteps must be"),
        (lambda m, x: m.run(x, 8.5), "timesteps must be"),
        (lambda m, x: m.run(x[:0]), "is empty"),
        (lambda m, x: m.run(np.full_like(x, np.nan)), "sample 0 contains NaN"),
        (lambda m, x: m.simulate(x, timesteps=[]), "non-empty list"),
        (lambda m, x: m.simulate(x, timesteps=[4, 0]), "non-empty list"),
        (lambda m, x: m.simulate(x, 4, batch_size=0), "batch_size must be a positive integer"),
        (lambda m, x: snnc.evaluate(m, x, timesteps="4"), "timesteps must be"),
        (lambda m, x: snnc.calibrate(m, x, timesteps=2.5), "timesteps must be"),
    ],
)
def test_model_api_refuses_bad_arguments(model, digits_model, call, fragment):
    with pytest.raises(SnncError, match=fragment):
        call(model, digits_model.x_test[:4])


def test_bad_stored_timesteps_is_an_artifact_error(model):
    import copy

    from snnc.errors import ArtifactError

    m = copy.copy(model)
    m.provenance = dict(model.provenance, timesteps="32")
    with pytest.raises(ArtifactError, match="stored default T"):
        m.run(np.zeros((1, 1, 8, 8), np.float32))


def test_run_writes_every_output_of_a_two_output_model(tmp_path):
    import torch

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(6, 8)
            self.a = torch.nn.Linear(8, 3)
            self.b = torch.nn.Linear(8, 2)

        def forward(self, x):
            h = torch.relu(self.body(x))
            return self.a(h), self.b(h)

    torch.manual_seed(0)
    onnx_path = tmp_path / "two.onnx"
    torch.onnx.export(TwoHeads().eval(), torch.zeros(1, 6), str(onnx_path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "b"}})
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.random((64, 6), dtype=np.float32))
    np.savez(tmp_path / "in.npz", x=rng.random((5, 6), dtype=np.float32))
    res = invoke("convert", onnx_path, "--calib", tmp_path / "calib.npz", "-T", "4", "--calibration", "none", "-o", tmp_path / "two.snn", "--no-progress")
    assert res.exit_code == 0, res.output
    res = invoke("run", tmp_path / "two.snn", "--input", tmp_path / "in.npz", "-o", tmp_path / "out.npz", "--no-progress")
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "out.npz") as z:
        assert z["outputs"].shape == (5, 3) and z["outputs_1"].shape == (5, 2)
    sm = snnc.load(tmp_path / "two.snn")
    sim = sm.simulate(np.load(tmp_path / "in.npz")["x"], 4)
    with np.load(tmp_path / "out.npz") as z:
        np.testing.assert_array_equal(z["outputs_1"], sim.output(4, 1))


@pytest.mark.parametrize(
    "args",
    [
        ["convert", "{dir}", "--calib", "{calib}"],
        ["convert", "{onnx}", "--calib", "{dir}"],
        ["convert", "{onnx}", "--calib", "{calib}", "-o", "{dir}"],
        ["inspect", "{dir}"],
        ["check", "{dir}"],
        ["eval", "{dir}", "--data", "{test}"],
        ["eval", "{artifact}", "--data", "{dir}"],
        ["run", "{artifact}", "--input", "{test}", "-o", "{dir}"],
        ["export", "{artifact}", "-o", "{dir}"],
    ],
)
def test_a_directory_where_a_file_belongs_is_one_line(args, artifact, digits_model, tmp_path):
    d = tmp_path / "adir"
    d.mkdir()
    sub = {"{dir}": str(d), "{onnx}": str(digits_model.onnx_path), "{calib}": str(digits_model.calib_path), "{test}": str(digits_model.test_path), "{artifact}": str(artifact)}
    res = invoke(*[sub.get(a, a) for a in args], *(["--no-progress"] if args[0] in ("convert", "eval", "run") else []))
    assert res.exit_code == 2, res.output
    assert "directory" in res.output and "Usage:" not in res.output, res.output
    assert list(d.iterdir()) == []


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["convert", "{onnx}", "--calib", "{calib}", "--passes", "canonicalize,fold-bn,balance-thresholds,insert-if,calibrate-bias{samples=0}"], "must be positive"),
        (["convert", "{onnx}", "--calib", "{calib}", "--passes", "canonicalize,fold-bn,balance-thresholds{bins=-3},insert-if"], "must be positive"),
        (["convert", "{onnx}", "--calib", "{calib}", "--seed", "99999999999999999999999"], "--seed"),
        (["eval", "{artifact}", "--data", "{test}", "--fail-under", "nan", "-T", "2"], "--fail-under must be a number"),
        (["export", "{artifact}", "--dt", "1e-320", "-o", "{out}"], "dt must be a positive number"),
    ],
)
def test_out_of_range_numbers_are_refused(args, fragment, artifact, digits_model, tmp_path):
    sub = {"{onnx}": str(digits_model.onnx_path), "{calib}": str(digits_model.calib_path), "{test}": str(digits_model.test_path), "{artifact}": str(artifact), "{out}": str(tmp_path / "x.nir")}
    res = invoke(*[sub.get(a, a) for a in args], *(["--no-progress"] if args[0] in ("convert", "eval") else []))
    assert_refused(res, fragment)
    assert not (tmp_path / "x.nir").exists()


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "0"])
def test_api_refuses_bad_seeds(digits_model, seed):
    with pytest.raises(DataError, match="seed must be an integer"):
        snnc.convert(str(digits_model.onnx_path), digits_model.x_train[:16], timesteps=4, seed=seed)


def test_api_load_and_convert_name_what_they_got(tmp_path):
    from snnc.errors import ArtifactError

    with pytest.raises(ArtifactError, match="given by its path"):
        snnc.load(None)
    with pytest.raises(DataError, match="is not a regular file"):
        snnc.convert(str(tmp_path), np.zeros((4, 1, 8, 8), np.float32))


@pytest.mark.parametrize(
    "records, fragment",
    [
        ({"calibrate-bias": 5}, "provenance.records.calibrate-bias: expected an object"),
        ({"calibrate-bias": {"timesteps": 4, "samples": 8, "seconds": 1.0, "layers": [{"layer": "a", "before": {"mean": 0, "rms": 0}}]}}, "after"),
        ({"balance-thresholds": {"method": "max", "layers": {"Relu": {"activation_max": "big"}}}}, "activation_max: expected a finite number"),
    ],
)
def test_provenance_records_are_checked_on_load(artifact, tmp_path, records, fragment):
    """The conversion summary, the report and `snnc calibrate` read these records."""
    import json

    from snnc.errors import ArtifactError

    with zipfile.ZipFile(artifact) as src:
        manifest, weights = json.loads(src.read("manifest.json")), src.read("weights.npz")
    manifest["provenance"]["records"] = records
    bad = tmp_path / "records.snn"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr(zipfile.ZipInfo("weights.npz"), weights)
    with pytest.raises(ArtifactError, match=fragment):
        snnc.load(bad)


# ------------------------------------------- found by a hostile-user campaign
def test_report_never_overwrites_its_inputs(artifact, digits_model, tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    victim = out / "report.json"
    victim.write_bytes(artifact.read_bytes())
    res = invoke("report", victim, "--data", digits_model.test_path, "-T", "2", "--limit", "8", "--ablation-samples", "0", "-o", out, "--no-progress")
    assert_refused(res, "is the artifact")
    assert victim.read_bytes() == artifact.read_bytes()
    data = out / "index.html"
    data.write_bytes(digits_model.test_path.read_bytes())
    res = invoke("report", artifact, "--data", data, "-T", "2", "--limit", "8", "--ablation-samples", "0", "-o", out, "--no-progress")
    assert_refused(res, "is the data file")
    assert data.read_bytes() == digits_model.test_path.read_bytes()


def test_a_fifo_as_data_is_refused_not_read(artifact, tmp_path):
    import os

    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    res = invoke("run", artifact, "--input", fifo, "-o", tmp_path / "o.npz", "--no-progress")  # would block on open()
    assert_refused(res, "not a regular file")


def test_unused_labels_do_not_matter_to_run(artifact, digits_model, tmp_path):
    p = tmp_path / "in.npz"
    np.savez(p, x=digits_model.x_test[:3], y=np.array([True, False, True]))
    res = invoke("run", artifact, "--input", p, "-o", tmp_path / "o.npz", "--no-progress", "-T", "2")
    assert res.exit_code == 0, res.output


def test_values_beyond_float32_are_refused_without_a_warning(artifact, tmp_path):
    p = tmp_path / "big.npz"
    np.savez(p, x=np.full((4, 1, 8, 8), 1e300))
    res = invoke("run", artifact, "--input", p, "-o", tmp_path / "o.npz", "--no-progress")
    assert_refused(res, "sample 0 contains NaN or infinite")
    assert "Warning" not in res.output


@pytest.mark.parametrize("args", [["eval", "{artifact}", "--data", "{test}", "-T", "0"], ["run", "{artifact}", "--input", "{test}", "-o", "{out}", "-T", "0"]])
def test_bad_option_values_are_one_line(args, artifact, digits_model, tmp_path):
    sub = {"{artifact}": str(artifact), "{test}": str(digits_model.test_path), "{out}": str(tmp_path / "o.npz")}
    res = invoke(*[sub.get(a, a) for a in args])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--help" in lines[0], res.output


def test_check_refuses_unknown_backends_and_splits_lists(artifact):
    assert_refused(invoke("check", artifact, "--backend", "bogus"), "unknown backend 'bogus'")
    res = invoke("check", artifact, "--backend", "reference,reference")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda m, x: m.run(__import__("torch").empty(2, 1, 8, 8, device="meta"), 2), "cannot read the torch tensor"),
        (lambda m, x: m.simulate(x, 2, encoding="poisson", seed=2**70), "seed must be"),
        (lambda m, x: m.simulate(x, 2, progress="yes"), "progress must be"),
        (lambda m, x: m.ann_outputs(x, batch_size=0), "batch_size must be"),
        (lambda m, x: snnc.evaluate(m, x, np.int64(3), timesteps=2), "single number"),
        (lambda m, x: m.save(None), "must be a path"),
        (lambda m, x: m.export_nir("n.nir", dt="1"), "dt must be a positive number"),
        (lambda m, x: snnc.convert(m.ann, x, print_after="yes"), "print_after must be"),
    ],
)
def test_api_misuse_found_by_the_campaign(model, digits_model, call, fragment):
    with pytest.raises(SnncError, match=fragment):
        call(model, digits_model.x_test[:2])


def test_bfloat16_tensors_are_read(model, digits_model):
    import torch

    x = digits_model.x_test[:2]
    np.testing.assert_array_equal(model.run(torch.tensor(x).bfloat16(), 2), model.run(torch.tensor(x).bfloat16().float().numpy(), 2))


def test_torch_models_that_cannot_be_traced_are_named(digits_model):
    import torch

    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(DataError, match="TorchScript"):
        snnc.convert(torch.jit.script(lin), digits_model.x_train[:16], timesteps=2)
    with pytest.raises(DataError, match="meta device"):
        snnc.convert(lin.to("meta"), digits_model.x_train[:16], timesteps=2)


def test_histogram_bins_are_bounded(digits_model):
    with pytest.raises(PassError, match="bins must be at most"):
        snnc.convert(
            str(digits_model.onnx_path), digits_model.x_train[:16], timesteps=2, passes="canonicalize,fold-bn,balance-thresholds{bins=100000000},insert-if"
        )


def test_half_precision_torch_models_get_the_fix(digits_model):
    import torch

    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).half()
    with pytest.raises(DataError, match=r"float16; .*model\.float\(\)"):
        snnc.convert(lin, digits_model.x_train[:16], timesteps=2)
