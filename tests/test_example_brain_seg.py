"""The brain tissue segmentation example: loader and split, the shipped U-Net ONNX
(Concat + Resize), and its conversion on every backend."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "examples" / "brain_seg" / "models" / "brain_seg_unet.onnx"

pytest.importorskip("nilearn")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The calibration runs one 80x96 slice per batch; on a busy 2-core machine a
    two-thread conv on one slice mostly waits for the second thread (~25 ms per call,
    against < 1 ms on one thread)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def volume():
    from examples.brain_seg.data import load_volumes

    return load_volumes()


@pytest.fixture(scope="module")
def converted(volume):
    """A light conversion of the shipped ONNX on 8 training slices, and 4 test slices."""
    if not MODEL.exists():
        pytest.skip("brain_seg_unet.onnx not shipped")
    import snnc
    from examples.brain_seg.data import split_indices

    x, y = volume
    idx = split_indices()
    model = snnc.convert(str(MODEL), calib=x[idx["train"][::8]], timesteps=32, calibration="light", progress=False)
    test = idx["test"][[1, 8, 15, 22]]  # one slice from each of four slabs
    return model, x[test], y[test]


def test_split_is_disjoint_slabs_with_gaps():
    from examples.brain_seg.data import split_indices

    idx = split_indices()
    assert [len(idx[s]) for s in ("train", "val", "test")] == [60, 15, 30]
    every = np.concatenate([idx[s] for s in ("train", "val", "test", "gap")])
    assert len(np.unique(every)) == len(every) == 150  # a partition of z in [5, 155)
    assert every.min() == 5 and every.max() == 154
    split_of = {int(z): s for s in ("train", "val", "test") for z in idx[s]}
    for a in split_of:
        for b in split_of:
            if split_of[a] != split_of[b]:
                assert abs(a - b) >= 4, f"slices {a} ({split_of[a]}) and {b} ({split_of[b]}) are neighbours"


def test_loader_shapes_values_and_labels(volume):
    from examples.brain_seg.data import load_split

    x, y = volume
    assert x.shape == (189, 1, 80, 96) and x.dtype == np.float32
    assert y.shape == (189, 80, 96) and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(np.unique(y)) == {0, 1, 2}
    # every slice of the split holds brain, and no brain is outside the template mask
    xt, yt, zt = load_split("test")
    assert xt.shape == (30, 1, 80, 96) and (yt > 0).reshape(30, -1).mean(1).min() > 0.01
    assert np.all(xt[:, 0][yt > 0] > 0)
    # the field of view holds the whole brain: no tissue on the border
    assert not (y[:, [0, -1], :] > 0).any() and not (y[:, :, [0, -1]] > 0).any()
    # grey matter is outside white matter: along a row through the middle, GM comes first
    row = y[95, 40]
    first = np.nonzero(row > 0)[0][0]
    assert row[first] == 1


@pytest.mark.skipif(not MODEL.exists(), reason="brain_seg_unet.onnx not shipped")
def test_shipped_onnx_imports_and_matches_onnxruntime(volume):
    import onnx
    from snnc.frontends.onnx.reference import import_onnxruntime

    ort = import_onnxruntime()

    from snnc.frontends import import_model

    ops = {n.op_type for n in onnx.load(str(MODEL)).graph.node}
    assert {"Concat", "Resize", "AveragePool", "Conv"} <= ops
    x = volume[0][[40, 90, 140]]
    graph = import_model(str(MODEL), input_shape=x.shape[1:]).graph
    assert {"concat", "upsample"} <= {n.op for n in graph.nodes}
    from snnc.ir.executor import run_ann

    ours = run_ann(graph, x)[0]
    sess = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert ours.shape == ref.shape == (3, 3, 80, 96)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_light_conversion_keeps_dice_at_T32(converted):
    from examples.common.study import dice_per_class

    model, x, y = converted
    assert model.provenance["import_check"]["max_abs_error"] < 1e-4
    ann = model.ann_outputs(x)
    snn = model.run(x, 32)
    assert snn.shape == ann.shape == (4, 3, 80, 96)
    assert np.mean(ann.argmax(1) == snn.argmax(1)) >= 0.98
    for c, (a, s) in enumerate(zip(dice_per_class(ann, y, 3), dice_per_class(snn, y, 3))):
        assert a > 0.9, f"ANN Dice of class {c} is {a}"
        assert s >= a - 0.02, f"class {c}: SNN Dice {s:.4f} vs ANN {a:.4f}"


def test_spikingjelly_equals_reference(converted):
    import snnc
    from snnc.errors import SnncError

    model, x, _ = converted
    try:
        snnc.backend.get_backend("spikingjelly", device="cpu")
    except SnncError as e:
        pytest.skip(f"spikingjelly backend unavailable: {e}")
    ref = model.simulate(x[:2], [8, 16])
    sj = model.simulate(x[:2], [8, 16], backend="spikingjelly", device="cpu")
    for t in (8, 16):
        np.testing.assert_allclose(sj.output(t), ref.output(t), atol=1e-5)


def test_lava_float_equals_reference(converted):
    import snnc
    from snnc.errors import SnncError

    model, x, _ = converted
    try:
        snnc.backend.get_backend("lava")
    except SnncError as e:
        pytest.skip(f"lava backend unavailable: {e}")
    ref = model.simulate(x[:1], [4])
    got = model.simulate(x[:1], [4], backend="lava")
    np.testing.assert_allclose(got.output(4), ref.output(4), atol=1e-4)


def test_transposed_conv_unet_runs_on_every_backend(tmp_path):
    """The U-Net variant with ConvTranspose2d upsampling (instead of Resize) and a Concat
    skip: ONNX -> IR -> passes -> reference == SpikingJelly == Lava float."""
    import torch
    from torch import nn

    import snnc
    from snnc.backend import get_backend
    from snnc.errors import SnncError

    class TinyUNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
            self.down = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
            self.up = nn.Sequential(nn.ConvTranspose2d(8, 4, 2, stride=2), nn.ReLU())
            self.head = nn.Conv2d(8, 3, 1)

        def forward(self, x):
            e = self.enc(x)
            return self.head(torch.cat([self.up(self.down(e)), e], dim=1))

    torch.manual_seed(0)
    net = TinyUNet().eval()
    path = tmp_path / "tiny_unet.onnx"
    torch.onnx.export(
        net, torch.zeros(2, 1, 16, 16), str(path), dynamo=False, opset_version=17,
        input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
    )
    rng = np.random.default_rng(0)
    calib = rng.random((64, 1, 16, 16), dtype=np.float32)
    x = rng.random((3, 1, 16, 16), dtype=np.float32)
    model = snnc.convert(str(path), calib=calib, timesteps=16, calibration="light", progress=False)
    assert {"conv_transpose", "concat"} <= {n.op for n in model.snn.nodes}
    assert model.provenance["import_check"]["max_abs_error"] < 1e-4
    ann = model.ann_outputs(x)
    ref = model.simulate(x, [4, 16, 64])
    err = [float(np.abs(ref.output(t) - ann).mean()) for t in (4, 16, 64)]
    assert err[2] < err[0] and err[2] < 0.1 * float(np.abs(ann).mean()), err
    for name, atol in (("spikingjelly", 1e-5), ("lava", 1e-4)):
        try:
            be = get_backend(name, **({"device": "cpu"} if name == "spikingjelly" else {}))
        except SnncError:
            continue
        assert be.unsupported(model.snn) == []
        got = model.simulate(x, [4, 16], backend=name, **({"device": "cpu"} if name == "spikingjelly" else {}))
        for t in (4, 16):
            np.testing.assert_allclose(got.output(t), ref.output(t), atol=atol, err_msg=f"{name} T={t}")
    try:
        assert get_backend("lava-fixed").unsupported(model.snn) == []
    except SnncError:
        pass
