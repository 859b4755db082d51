"""Shared fixtures: a small CNN trained here on scikit-learn's digits, exported to ONNX."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from snnc.utils.scratch import private_torch_cache

# Tests that import onnxruntime themselves (and their subprocesses) leave the home directory
# alone, as snnc does (snnc.frontends.onnx.reference.import_onnxruntime).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
# torch creates $TMPDIR/torchinductor_$USER when torch._dynamo is first imported (the
# suite's torch.export and meta-tensor ops do): a directory of the suite's own, as the CLI does.
private_torch_cache()


class DigitsCNN(nn.Module):
    """A small VGG-style CNN with BatchNorm and a residual add, functional relu."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.AvgPool2d(2)
        self.conv3 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)) + h)
        h = self.pool(h)
        h = F.relu(self.bn3(self.conv3(h)))
        return self.fc(h.mean((2, 3)))


@dataclass
class TrainedModel:
    module: nn.Module
    onnx_path: Path
    x_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    ann_accuracy: float
    calib_path: Path
    test_path: Path


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory) -> TrainedModel:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
    torch.manual_seed(0)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _ in range(12):
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    out = tmp_path_factory.mktemp("digits")
    onnx_path = out / "digits.onnx"
    torch.onnx.export(
        model, torch.zeros(1, 1, 8, 8), str(onnx_path), dynamo=False, opset_version=17,
        input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
    )
    calib_path, test_path = out / "calib.npz", out / "test.npz"
    np.savez(calib_path, x=x_train[:256])
    np.savez(test_path, x=x_test, y=y_test)
    return TrainedModel(model, onnx_path, x_train, x_test, y_test, acc, calib_path, test_path)


@pytest.fixture(scope="session", autouse=True)
def system_paths_untouched():
    """snnc runs as root in CI: after the whole suite, the device nodes a careless ``-o``
    could have replaced (issue 15) must still be the same device nodes."""
    import os
    import stat

    paths = ["/dev/null", "/dev/zero", "/dev/full"]
    before = {p: (st.st_mode, st.st_rdev) for p in paths if os.path.exists(p) for st in [os.lstat(p)]}
    yield
    for p, (mode, rdev) in before.items():
        st = os.lstat(p)
        assert stat.S_ISCHR(st.st_mode) and (st.st_mode, st.st_rdev) == (mode, rdev), f"{p} was replaced during the test run"
