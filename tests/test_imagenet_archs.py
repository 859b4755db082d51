"""The ImageNet architectures of ``examples/common/imagenet.py`` (issue 16): torchvision's
state-dict layout and parameter counts at 224×224 / 1000 classes, and, on small inputs with
10 classes and non-trivial BatchNorm statistics, import from both ONNX exporters and from
torch equal to onnxruntime / torch, conversion with ``calibration="none"``, and ``snnc check``
explaining why ``lava-fixed`` cannot hold MobileNetV2's linear bottlenecks."""

from __future__ import annotations

import contextlib
import functools
import io
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import snnc  # noqa: E402
from examples.common.imagenet import ARCHITECTURES, VGG, VGG16_CFG  # noqa: E402
from snnc.cli import main  # noqa: E402
from snnc.errors import UnsupportedOpError  # noqa: E402
from snnc.frontends import import_model  # noqa: E402
from snnc.frontends.check import check_import  # noqa: E402
from snnc.ir.graph import Graph  # noqa: E402

TOL = 1e-4
SMALL = ["resnet18", "resnet50", "vgg16_bn", "mobilenet_v2", "regnet_x_400mf"]
# Per-sample input of each small model: VGG at 32×32 pools 1×1 to 7×7 (a nearest upsampling).
SHAPES = {
    "resnet18": (3, 32, 32),
    "resnet50": (3, 32, 32),
    "vgg16_bn": (3, 32, 32),
    "mobilenet_v2": (3, 32, 32),
    "regnet_x_400mf": (1, 32, 32),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: on a busy 2-core machine a second torch thread mostly waits (these tests
    run about 2.5 times faster on one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- models
def _randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Eval mode, with non-trivial BatchNorm statistics and affine parameters (so BN folding
    mistakes show)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    return model.eval()


@functools.cache
def small(name: str) -> nn.Module:
    """The architecture with 10 classes for ``SHAPES[name]``; VGG-16-BN with 64 hidden units
    instead of 4096 (its 100 M-parameter classifier only makes the tests slow)."""
    torch.manual_seed(0)
    c = SHAPES[name][0]
    model = VGG(VGG16_CFG, 10, c, hidden=64) if name == "vgg16_bn" else ARCHITECTURES[name](num_classes=10, in_channels=c)
    return _randomize_bn(model)


def narrow_vgg() -> nn.Module:
    """VGG-16-BN's layer sequence at 1/16 of its widths, for 1×224×224 inputs: its last feature
    map is 7×7, so the adaptive pool is the identity (the legacy exporter cannot export the
    1×1 to 7×7 pool of a 32×32 input)."""
    torch.manual_seed(0)
    cfg = [v if v == "M" else int(v) // 16 for v in VGG16_CFG]
    return _randomize_bn(VGG(cfg, 10, 1, hidden=32))


def inputs(shape: tuple[int, ...], n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def export(model: nn.Module, shape: tuple[int, ...], dynamo: bool, optimize: bool = True) -> onnx.ModelProto:
    """ONNX export with a dynamic batch dimension, by the legacy or the dynamo exporter (with
    or without onnxscript's optimizer)."""
    x = torch.randn(2, *shape)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if not dynamo:
            buf = io.BytesIO()
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
            return onnx.load_from_string(buf.getvalue())
        pytest.importorskip("onnxscript")
        dims = ({0: torch.export.Dim("batch")},)
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, input_names=["x"], dynamic_shapes=dims, optimize=optimize)
        return program.model_proto


def check_equal(source, shape: tuple[int, ...]) -> Graph:
    """Import ``source`` and check it against its reference (onnxruntime or torch) on three
    samples; return the graph."""
    imported = import_model(source, shape)
    check_import(imported.graph, imported.reference, inputs(shape, n=3), reference_name=imported.reference_name, atol=TOL, rtol=TOL)
    return imported.graph


# ------------------------------------------------------------ layout and counts
PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "vgg16_bn": 138_365_992,
    "mobilenet_v2": 3_504_872,
    "regnet_x_400mf": 5_495_976,
}
# Spot checks of torchvision's state-dict keys and shapes.
KEYS = {
    "resnet18": {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_mean": (64,),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer1.1.bn2.running_var": (64,),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer2.0.downsample.1.weight": (128,),
        "layer4.1.conv2.weight": (512, 512, 3, 3),
        "fc.weight": (1000, 512),
    },
    "resnet34": {"layer3.5.conv2.weight": (256, 256, 3, 3), "layer4.0.downsample.0.weight": (512, 256, 1, 1)},
    "resnet50": {
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer3.5.bn3.running_mean": (1024,),
        "layer4.2.conv2.weight": (512, 512, 3, 3),
        "fc.weight": (1000, 2048),
    },
    "vgg16_bn": {
        "features.0.weight": (64, 3, 3, 3),
        "features.0.bias": (64,),
        "features.1.running_mean": (64,),
        "features.7.weight": (128, 64, 3, 3),
        "features.40.weight": (512, 512, 3, 3),
        "features.41.running_var": (512,),
        "classifier.0.weight": (4096, 25088),
        "classifier.3.weight": (4096, 4096),
        "classifier.6.weight": (1000, 4096),
    },
    "mobilenet_v2": {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.running_mean": (32,),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.1.conv.2.running_var": (16,),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.2.conv.1.0.weight": (96, 1, 3, 3),
        "features.2.conv.2.weight": (24, 96, 1, 1),
        "features.2.conv.3.weight": (24,),
        "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1),
        "classifier.1.weight": (1000, 1280),
    },
    "regnet_x_400mf": {
        "stem.0.weight": (32, 3, 3, 3),
        "stem.1.running_mean": (32,),
        "trunk_output.block1.block1-0.proj.0.weight": (32, 32, 1, 1),
        "trunk_output.block1.block1-0.f.a.0.weight": (32, 32, 1, 1),
        "trunk_output.block1.block1-0.f.b.0.weight": (32, 16, 3, 3),
        "trunk_output.block1.block1-0.f.c.1.running_var": (32,),
        "trunk_output.block3.block3-6.f.b.0.weight": (160, 16, 3, 3),
        "trunk_output.block4.block4-0.proj.0.weight": (400, 160, 1, 1),
        "trunk_output.block4.block4-11.f.c.0.weight": (400, 400, 1, 1),
        "fc.weight": (1000, 400),
    },
}
ABSENT = {
    "resnet18": ["layer1.0.downsample.0.weight", "layer2.1.downsample.0.weight"],
    "resnet34": ["layer1.2.downsample.0.weight"],
    "resnet50": ["layer1.1.downsample.0.weight", "layer1.0.conv4.weight"],
    "vgg16_bn": ["features.43.weight", "classifier.1.weight"],
    "mobilenet_v2": ["features.1.conv.3.weight", "features.19.0.weight", "classifier.0.weight"],
    "regnet_x_400mf": ["trunk_output.block2.block2-1.proj.0.weight", "trunk_output.block4.block4-12.f.a.0.weight"],
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_torchvision_layout_and_parameter_count(name):
    with torch.device("meta"):  # no memory, no init work
        model = ARCHITECTURES[name]()
    sd = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    for key, shape in KEYS[name].items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    assert not [k for k in ABSENT[name] if k in sd]
    bn = [k for k in sd if k.endswith("running_mean")]
    assert all(k.replace("running_mean", s) in sd for k in bn for s in ("weight", "bias", "running_var", "num_batches_tracked"))


def test_resnet50_strides_on_the_3x3_conv():
    model = ARCHITECTURES["resnet50"]()
    block = model.layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2) and block.downsample[0].stride == (2, 2)


def test_torchvision_initialisation():
    model = ARCHITECTURES["mobilenet_v2"](num_classes=10)
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bn)
    conv = model.features[18][0]  # 1280×320×1×1, fan-out 1280: std sqrt(2 / 1280)
    assert abs(float(conv.weight.detach().std()) / (2 / 1280) ** 0.5 - 1) < 0.05
    assert float(model.classifier[1].weight.detach().std()) == pytest.approx(0.01, rel=0.1)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_in_channels_and_num_classes(name):
    with torch.device("meta"):
        model = ARCHITECTURES[name](num_classes=7, in_channels=1)
        assert model(torch.zeros(2, 1, 224, 224)).shape == (2, 7)


# ------------------------------------------------------------------- import
@functools.cache
def legacy(name: str) -> bytes:
    """The legacy export of the small model (VGG: :func:`narrow_vgg` at 224×224)."""
    model, shape = (narrow_vgg(), (1, 224, 224)) if name == "vgg16_bn" else (small(name), SHAPES[name])
    return export(model, shape, dynamo=False).SerializeToString()


@pytest.mark.parametrize("name", SMALL)
def test_legacy_onnx_import_equals_onnxruntime(name):
    shape = (1, 224, 224) if name == "vgg16_bn" else SHAPES[name]
    graph = check_equal(onnx.load_from_string(legacy(name)), shape)
    if name == "vgg16_bn":  # the adaptive pool from 7×7 to 7×7 is the identity
        assert not graph.find("avg_pool") and not graph.find("upsample")


def first_blocks(name: str) -> nn.Module:
    """The small model's stem and first blocks, global-average pooled into a Linear: for
    MobileNetV2 the expansion-1 block, a strided block and a residual block; for RegNetX
    stages 1 and 2 (grouped convs, projection and identity shortcuts)."""
    m = small(name)
    trunk, width = (m.features[:4], 24) if name == "mobilenet_v2" else (nn.Sequential(m.stem, m.trunk_output[:2]), 64)
    return nn.Sequential(trunk, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)).eval()


