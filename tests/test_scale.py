"""Issue 16: exact sums, the spill store, memory-bounded calibration, and torchrun ranks.

The distributed tests launch ``torchrun --nproc-per-node 2 --no-python snnc ...`` on gloo
(two CPU ranks, one thread each) and compare with one process with one thread: the same
batches on the same thread count, so the per-batch arithmetic is identical and only the
reductions differ, which ExactSum makes exact.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from _graphs import small_cnn
from test_calibration import CONVERT, _images_for, concat_graph, run

import snnc
from snnc.parallel import ExactSum, Group
from snnc.passes.calibrate import FitDraw
from snnc.utils.spill import SpillStore

BIN = Path(sys.executable).parent


# ------------------------------------------------------------------ ExactSum
def test_exact_sum_does_not_depend_on_order_or_split():
    rng = np.random.default_rng(0)
    vals = [rng.standard_normal(6) * 10.0 ** rng.integers(-300, 300, 6) for _ in range(40)]
    vals.append(np.array([0.0, -0.0, 5e-324, -5e-324, 1.7e308, -1.7e308]))
    whole, parts = ExactSum(6), [ExactSum(6), ExactSum(6), ExactSum(6)]
    for i, v in enumerate(vals):
        whole.add(v, 1)
        parts[i % 3].add(v, 1)
    backwards = ExactSum(6)
    for v in reversed(vals):
        backwards.add(v, 1)
    assert np.array_equal(whole.limbs, backwards.limbs)
    assert np.array_equal(whole.limbs, sum(p.limbs for p in parts))  # what all_reduce(SUM) computes
    exact = np.array([math.fsum(v[i] for v in vals) for i in range(6)])
    np.testing.assert_allclose(whole.value(), exact, rtol=2e-16, atol=0)
    assert whole.count == len(vals)


def test_exact_sum_is_exact_where_float_sums_are_not():
    acc = ExactSum(1)
    for v in (1e16, 1.0, -1e16, 1.0):
        acc.add(np.array([v]))
    assert acc.value()[0] == 2.0
    assert (1e16 + 1.0) - 1e16 + 1.0 != 2.0  # the float sum loses the first 1


def test_exact_sum_refuses_non_finite():
    with pytest.raises(snnc.SnncError, match="not finite"):
        ExactSum(2).add(np.array([1.0, np.nan]))


@pytest.mark.parametrize("n", [0, 1, 5, 8, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_cover_the_range_in_order(n, world):
    shards = [Group(r, world).shard(n) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


# ------------------------------------------------------- weight-fit minibatches
def _draws(spans: list[range], m: int, seed: int = 3) -> list[FitDraw]:
    n = sum(map(len, spans))
    return [FitDraw(torch.Generator().manual_seed(seed), n, m, spans, r) for r in range(len(spans))]


def test_fit_draw_alone_is_uniform_over_all_samples():
    (d,) = _draws([range(50)], 16)
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        assert d.next() == torch.randint(0, 50, (16,), generator=gen).tolist()
    assert d.denominator == 16


@pytest.mark.parametrize("spans", [[range(0, 32), range(32, 64)], [range(0, 48), range(48, 80), range(80, 90)], [range(0, 40), range(0)]])
def test_fit_draw_gives_each_rank_a_fixed_share_of_its_own_samples(spans):
    m = 64
    draws = _draws(spans, m)
    for _ in range(20):
        for d, span in zip(draws, spans):
            got = d.next()
            assert len(got) == d.count and all(i in span for i in got)
    counts = [d.count for d in draws]
    n = sum(map(len, spans))
    for d, span in zip(draws, spans):  # each term weighs its rank's share of the samples over its count
        assert d.count / d.denominator == pytest.approx(len(span) / n, abs=0, rel=1e-12)
    assert sum(counts) >= m and all(c == 0 for c, s in zip(counts, spans) if not len(s))
    assert all(c >= 1 for c, s in zip(counts, spans) if len(s))


@pytest.mark.parametrize("spans, m", [([range(0, 48), range(48, 80), range(80, 90)], 24), ([range(0, 100), range(100, 101)], 4)])
def test_fit_draw_weights_estimate_the_mean_over_all_samples(spans, m):
    """Sum over ranks of (weighted) per-rank sums estimates the mean of f over all samples,
    f(i) = i: spans of 48, 32 and 10 samples; and 100 and 1 with m = 4, where the one-sample
    rank still draws one (counts 4 and 1, not proportional: weighting by the count alone
    would give 74.5 instead of 50)."""
    draws, steps, n = _draws(spans, m), 4000, sum(map(len, spans))
    est = 0.0
    for _ in range(steps):
        est += sum(sum(d.next()) / d.denominator for d in draws)
    assert abs(est / steps - np.mean(range(n))) < 0.03 * n


# ---------------------------------------------------------------- the store
def test_spill_store_keeps_memory_under_budget_and_cleans_up(tmp_path):
    arrays = [np.full((100,), i, dtype=np.uint8) for i in range(10)]
    with SpillStore(250, tmp_path) as store:
        for i, a in enumerate(arrays):
            store.put("k", i, a)
        store.put("other", 0, np.arange(3.0))
        assert store.peak_in_memory == 224 and store.spilled == 800  # 2 arrays, then the rest on disk; "other" fits again
        assert all(np.array_equal(store.get("k", i), a) for i, a in enumerate(arrays))
        store.drop("k")
        assert np.array_equal(store.get("other", 0), np.arange(3.0))
        store.put("other", 0, np.arange(3.0) + 1)  # replaced, not counted twice
        assert np.array_equal(store.get("other", 0), np.arange(3.0) + 1) and store.in_memory == 24
        store.put("k", 0, np.zeros(300, np.uint8))  # over the budget: on disk ...
        store.put("k", 0, np.ones(300, np.uint8))  # ... and replaced there
        assert np.array_equal(store.get("k", 0), np.ones(300, np.uint8)) and store.in_memory == 24
        store.drop("k")
        assert len(list(tmp_path.iterdir())) == 1
    assert list(tmp_path.iterdir()) == []  # the private directory is gone


def _calibrated(graph_fn, x, pipeline, **ctx):
    g = graph_fn()
    _, context = run(g, f"{CONVERT},{pipeline}", x, timesteps=6, **ctx)
    return g, context


def _same_params(a, b) -> None:
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    for m, n in zip(a.nodes, b.nodes):
        assert m.params.keys() == n.params.keys()
        for k in m.params:
            assert np.array_equal(m.params[k], n.params[k]), (m.name, k)


@pytest.mark.parametrize("pipeline", ["calibrate-bias", "calibrate-potential{granularity=neuron}", "calibrate-weights{iterations=20},calibrate-bias"])
def test_calibration_is_the_same_whatever_the_store(pipeline, tmp_path):
    """Spike trains in memory, spilled to disk, or recomputed from the input: the same
    calibrated network, bit for bit (weight calibration reads its rows from the store)."""
    x = _images_for(concat_graph(), 40)
    ref, ctx = _calibrated(concat_graph, x, pipeline, store="memory", batch_size=16)
    for store in ("disk", "recompute", "auto"):
        g, c = _calibrated(concat_graph, x, pipeline, store=store, store_memory=2000, spill_dir=str(tmp_path), batch_size=16)
        _same_params(ref, g)
        assert list(tmp_path.iterdir()) == []
        rec = c.records["calibrate-bias" if "bias" in pipeline else "calibrate-potential"]
        if store == "disk":
            assert rec["store"]["peak_in_memory_bytes"] == 0 and rec["store"]["spilled_bytes"] > 0
        if store == "auto":
            assert rec["store"]["peak_in_memory_bytes"] <= 2000
    assert ctx.records["calibrate-bias" if "bias" in pipeline else "calibrate-potential"]["store"]["spilled_bytes"] == 0


def test_memory_store_grows_with_samples_and_auto_store_does_not():
    """What makes peak memory independent of the number of samples: with the default
    store the in-memory part is capped; with store=memory it grows with the samples."""
    peaks = {}
    for store in ("memory", "auto"):
        for n in (20, 60):
            x = _images_for(small_cnn(), n)
            _, ctx = _calibrated(lambda: small_cnn(residual=True), x, "calibrate-bias", store=store, store_memory=4096)
            peaks[store, n] = ctx.records["calibrate-bias"]["store"]["peak_in_memory_bytes"]
    assert peaks["memory", 60] > 2.5 * peaks["memory", 20] > 0
    assert peaks["auto", 20] <= 4096 and peaks["auto", 60] <= 4096


def test_ann_statistics_batches_are_capped_by_the_widest_value(monkeypatch):
    """The ANN passes (threshold statistics, the import check) run in batches no larger
    than keeps one batch's widest value under ANN_VALUE_BYTES, whatever --batch-size and
    the number of samples: their memory is set by the network. The thresholds do not
    depend on it."""
    import snnc.ir.executor as ex

    x = _images_for(small_cnn(), 40)
    ref, _ = _calibrated(lambda: small_cnn(residual=True), x, "calibrate-bias", batch_size=128)
    widest = max(int(np.prod(v.shape)) for v in ref.values())
    assert ex.ann_batch_size(ref, 128) == 128  # a small network keeps the batch size it is given
    monkeypatch.setattr(ex, "ANN_VALUE_BYTES", 4 * widest * 3)
    assert ex.ann_batch_size(ref, 128) == 3 and ex.ann_batch_size(ref, 2) == 2
    seen = []
    run_ann_batch = ex.Interpreter.run
    monkeypatch.setattr(ex.Interpreter, "run", lambda self, xb, **kw: (seen.append(len(xb)), run_ann_batch(self, xb, **kw))[1])
    g, _ = _calibrated(lambda: small_cnn(residual=True), x, "calibrate-bias", batch_size=128)
    assert seen and max(seen) == 3
    # The same network up to float rounding: a convolution's last bits may depend on the
    # batch it runs in (the library picks its algorithm by shape), and a channel's maximum
    # with them.
    for m, n in zip(ref.nodes, g.nodes):
        for k in m.params:
            np.testing.assert_allclose(n.params[k], m.params[k], rtol=1e-5, atol=1e-6, err_msg=f"{m.name}.{k}")


def test_ann_targets_run_each_ann_node_once_per_batch(monkeypatch, tmp_path):
    """With a store, each batch's ANN run continues from the last layer's target (its live
    values kept in the store) instead of starting again from the input for every layer
    (twice: before and after the update): each ANN node runs once per batch, and the
    calibrated network is the recompute path's, bit for bit."""
    from snnc.ir.executor import Interpreter
    from snnc.passes.base import parse_pipeline, run_passes

    import snnc.passes.calibrate as calibrate

    monkeypatch.setattr(calibrate, "default_batch_size", lambda *a, **k: 16)  # three batches: the store is shared
    x = _images_for(small_cnn(), 40)
    real = Interpreter.run_node
    result = {}
    for store in ("recompute", "auto"):
        g = small_cnn(residual=True)
        _, ctx = run(g, CONVERT, x, timesteps=6, store=store, store_memory=3000, spill_dir=str(tmp_path), batch_size=16)
        calls: dict[str, int] = {}

        def counting(self, node, ins, calls=calls):
            calls[node.name] = calls.get(node.name, 0) + 1
            return real(self, node, ins)

        monkeypatch.setattr(Interpreter, "run_node", counting)
        run_passes(g, parse_pipeline("calibrate-bias"), ctx)
        monkeypatch.setattr(Interpreter, "run_node", real)
        result[store] = (g, calls, ctx)
        assert list(tmp_path.iterdir()) == []
    g, calls, ctx = result["auto"]
    batches = math.ceil(40 / 16)
    assert sorted(calls) == sorted(n.name for n in ctx.ann_reference.nodes)
    assert set(calls.values()) == {batches}, calls
    assert sum(result["recompute"][1].values()) > 3 * sum(calls.values())
    assert ctx.records["calibrate-bias"]["store"]["spilled_bytes"] > 0  # ANN values spilled too (budget 3000 bytes)
    _same_params(result["recompute"][0], g)


