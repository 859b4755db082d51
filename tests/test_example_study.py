"""The example workloads' shared study driver: metrics, subsets, reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.common.study import Study, accuracy, binary_auc, dice_per_class, subset  # noqa: E402


def test_binary_auc_of_the_logit_margin():
    y = np.array([0, 0, 1, 1])
    out = np.array([[0, -1], [0, 0.5], [0, 0.2], [0, 2]], dtype=np.float32)  # margins -1, .5, .2, 2
    assert binary_auc(out, y) == pytest.approx(0.75)  # 3 of the 4 (positive, negative) pairs ordered
    assert binary_auc(out[:, ::-1], y) == pytest.approx(0.25)  # the margin is class 1 minus class 0
    assert np.isnan(binary_auc(out, np.zeros(4, dtype=int)))


def test_dice_per_class():
    y = np.array([[[0, 1], [2, 2]]])
    pred = np.zeros((1, 3, 2, 2))
    pred[0, 0, 0, 0] = pred[0, 1, 0, 1] = pred[0, 1, 1, 0] = pred[0, 2, 1, 1] = 1  # classes [[0,1],[1,2]]
    assert dice_per_class(pred, y, 3) == pytest.approx([1.0, 2 / 3, 2 / 3])


def test_subsets_are_seeded_nested_and_ordered():
    a, b = subset(444, 100), subset(444, 200)
    assert np.array_equal(a, subset(444, 100)) and set(a) <= set(b) and np.all(np.diff(b) > 0)
    assert np.array_equal(subset(10, 50), np.arange(10))
    with pytest.raises(ValueError):
        subset(10, 0)


def test_study_scores_subsets_against_the_reference_on_the_same_samples(digits_model, tmp_path):
    pytest.importorskip("spikingjelly")
    import snnc

    model = snnc.convert(str(digits_model.onnx_path), calib=digits_model.x_train[:128], timesteps=8, calibration="none")
    art = tmp_path / "m.snn"
    model.save(art)
    x, y = digits_model.x_test[:40], digits_model.y_test[:40]
    study = Study(title="t", metrics={"accuracy": accuracy}, primary="accuracy", timesteps=(4, 8))
    res = study.run(art, x, y, backends={"reference": None, "spikingjelly": 15}, out_dir=tmp_path / "r", progress=False)
    sj = res["backends"]["spikingjelly"]
    idx = subset(40, 15)
    assert sj["samples"] == 15
    assert sj["ann"]["accuracy"] == pytest.approx(accuracy(model.ann_outputs(x[idx]), y[idx]))
    ref = model.simulate(x[idx], [4, 8])
    for row in sj["results"]:
        assert row["reference_agreement"] == 1.0  # bit-identical backends on the same samples
        assert row["accuracy"] == pytest.approx(accuracy(ref.output(row["timesteps"]), y[idx]))
    assert json.loads((tmp_path / "r" / "results.json").read_text())["backends"]["reference"]["samples"] == 40
    md = (tmp_path / "r" / "results.md").read_text()
    assert "| spikingjelly | 15 | 8 |" in md and (tmp_path / "r" / "results.png").stat().st_size > 1000