# The dynamo exporter takes 5-15 s per network here: the whole VGG (its adaptive pool is a
# GatherND chain), the first blocks of MobileNetV2 and RegNetX (one unoptimised export).
DYNAMO = [("vgg16_bn", False, True), ("mobilenet_v2", True, False), ("regnet_x_400mf", True, True)]


@pytest.mark.parametrize("name,blocks,optimize", DYNAMO)
def test_dynamo_onnx_import_equals_onnxruntime(name, blocks, optimize):
    model = first_blocks(name) if blocks else small(name)
    graph = check_equal(export(model, SHAPES[name], dynamo=True, optimize=optimize), SHAPES[name])
    if name == "vgg16_bn":  # Transpose → GatherND → Transpose → ReduceMean: 1×1 to 7×7
        assert [n.attrs["scales"] for n in graph.find("upsample")] == [[7, 7]]


class _Pool(nn.Module):
    """conv → ReLU → AdaptiveAvgPool2d(out) → flatten → Linear."""

    def __init__(self, out: tuple[int, int]) -> None:
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2d(2, 3, 1), nn.AdaptiveAvgPool2d(out), nn.Linear(3 * out[0] * out[1], 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


# in size, out size, exporters, the IR ops the pool becomes (the identity is removed later)
POOLS = [
    ((1, 1), (7, 7), ("torch", "dynamo", "dynamo-noopt"), ["upsample"]),
    ((7, 7), (7, 7), ("torch", "legacy", "dynamo"), ["identity"]),
    ((14, 14), (7, 7), ("torch", "legacy"), ["avg_pool"]),
    ((4, 2), (2, 6), ("torch", "dynamo"), ["avg_pool", "upsample"]),
]


@pytest.mark.parametrize("size,out,exporter,ops", [(i, o, e, ops) for i, o, es, ops in POOLS for e in es])
def test_adaptive_avg_pool_between_sizes_that_divide(size, out, exporter, ops):
    torch.manual_seed(0)
    model, shape = _Pool(out).eval(), (2, *size)
    source = model if exporter == "torch" else export(model, shape, exporter != "legacy", optimize=exporter == "dynamo")
    graph = check_equal(source, shape)
    assert [n.op for n in graph.nodes if n.op not in ("conv", "relu", "reshape", "linear")] == ops


@pytest.mark.parametrize("exporter", ["torch", "dynamo"])
def test_adaptive_avg_pool_with_irregular_windows_is_refused(exporter):
    model, shape = _Pool((7, 7)).eval(), (2, 2, 2)
    source = model if exporter == "torch" else export(model, shape, dynamo=True)
    with pytest.raises(UnsupportedOpError, match="irregular"):
        import_model(source, shape)


# ---------------------------------------------------------------- conversion
@pytest.mark.parametrize("name", SMALL)
def test_torch_import_and_conversion_without_calibration(name):
    """The torch frontend's import check (against the module) passes, and the converted SNN
    runs on the reference simulator: MobileNetV2's linear bottlenecks (conv-BN with no ReLU
    read by the next conv or a residual add) included."""
    x = inputs(SHAPES[name], n=4, seed=1)
    sm = snnc.convert(small(name), x, timesteps=4, calibration="none")
    assert sm.provenance["import_check"]["reference"] == "torch"
    assert sm.provenance["import_check"]["max_abs_error"] < TOL
    y = sm.run(x[:2])
    assert y.shape == (2, 10) and np.all(np.isfinite(y))
    if name == "vgg16_bn":
        assert [n.attrs["scales"] for n in sm.ann.find("upsample")] == [[7, 7]]


@pytest.fixture(scope="module")
def mobilenet_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("imagenet") / "mobilenet_v2.onnx"
    path.write_bytes(legacy("mobilenet_v2"))
    return path


def test_check_says_lava_fixed_holds_mobilenet_v2_once_its_bottlenecks_are_fused(mobilenet_onnx):
    """Its linear bottlenecks are synapses feeding synapses; the default pipeline's
    fuse-synapses composes them, and check says so (without it: "synaptic current, not spikes")."""
    pytest.importorskip("snnc_lava")
    res = CliRunner(env={"COLUMNS": "400"}).invoke(main, ["check", str(mobilenet_onnx), "--backend", "lava-fixed"])
    text = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "fuse-synapses folded 17 synapse(s)" in text