# ----------------------------------------------------------------- torchrun
def _snnc(args: list[str], ranks: int, cwd: Path) -> subprocess.CompletedProcess:
    # torchrun's agent leaves a torchelastic_* log folder in $TMPDIR: give it one of ours,
    # removed afterwards, so the suite leaves nothing in the system's temporary directory
    with tempfile.TemporaryDirectory(prefix="snnc-test-torchrun-") as tmp:
        # without the suite's TORCHINDUCTOR_CACHE_DIR (conftest): snnc must keep torch's cache out of $TMPDIR itself
        env = {**{k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}, "OMP_NUM_THREADS": "1", "TMPDIR": tmp}
        if ranks == 1:
            cmd = [str(BIN / "snnc"), *args]
        else:
            cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc-per-node={ranks}", "--no-python", str(BIN / "snnc"), *args]
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        leftovers = sorted(p.name for p in Path(tmp).iterdir() if not p.name.startswith("torchelastic_"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert leftovers == [], f"snnc left temporary files: {leftovers}"  # the spill store cleans up after itself
    return proc


@pytest.fixture(scope="module")
def calib600(digits_model, tmp_path_factory) -> Path:
    """600 digits training images: three calibration batches of the digits model at T = 8
    (256, 256 and 88 samples), so two ranks hold uneven shares (512 and 88), where the
    fixture's 256 would be one batch, all on rank 0."""
    path = tmp_path_factory.mktemp("calib600") / "calib600.npz"
    np.savez(path, x=digits_model.x_train[:600])
    return path


@pytest.fixture(scope="module")
def two_ranks(digits_model, calib600, tmp_path_factory):
    """The digits model converted (light) and evaluated by one process and by two ranks."""
    out = tmp_path_factory.mktemp("ranks")
    m = digits_model
    common = ["convert", str(m.onnx_path), "--calib", str(calib600), "--calib-samples", "600", "-T", "8", "--calibration", "light", "--no-progress", "--check-samples", "40"]
    runs = {}
    for ranks in (1, 2):
        _snnc([*common, "-o", f"r{ranks}.snn", "--report", f"r{ranks}.json"], ranks, out)
        ev = _snnc(["eval", f"r{ranks}.snn", "--data", str(m.test_path), "-T", "4,8", "--json"], ranks, out)
        runs[ranks] = {"eval": ev.stdout, "files": sorted(p.name for p in out.iterdir())}
    return out, runs


@pytest.mark.skipif(shutil.which("torchrun", path=str(BIN)) is None, reason="torchrun not installed")
def test_two_ranks_give_the_single_process_artifact(two_ranks):
    out, runs = two_ranks
    one, two = snnc.load(out / "r1.snn"), snnc.load(out / "r2.snn")
    _same_params(one.snn, two.snn)  # identical thresholds, calibrated biases, everything
    assert two.provenance["ranks"] == 2 and one.provenance["ranks"] == 1
    rec1, rec2 = (json.loads((out / f"r{r}.json").read_text()) for r in (1, 2))
    assert rec1["provenance"]["records"]["calibrate-bias"]["layers"] == rec2["provenance"]["records"]["calibrate-bias"]["layers"]


@pytest.mark.skipif(shutil.which("torchrun", path=str(BIN)) is None, reason="torchrun not installed")
def test_two_ranks_evaluate_like_one(two_ranks):
    """snnc eval on two ranks prints one JSON object (rank 0) equal to the single process's."""
    _, runs = two_ranks
    assert runs[2]["eval"].count("{\"backend\"") == 1
    assert json.loads(runs[1]["eval"]) == json.loads(runs[2]["eval"])
    # rank 0 wrote the artifact and the report; nothing else appeared (no temporary files)
    assert runs[2]["files"] == ["r1.json", "r1.snn", "r2.json", "r2.snn"]


def test_simulated_outputs_of_the_two_artifacts_are_identical(two_ranks, digits_model):
    out, _ = two_ranks
    ys = [snnc.load(out / f"r{r}.snn").run(digits_model.x_test[:64], 8) for r in (1, 2)]
    assert np.array_equal(ys[0], ys[1])


@pytest.mark.skipif(shutil.which("torchrun", path=str(BIN)) is None, reason="torchrun not installed")
def test_two_ranks_fit_weights_like_one(two_ranks, digits_model, calib600, tmp_path):
    """Advanced calibration on two ranks holding 512 and 88 of 600 samples: weights fitted on
    each rank's fixed, weighted share of every minibatch (FitDraw) move the way one
    process's do and convert as well (within the fit's noise, not bit for bit)."""
    out, _ = two_ranks
    m = digits_model
    args = ["convert", str(m.onnx_path), "--calib", str(calib600), "--calib-samples", "600", "-T", "8", "--calibration", "advanced", "--no-progress", "--check-samples", "40"]
    for ranks in (1, 2):
        _snnc([*args, "-o", f"adv{ranks}.snn"], ranks, tmp_path)
    light, one, two = (snnc.load(p) for p in (out / "r1.snn", tmp_path / "adv1.snn", tmp_path / "adv2.snn"))
    assert two.provenance["ranks"] == 2
    fitted = 0
    nodes = {n.name: n for n in light.snn.nodes}
    for b, c in zip(one.snn.nodes, two.snn.nodes):
        assert b.name == c.name
        a = nodes[b.name]
        if "weight" in b.params and not np.array_equal(a.params["weight"], b.params["weight"]):
            d1, d2 = (np.ravel(x.params["weight"] - a.params["weight"]) for x in (b, c))
            assert np.linalg.norm(d2) > 0, c.name  # the two ranks fitted this layer too
            cos = float(d1 @ d2 / (np.linalg.norm(d1) * np.linalg.norm(d2)))
            assert cos > 0.9, (b.name, cos)  # measured 0.985-0.997
            fitted += 1
    assert fitted >= 2
    accs = [float(np.mean(sm.run(m.x_test, 8).argmax(1) == m.y_test)) for sm in (one, two)]
    assert abs(accs[0] - accs[1]) <= 0.03, accs


def test_device_cuda_without_cuda_is_a_clear_error(digits_model, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    m = digits_model
    proc = subprocess.run(
        [str(BIN / "snnc"), "convert", str(m.onnx_path), "--calib", str(m.calib_path), "--device", "cuda", "-o", str(tmp_path / "x.snn"), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "cuda" in proc.stderr.lower() and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.snn").exists()


def test_histogram_counts_travel_as_int32_where_exact():
    """balance-thresholds reduces its histograms (integer counts) as int32 when no total can
    reach 2**31, half the bytes of float64, and as float64 otherwise; the sums are exact."""
    from snnc.passes.balance import _sum_counts

    class TwoEqualRanks(Group):
        def all_reduce(self, t, op="sum"):
            self.seen.append(t.dtype)
            self.bytes_reduced += t.numel() * t.element_size()
            return t * 2

    g = TwoEqualRanks(0, 2)
    g.seen = []
    counts = torch.tensor([0.0, 3.0, 2.0**30 - 1], dtype=torch.float64)  # each rank; two ranks: below 2**31
    small = _sum_counts(g, counts.double(), 2**31 - 1)
    big = _sum_counts(g, counts.double(), 2**31)
    assert g.seen == [torch.int32, torch.float64]
    assert small.dtype == big.dtype == torch.float64
    assert torch.equal(small, counts.double() * 2) and torch.equal(big, counts.double() * 2)
    assert g.bytes_reduced == 3 * 4 + 3 * 8
