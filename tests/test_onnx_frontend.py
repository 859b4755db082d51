"""Tests of the ONNX frontend (snnc.frontends.onnx).

Every supported op is imported from a tiny model and the IR's own evaluation
(``run_ann``) is compared with onnxruntime through ``check_import``. Models come from
torch's legacy exporter, torch's dynamo exporter, skl2onnx and ``onnx.helper`` (for the
ONNX-specific attribute combinations exporters never produce).
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from snnc.errors import DataError, SnncError, UnsupportedOpError
from snnc.frontends.onnx import import_onnx, onnx_reference
from _onnx_models import check_against_onnxruntime, ops
from snnc.ir import Graph, run_ann

TOL = 1e-5


# ==================================================================== helpers
def check(model: onnx.ModelProto | str, *, n: int = 5, seed: int = 0) -> Graph:
    """Import ``model`` and check the IR against onnxruntime on random inputs."""
    return check_against_onnxruntime(model, tol=TOL, n=n, seed=seed)


def make_model(
    nodes: list[onnx.NodeProto],
    in_shape: list,
    inits: dict[str, np.ndarray] | None = None,
    *,
    outputs: tuple[str, ...] = ("y",),
    opset: int = 17,
    in_type: int = TensorProto.FLOAT,
) -> onnx.ModelProto:
    """A one-input model; the input ``x`` has a symbolic batch dim unless ``in_shape[0]`` is an int."""
    inits = inits or {}
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info("x", in_type, in_shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10, producer_name="test")


def rand(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# ============================================================ torch test models
class VGGish(nn.Module):
    """Input normalisation (x - mean) / std, Conv-BN-ReLU, ReLU-BN, MaxPool with padding,
    strided bias-free conv, torch.flatten, Dropout, BatchNorm1d, Softmax at the output."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))
        self.c1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.c2, self.bn2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.fc, self.bn3 = nn.Linear(8 * 2 * 2, 6), nn.BatchNorm1d(6)
        self.out = nn.Linear(6, 4)

    def forward(self, x):
        x = (x - self.mean) / self.std
        x = self.pool(F.relu(self.bn1(self.c1(x))))
        x = self.bn2(torch.relu(self.c2(x)))
        x = self.drop(torch.flatten(x, 1))
        x = self.bn3(F.relu(self.fc(x)))
        return torch.softmax(self.out(x), dim=1)


class Block(nn.Module):
    def __init__(self, c: int, groups: int, dilation: int):
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, groups=groups)
        self.b = nn.Conv2d(c, c, 3, padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return F.relu(self.b(self.act(self.a(x))) + x)


class ResNetish(nn.Module):
    """Residual adds; nn.ReLU(inplace), F.relu, torch.relu; grouped, dilated and strided
    convs; global average pooling written as x.mean((2, 3))."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.b1, self.b2 = Block(8, groups=2, dilation=1), Block(8, groups=4, dilation=2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.b2(self.b1(torch.relu(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class UNetish(nn.Module):
    """F.max_pool2d, nn.Upsample(nearest), F.interpolate, ConvTranspose2d, AvgPool2d, torch.cat."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(2, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 8, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.tconv = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.avg = nn.AvgPool2d(2)
        self.dec = nn.Conv2d(16, 3, 1)

    def forward(self, x):
        e = F.relu(self.enc(x))
        d = F.relu(self.down(F.max_pool2d(e, 2)))
        u3 = F.interpolate(self.avg(e), scale_factor=2, mode="nearest")
        return self.dec(torch.cat([self.up(d), self.tconv(d), u3], dim=1))


class Conv1dNet(nn.Module):
    """Conv1d (strided, padded; grouped and dilated), ReLU6 (Clip), AvgPool1d,
    x.view(x.size(0), -1), a bias-free Linear."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv1d(2, 6, 5, stride=2, padding=2)
        self.c2 = nn.Conv1d(6, 6, 3, padding=2, dilation=2, groups=3)
        self.pool = nn.AvgPool1d(2)
        self.fc = nn.Linear(6 * 4, 3, bias=False)

    def forward(self, x):
        x = self.pool(F.relu(self.c2(F.relu6(self.c(x)))))
        return self.fc(x.view(x.size(0), -1))


class Padded(nn.Module):
    """Explicit zero padding (nn.ZeroPad2d, F.pad) around unpadded convolutions."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ZeroPad2d((1, 2, 0, 1))
        self.c1 = nn.Conv2d(2, 4, 3)
        self.c2 = nn.Conv2d(4, 3, 3)

    def forward(self, x):
        h = torch.relu(self.c1(self.pad(x)))
        return self.c2(F.pad(h, (1, 1, 1, 1))).mean((2, 3))


TORCH_MODELS = {"vgg": (VGGish, (3, 8, 8)), "resnet": (ResNetish, (3, 8, 8)), "unet": (UNetish, (2, 8, 8)), "conv1d": (Conv1dNet, (2, 16))}


def build_torch(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    cls, shape = {**TORCH_MODELS, "padded": (Padded, (2, 8, 8))}[name]
    torch.manual_seed(0)
    model = cls().eval()
    with torch.no_grad():  # non-trivial BN statistics, so BN mistakes show
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model, shape


def torch_export(model: nn.Module, shape: tuple[int, ...], exporter: str) -> onnx.ModelProto:
    """Export with a dynamic batch dim. exporter: legacy | dynamo | dynamo-noopt."""
    x = torch.randn(2, *shape)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            buf = io.BytesIO()
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
            return onnx.load_from_string(buf.getvalue())
        pytest.importorskip("onnxscript")
        program = torch.onnx.export(
            model,
            (x,),
            dynamo=True,
            opset_version=17,
            input_names=["x"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            optimize=exporter == "dynamo",
        )
        return program.model_proto


@functools.cache
def exported(name: str, exporter: str) -> bytes:
    model, shape = build_torch(name)
    return torch_export(model, shape, exporter).SerializeToString()


def exported_model(name: str, exporter: str) -> onnx.ModelProto:
    return onnx.load_from_string(exported(name, exporter))


# ====================================================== torch models, both exporters
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("name", sorted(TORCH_MODELS))
def test_torch_model_matches_onnxruntime(name, exporter):
    graph = check(exported_model(name, exporter))
    assert graph.meta["source"]["format"] == "onnx"
    assert graph.meta["source"]["producer"] == "pytorch"
    assert graph.meta["source"]["opset"] >= 17


@pytest.mark.parametrize("name", sorted(TORCH_MODELS))
def test_both_exporters_give_the_same_ir(name):
    legacy = import_onnx(exported_model(name, "legacy"))
    dynamo = import_onnx(exported_model(name, "dynamo"))
    assert ops(legacy) == ops(dynamo)
    assert [v.shape for v in legacy.outputs] == [v.shape for v in dynamo.outputs]
    model, shape = build_torch(name)
    x = np.random.default_rng(3).standard_normal((4, *shape)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    for graph in (legacy, dynamo):
        np.testing.assert_allclose(run_ann(graph, x)[0], want, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("name", ["vgg", "conv1d"])
def test_unoptimized_dynamo_export_folds_shape_chains(name):
    # Without onnxscript's optimizer the dynamo exporter keeps Shape/Squeeze/Concat/
    # Reshape chains for view(), and Shape/Expand/CastLike for bias-free convs.
    model = exported_model(name, "dynamo-noopt")
    assert {"Shape", "Concat"} <= {n.op_type for n in model.graph.node}
    graph = check(model)
    assert any("folded" in n and "Shape" in n for n in graph.meta["notices"])
    # Unoptimised, Conv+BatchNorm stays unfused; everything else matches the legacy export.
    legacy = ops(import_onnx(exported_model(name, "legacy")))
    assert ops(graph) - Counter(batch_norm=99) == legacy - Counter(batch_norm=99)


def test_expected_ir_for_vgg():
    graph = import_onnx(exported_model("vgg", "legacy"))
    assert ops(graph) == Counter(
        {"affine": 2, "conv": 2, "relu": 3, "max_pool": 1, "batch_norm": 2, "reshape": 1, "linear": 2, "softmax": 1}
    )
    assert graph.find("max_pool")[0].attr("pads") == [1, 1, 1, 1]
    # Conv+BN is folded by the exporter; the per-channel normalisation stays an affine.
    assert graph.find("affine")[0].params["shift"].shape == (3, 1, 1)
    assert graph.outputs[0].producer.op == "softmax"


def test_ir_names_come_from_the_onnx_model():
    legacy = import_onnx(exported_model("resnet", "legacy"))
    assert "stem.Conv" in {n.name for n in legacy.nodes}  # from node /stem/Conv
    dynamo = import_onnx(exported_model("resnet", "dynamo"))
    names = {n.name for n in dynamo.nodes}  # dynamo output names: conv2d, relu_1, add_30, ...
    assert {"conv2d", "relu"} <= names and any(n.startswith("add") for n in names)
    assert legacy.inputs[0].name == "x"
    assert all("/" not in n.name and ":" not in n.name for n in legacy.nodes)


def test_import_from_file_equals_import_from_proto(tmp_path):
    model = exported_model("resnet", "legacy")
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    before = model.SerializeToString()
    a, b = import_onnx(path), import_onnx(str(path))
    c = import_onnx(model)
    assert model.SerializeToString() == before  # the caller's model is not modified
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes] == [n.name for n in c.nodes]
    x = rand(3, 3, 8, 8)
    np.testing.assert_array_equal(run_ann(a, x)[0], run_ann(c, x)[0])


def test_local_functions_are_inlined():
    body = [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Mul", ["r", "two"], ["b"])]
    body.insert(0, helper.make_node("Constant", [], ["two"], value_float=2.0))
    fn = helper.make_function("local", "ScaledRelu", ["a"], ["b"], body, [helper.make_opsetid("", 17)])
    model = make_model([helper.make_node("ScaledRelu", ["x"], ["y"], domain="local")], ["N", 4])
    model.opset_import.append(helper.make_opsetid("local", 1))
    model.functions.append(fn)
    assert ops(check(model)) == Counter({"relu": 1, "affine": 1})


def test_external_data(tmp_path):
    model = exported_model("vgg", "legacy")
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    check(str(path))


# ============================================================== Conv / ConvTranspose
@pytest.mark.parametrize(
    "attrs",
    [
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
        {"auto_pad": "SAME_LOWER", "strides": [2, 2]},
        {"auto_pad": "SAME_LOWER", "strides": [1, 3]},
        {"auto_pad": "VALID", "strides": [2, 1]},
        {"pads": [1, 0, 2, 1], "strides": [1, 2]},
        {"pads": [1, 1, 1, 1], "group": 2, "dilations": [2, 2]},
    ],
)
def test_conv_2d_padding_variants(attrs):
    w = rand(4, 4 // attrs.get("group", 1), 4, 3)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs)  # no bias
    graph = check(make_model([node], ["N", 4, 7, 9], {"w": w}))
    conv = graph.find("conv")[0]
    assert len(conv.attr("pads")) == 4
    np.testing.assert_array_equal(conv.params["bias"], 0)


@pytest.mark.parametrize("attrs", [{"auto_pad": "SAME_UPPER", "strides": [3]}, {"pads": [2, 1], "dilations": [2]}])
def test_conv_1d(attrs):
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    check(make_model([node], ["N", 3, 11], {"w": rand(5, 3, 4), "b": rand(5)}))


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 1]},
        {"strides": [2, 2], "output_shape": [9, 8]},
        {"strides": [2, 2], "output_shape": [7, 7], "auto_pad": "SAME_UPPER"},
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
        {"strides": [2, 1], "group": 2, "dilations": [1, 2], "auto_pad": "VALID"},
    ],
)
def test_conv_transpose_variants(attrs):
    groups = attrs.get("group", 1)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attrs)
    graph = check(make_model([node], ["N", 4, 4, 4], {"w": rand(4, 4 // groups, 3, 3), "b": rand(4)}))
    assert ops(graph) == Counter({"conv_transpose": 1})


def test_conv_transpose_1d_without_bias():
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2], pads=[1, 0])
    check(make_model([node], ["N", 2, 5], {"w": rand(2, 3, 4)}))


def test_conv_weights_from_constant_nodes_and_transposes():
    # Weight = Transpose(Identity(Constant)), bias = Sqrt(Constant) (folded with onnx.reference).
    w = rand(3, 3, 2, 4)
    nodes = [
        helper.make_node("Constant", [], ["wc"], value=numpy_helper.from_array(w)),
        helper.make_node("Identity", ["wc"], ["wi"]),
        helper.make_node("Transpose", ["wi"], ["wt"], perm=[3, 2, 0, 1]),  # -> [4, 2, 3, 3]
        helper.make_node("Constant", [], ["bsq"], value_floats=[1.0, 4.0, 9.0, 16.0]),
        helper.make_node("Sqrt", ["bsq"], ["b"]),
        helper.make_node("Conv", ["x", "wt", "b"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = check(make_model(nodes, ["N", 2, 5, 5]))
    np.testing.assert_allclose(graph.find("conv")[0].params["bias"], [1, 2, 3, 4])
    assert any("Transpose" in n and "Sqrt" in n for n in graph.meta["notices"])


# ======================================================================= Gemm / MatMul
@pytest.mark.parametrize(
    "trans_b, alpha, beta, c_shape",
    [(0, 1.0, 1.0, None), (1, 0.5, 2.0, (5,)), (0, 1.5, 0.5, (1, 5)), (1, 1.0, 3.0, ()), (1, 2.0, 1.0, (1,))],
)
def test_gemm(trans_b, alpha, beta, c_shape):
    b = rand(5, 6) if trans_b else rand(6, 5)
    inits = {"b": b}
    inputs = ["x", "b"]
    if c_shape is not None:
        inits["c"] = rand(*c_shape) if c_shape else np.float32(0.7)
        inputs.append("c")
    node = helper.make_node("Gemm", inputs, ["y"], alpha=alpha, beta=beta, transB=trans_b)
    graph = check(make_model([node], ["N", 6], inits))
    assert ops(graph) == Counter({"linear": 1})
    assert graph.find("linear")[0].params["weight"].shape == (5, 6)


def test_matmul_with_the_constant_first_is_rejected():
    node = helper.make_node("MatMul", ["w", "x"], ["y"], name="mm")
    with pytest.raises(UnsupportedOpError, match="'mm'.*input 0 .*constant"):
        import_onnx(make_model([node], ["N", 6, 3], {"w": rand(4, 6)}))


def test_gemm_trans_a_is_rejected():
    node = helper.make_node("Gemm", ["x", "b"], ["y"], transA=1, name="g")
    with pytest.raises(UnsupportedOpError, match="transA"):
        import_onnx(make_model([node], ["N", 6], {"b": rand(6, 5)}))


@pytest.mark.parametrize("bias_shape", [(4,), (1, 4), (1, 1, 4)])
def test_matmul_add_fuses_into_one_linear(bias_shape):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm"), helper.make_node("Add", ["b", "mm"], ["y"], name="add")]
    graph = check(make_model(nodes, ["N", 3, 6], {"w": rand(6, 4), "b": rand(*bias_shape)}))
    assert ops(graph) == Counter({"linear": 1})
    assert graph.outputs[0].name == "y"
    assert any("fused MatMul + Add" in n for n in graph.meta["notices"])


def test_matmul_with_two_readers_is_not_fused():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["y"])]
    graph = check(make_model(nodes, ["N", 6], {"w": rand(6, 4), "b": rand(4)}, outputs=("y", "mm")))
    assert ops(graph) == Counter({"linear": 1, "affine": 1})
    assert graph.meta["output_sources"] == ["y", "mm"]


def test_matmul_add_with_non_vector_constant_is_not_fused():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["y"])]
    graph = check(make_model(nodes, ["N", 3, 6], {"w": rand(6, 4), "b": rand(3, 1)}))
    assert ops(graph) == Counter({"linear": 1, "affine": 1})


# ================================================================== Relu / Clip
@pytest.mark.parametrize("max_value, expect", [(6.0, 6.0), (None, None), (np.inf, None)])
def test_clip_with_min_zero_is_relu(max_value, expect):
    inits = {"lo": np.float32(0.0)}
    inputs = ["x", "lo"]
    if max_value is not None:
        inits["hi"] = np.float32(max_value)
        inputs.append("hi")
    graph = check(make_model([helper.make_node("Clip", inputs, ["y"])], ["N", 8], inits, opset=13))
    assert graph.find("relu")[0].attr("max") == expect


@pytest.mark.parametrize("inputs, inits", [(["x", "", "hi"], {"hi": np.float32(6)}), (["x", "lo"], {"lo": np.float32(-1)}), (["x"], {})])
def test_clip_without_min_zero_is_rejected(inputs, inits):
    node = helper.make_node("Clip", inputs, ["y"], name="clip7")
    with pytest.raises(UnsupportedOpError, match="clip7.*min 0"):
        import_onnx(make_model([node], ["N", 8], inits))


# =========================================================== pooling and reductions
@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1},
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [2, 2]},
        {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
    ],
)
def test_max_pool(attrs):
    graph = check(make_model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], ["N", 2, 7, 8]))
    assert ops(graph) == Counter({"max_pool": 1})


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [2, 2]},
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1},
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 0},
        {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 0], "ceil_mode": 1, "count_include_pad": 1},
    ],
)
def test_average_pool(attrs):
    graph = check(make_model([helper.make_node("AveragePool", ["x"], ["y"], **attrs)], ["N", 2, 7, 8]))
    assert ops(graph) == Counter({"avg_pool": 1})


def test_average_pool_1d():
    check(make_model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3], strides=[2], pads=[1, 1])], ["N", 2, 9]))


def test_max_pool_indices_output_used_is_rejected():
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], name="mp")
    model = make_model([node], ["N", 2, 4, 4])
    model.graph.output.append(helper.make_tensor_value_info("idx", TensorProto.INT64, None))
    with pytest.raises(UnsupportedOpError, match="MaxPool.*mp.*indices"):
        import_onnx(model)


def test_global_average_pool():
    graph = check(make_model([helper.make_node("GlobalAveragePool", ["x"], ["y"])], ["N", 3, 5, 4]))
    assert graph.outputs[0].shape == (3, 1, 1)


@pytest.mark.parametrize("opset, axes, keepdims", [(18, [2, 3], 0), (18, [-1, -2], 1), (13, [2, 3], 0), (13, [3, 2], 1)])
def test_reduce_mean_over_spatial_axes(opset, axes, keepdims):
    if opset >= 18:
        node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=keepdims)
        inits = {"axes": i64(*axes)}
    else:
        node = helper.make_node("ReduceMean", ["x"], ["y"], axes=axes, keepdims=keepdims)
        inits = {}
    graph = check(make_model([node], ["N", 3, 5, 4], inits, opset=opset))
    assert ops(graph) == Counter({"global_avg_pool": 1})
    assert graph.outputs[0].shape == ((3, 1, 1) if keepdims else (3,))


def test_reduce_mean_1d_spatial():
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)
    check(make_model([node], ["N", 3, 7], {"axes": i64(2)}, opset=18))


@pytest.mark.parametrize("axes", [[1], [1, 2, 3], None])
def test_reduce_mean_over_other_axes_is_rejected(axes):
    inputs, inits = (["x"], {}) if axes is None else (["x", "axes"], {"axes": i64(*axes)})
    node = helper.make_node("ReduceMean", inputs, ["y"], name="rm")
    with pytest.raises(UnsupportedOpError, match="ReduceMean.*rm"):
        import_onnx(make_model([node], ["N", 3, 5, 4], inits, opset=18))


# ====================================================================== BatchNorm
def bn_inits(c: int) -> dict[str, np.ndarray]:
    r = np.random.default_rng(5)
    return {
        "s": r.uniform(0.5, 1.5, c).astype(np.float32),
        "b": r.uniform(-1, 1, c).astype(np.float32),
        "m": r.uniform(-1, 1, c).astype(np.float32),
        "v": r.uniform(0.5, 2, c).astype(np.float32),
    }


@pytest.mark.parametrize("shape", [["N", 3, 4, 4], ["N", 3], ["N", 3, 6]])
def test_batch_norm(shape):
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)
    graph = check(make_model([node], shape, bn_inits(3)))
    assert graph.find("batch_norm")[0].attr("epsilon") == pytest.approx(1e-3)


def test_batch_norm_training_outputs():
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], name="bn", training_mode=0)
    # Declared but unused extra outputs are fine.
    graph = import_onnx(make_model([node], ["N", 3, 4, 4], bn_inits(3)))
    assert ops(graph) == Counter({"batch_norm": 1})
    # Used ones are not.
    with pytest.raises(UnsupportedOpError, match="bn.*running mean"):
        import_onnx(make_model([node], ["N", 3, 4, 4], bn_inits(3), outputs=("y", "rm")))
    training = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn", training_mode=1)
    with pytest.raises(UnsupportedOpError, match="training_mode"):
        import_onnx(make_model([training], ["N", 3, 4, 4], bn_inits(3)))


# ==================================================== Flatten / Reshape / (Un)Squeeze
@pytest.mark.parametrize("shape, axis, out", [([3, 4, 4], 1, (48,)), ([1, 4, 4], 2, (16,)), ([1, 1, 5], -1, (5,)), ([1, 1], 3, (1,))])
def test_flatten(shape, axis, out):
    graph = check(make_model([helper.make_node("Flatten", ["x"], ["y"], axis=axis)], ["N", *shape]))
    assert graph.outputs[0].shape == out


@pytest.mark.parametrize("shape, axis", [([3, 4, 4], 0), ([3, 4, 4], 2), ([3, 2], 3)])
def test_flatten_mixing_samples_is_rejected(shape, axis):
    with pytest.raises(UnsupportedOpError, match="Flatten.*batch"):
        import_onnx(make_model([helper.make_node("Flatten", ["x"], ["y"], axis=axis, name="fl")], ["N", *shape]))


def shape_chain(tail: list[int]) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """Nodes computing Concat(Unsqueeze(Gather(Shape(x), 0)), tail): the legacy exporter's
    x.view(x.size(0), ...) idiom."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Gather", ["shp", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "tail"], ["target"], axis=0),
    ]
    return nodes, {"zero": np.int64(0), "axes0": i64(0), "tail": i64(*tail)}


@pytest.mark.parametrize("tail, out", [([-1], (48,)), ([12, 4], (12, 4)), ([3, -1, 2], (3, 8, 2))])
def test_reshape_with_batch_from_shape_chain(tail, out):
    nodes, inits = shape_chain(tail)
    nodes.append(helper.make_node("Reshape", ["x", "target"], ["y"]))
    graph = check(make_model(nodes, ["N", 3, 4, 4], inits))
    assert graph.outputs[0].shape == out
    assert any("Shape×1" in n for n in graph.meta["notices"])


@pytest.mark.parametrize(
    "target, allowzero, out", [([-1, 48], 0, (48,)), ([0, -1], 0, (48,)), ([0, 0, -1], 0, (3, 16)), ([-1, 3, 16], 1, (3, 16))]
)
def test_reshape_with_constant_target(target, allowzero, out):
    node = helper.make_node("Reshape", ["x", "t"], ["y"], allowzero=allowzero)
    graph = check(make_model([node], ["N", 3, 4, 4], {"t": i64(*target)}, opset=14))
    assert graph.outputs[0].shape == out


def test_reshape_target_from_sliced_shape_and_arithmetic():
    # target = Concat(Slice(Shape(x), 0, 2), [H * W]) with H * W computed by folding.
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Slice", ["shp", "s0", "s2"], ["nc"]),
        helper.make_node("Shape", ["x"], ["hw"], start=2),
        helper.make_node("ReduceProd", ["hw"], ["hw1"], keepdims=1),  # folded by onnx.reference
        helper.make_node("Concat", ["nc", "hw1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    graph = check(make_model(nodes, ["N", 3, 4, 5], {"s0": i64(0), "s2": i64(2)}))
    assert graph.outputs[0].shape == (3, 20)


def test_reshape_with_fixed_batch():
    # A model exported with a fixed batch of 2: the constant target names the batch literally.
    node = helper.make_node("Reshape", ["x", "t"], ["y"])
    graph = check(make_model([node], [2, 3, 4], {"t": i64(2, 12)}), n=5)  # 5 samples: chunked and padded
    assert graph.outputs[0].shape == (12,)


@pytest.mark.parametrize(
    "nodes, inits, match",
    [
        ([helper.make_node("Reshape", ["x", "t"], ["y"], name="r")], {"t": i64(4, -1)}, "batch dimension must stay first"),
        ([helper.make_node("Reshape", ["x", "t"], ["y"], name="r")], {"t": i64(-1)}, "per-sample sizes"),
        ([helper.make_node("Reshape", ["x", "t"], ["y"], name="r", allowzero=1)], {"t": i64(0, 48)}, "batch dimension must stay first"),
        (
            [
                helper.make_node("Shape", ["x"], ["shp"]),
                helper.make_node("Gather", ["shp", "z"], ["b"], axis=0),
                helper.make_node("Mul", ["b", "three"], ["b3"]),
                helper.make_node("Unsqueeze", ["b3", "a0"], ["b31"]),
                helper.make_node("Concat", ["b31", "tail"], ["t"], axis=0),
                helper.make_node("Reshape", ["x", "t"], ["y"], name="r"),
            ],
            {"z": np.int64(0), "three": np.int64(3), "a0": i64(0), "tail": i64(16)},
            "depends on the batch size",
        ),
    ],
)
def test_reshape_that_mixes_samples_is_rejected(nodes, inits, match):
    with pytest.raises(UnsupportedOpError, match=match):
        import_onnx(make_model(nodes, ["N", 3, 4, 4], inits, opset=14))


def test_squeeze_and_unsqueeze():
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["g"]),
        helper.make_node("Squeeze", ["g", "a"], ["s"]),
        helper.make_node("Unsqueeze", ["s", "b"], ["y"]),
    ]
    graph = check(make_model(nodes, ["N", 3, 4, 4], {"a": i64(2, 3), "b": i64(-1)}))
    assert graph.outputs[0].shape == (3, 1)
    assert ops(graph) == Counter({"global_avg_pool": 1, "reshape": 2})


# ============================================================ Add / Sub / Mul / Div
@pytest.mark.parametrize(
    "op, const_first, c_shape",
    [
        ("Add", False, (1, 3, 1, 1)),
        ("Add", True, (3, 4, 5)),
        ("Sub", False, (3, 1, 1)),
        ("Sub", True, ()),
        ("Mul", True, (5,)),
        ("Mul", False, (1, 1, 4, 1)),
        ("Div", False, (3, 1, 1)),
    ],
)
def test_arithmetic_with_a_constant_is_affine(op, const_first, c_shape):
    c = np.random.default_rng(2).uniform(0.5, 2.0, c_shape).astype(np.float32)
    inputs = ["c", "x"] if const_first else ["x", "c"]
    graph = check(make_model([helper.make_node(op, inputs, ["y"])], ["N", 3, 4, 5], {"c": c}))
    assert ops(graph) == Counter({"affine": 1})
    assert graph.find("affine")[0].params["scale"].ndim == 3


def test_input_normalisation_chain():
    nodes = [helper.make_node("Sub", ["x", "mean"], ["centred"]), helper.make_node("Div", ["centred", "std"], ["y"])]
    inits = {"mean": rand(1, 3, 1, 1), "std": np.array([0.2, 0.3, 0.4], np.float32).reshape(1, 3, 1, 1)}
    graph = check(make_model(nodes, ["N", 3, 4, 4], inits))
    assert ops(graph) == Counter({"affine": 2})


def test_sub_and_add_of_two_tensors():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Sub", ["x", "r"], ["d"]),
        helper.make_node("Add", ["d", "x"], ["y"]),
    ]
    graph = check(make_model(nodes, ["N", 2, 3]))
    assert [n.attr("coeffs") for n in graph.find("add")] == [[1.0, -1.0], None]


@pytest.mark.parametrize(
    "op, inputs, inits, match",
    [
        ("Mul", ["x", "x"], {}, "not linear"),
        ("Div", ["c", "x"], {"c": np.float32(2)}, "not linear"),
        ("Div", ["x", "c"], {"c": np.array([1, 0, 2], np.float32).reshape(3, 1, 1)}, "zeros"),
        ("Add", ["x", "c"], {"c": rand(2, 3, 4, 4)}, "does not broadcast"),
        ("Add", ["x", "c"], {"c": rand(3, 4, 4, 4)}, "does not broadcast"),
    ],
)
def test_non_linear_or_broadcasting_arithmetic_is_rejected(op, inputs, inits, match):
    with pytest.raises(UnsupportedOpError, match=f"{op}.*node7.*{match}"):
        import_onnx(make_model([helper.make_node(op, inputs, ["y"], name="node7")], ["N", 3, 1, 4], inits))


# ======================================================================= Concat
def test_concat_with_negative_axis():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Conv", ["x", "w"], ["b"]),
        helper.make_node("Concat", ["a", "b", "x"], ["y"], axis=-3),
    ]
    graph = check(make_model(nodes, ["N", 2, 3, 3], {"w": rand(4, 2, 1, 1)}))
    assert graph.find("concat")[0].attr("axis") == 1
    assert graph.outputs[0].shape == (8, 3, 3)


@pytest.mark.parametrize("inputs, axis, match", [(["x", "c"], 1, "constant"), (["x", "x"], 0, "batch axis")])
def test_bad_concat_is_rejected(inputs, axis, match):
    node = helper.make_node("Concat", inputs, ["y"], axis=axis, name="cat")
    with pytest.raises(UnsupportedOpError, match=match):
        import_onnx(make_model([node], ["N", 2, 3], {"c": rand(1, 2, 3)}))


# =============================================================== Resize / Upsample
def resize_model(
    ctm: str, nearest_mode: str, *, scales=None, sizes=None, mode: str = "nearest", opset: int = 17, axes=None
) -> onnx.ModelProto:
    inits, inputs = {}, ["x", ""]
    if scales is not None:
        inits["scales"] = np.array(scales, np.float32)
        inputs.append("scales")
    else:
        inits["sizes"] = i64(*sizes)
        inputs += ["", "sizes"]
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm, "nearest_mode": nearest_mode}
    if axes is not None:
        attrs["axes"] = axes
    return make_model([helper.make_node("Resize", inputs, ["y"], name="rs", **attrs)], ["N", 2, 3, 4], inits, opset=opset)


@pytest.mark.parametrize(
    "ctm, nearest_mode, kw",
    [
        ("asymmetric", "floor", {"scales": [1, 1, 2, 2]}),  # what both torch exporters emit
        ("asymmetric", "floor", {"scales": [1, 1, 3, 2]}),
        ("asymmetric", "round_prefer_floor", {"scales": [1, 1, 2, 2]}),  # only exact for factor 2
        ("half_pixel", "round_prefer_floor", {"scales": [1, 1, 2, 3]}),  # ONNX defaults
        ("pytorch_half_pixel", "round_prefer_ceil", {"scales": [1, 1, 4, 2]}),
        ("tf_half_pixel_for_nn", "floor", {"scales": [1, 1, 3, 3]}),
    ],
)
def test_resize_nearest_integer_upsampling(ctm, nearest_mode, kw):
    graph = check(resize_model(ctm, nearest_mode, **kw))
    assert ops(graph) == Counter({"upsample": 1})


@pytest.mark.parametrize("kw", [{"scales": [2, 3]}, {"sizes": [6, 12]}])
def test_resize_opset18_with_axes(kw):
    graph = check(resize_model("asymmetric", "floor", axes=[2, 3], opset=18, **kw))
    assert graph.find("upsample")[0].attr("scales") == [2, 3]


def test_resize_sizes_with_a_literal_batch_size_is_rejected():
    # sizes [2, 2, 6, 8] resamples the batch axis whenever the batch is not 2.
    with pytest.raises(UnsupportedOpError, match="batch size"):
        import_onnx(resize_model("asymmetric", "floor", sizes=[2, 2, 6, 8]))


def test_resize_sizes_from_shape_chain():
    # F.interpolate(size=...) idiom: sizes = Concat(Slice(Shape(x), 0, 2), [6, 8]).
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Slice", ["shp", "s0", "s2"], ["nc"]),
        helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
        helper.make_node(
            "Resize", ["x", "", "", "sizes"], ["y"], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"
        ),
    ]
    check(make_model(nodes, ["N", 2, 3, 4], {"s0": i64(0), "s2": i64(2), "hw": i64(6, 8)}))


@pytest.mark.parametrize(
    "ctm, nearest_mode, kw, match",
    [
        ("asymmetric", "floor", {"scales": [1, 1, 2, 2], "mode": "linear"}, "mode 'linear'"),
        ("asymmetric", "floor", {"scales": [1, 1, 1.5, 2]}, "integer"),
        ("asymmetric", "floor", {"scales": [1, 1, 0.5, 0.5]}, "integer"),
        ("asymmetric", "floor", {"scales": [1, 2, 2, 2]}, "channel"),
        ("asymmetric", "round_prefer_ceil", {"scales": [1, 1, 2, 2]}, "not a plain nearest upsample"),
        ("asymmetric", "round_prefer_floor", {"scales": [1, 1, 3, 3]}, "not a plain nearest upsample"),
        ("half_pixel", "floor", {"scales": [1, 1, 2, 2]}, "not a plain nearest upsample"),
        # (align_corners with factor 2 does repeat every element: accepted; factor 3 does not.)
        ("align_corners", "round_prefer_floor", {"scales": [1, 1, 3, 3]}, "not a plain nearest upsample"),
    ],
)
def test_resize_that_is_not_a_nearest_upsample_is_rejected(ctm, nearest_mode, kw, match):
    with pytest.raises(UnsupportedOpError, match=f"Resize.*rs.*{match}"):
        import_onnx(resize_model(ctm, nearest_mode, **kw))


def test_deprecated_upsample_op():
    # Upsample (opset 7-9) is not runnable by onnxruntime at opset >= 13; check the IR itself.
    node = helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")
    graph = import_onnx(make_model([node], ["N", 2, 3, 4], {"scales": np.array([1, 1, 2, 3], np.float32)}))
    x = rand(2, 2, 3, 4)
    np.testing.assert_array_equal(run_ann(graph, x)[0], x.repeat(2, axis=2).repeat(3, axis=3))


class Upsamplers(nn.Module):
    """nn.Upsample, F.interpolate with size= and with scale_factor=3; two outputs."""

    def forward(self, x):
        a = F.interpolate(x, size=(6, 8), mode="nearest")
        b = nn.Upsample(scale_factor=2, mode="nearest")(x)
        return torch.cat([a, b], dim=1), F.interpolate(x, scale_factor=3)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_torch_upsampling_idioms(exporter):
    graph = check(torch_export(Upsamplers().eval(), (2, 3, 4), exporter))
    assert ops(graph) == Counter({"upsample": 3, "concat": 1})
    assert [v.shape for v in graph.outputs] == [(4, 6, 8), (2, 9, 12)]


def test_torch_nearest_exact_is_rejected_clearly():
    # The legacy exporter cannot export mode="nearest-exact" at opset 17; the dynamo
    # exporter lowers it to Transpose -> GatherND(index table) -> Transpose, not Resize.
    model = torch_export(nn.Upsample(scale_factor=2, mode="nearest-exact").eval(), (2, 3, 4), "dynamo")
    with pytest.raises(UnsupportedOpError, match="'Transpose' at node .*channel-first"):
        import_onnx(model)


# ============================================== Identity / Dropout / Softmax / ArgMax
def test_identity_dropout_softmax_argmax():
    nodes = [
        helper.make_node("Identity", ["x"], ["i"]),
        helper.make_node("Dropout", ["i", "ratio", "train"], ["d", "mask"]),
        helper.make_node("Softmax", ["d"], ["probs"], axis=-1),
        helper.make_node("ArgMax", ["probs"], ["label"], axis=1, keepdims=0),
    ]
    inits = {"ratio": np.float32(0.3), "train": np.array(False)}
    model = make_model(nodes, ["N", 7], inits, outputs=("probs",), opset=13)
    model.graph.output.append(helper.make_tensor_value_info("label", TensorProto.INT64, None))
    graph = check(model)
    assert [n.op for n in graph.nodes] == ["identity", "dropout", "softmax", "argmax"]
    assert graph.meta["output_sources"] == ["probs", "label"]


def test_dropout_in_training_mode_is_rejected():
    node = helper.make_node("Dropout", ["x", "ratio", "train"], ["y"], name="drop")
    with pytest.raises(UnsupportedOpError, match="training"):
        import_onnx(make_model([node], ["N", 7], {"ratio": np.float32(0.3), "train": np.array(True)}, opset=13))


def test_cast_between_float_types_is_identity():
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)
    graph = check(make_model([node], ["N", 4], in_type=TensorProto.DOUBLE))
    assert [n.op for n in graph.nodes] == ["identity"]


def test_slice_of_the_batch_axis_is_rejected():
    node = helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="crop")
    with pytest.raises(UnsupportedOpError, match="slices the batch axis"):
        import_onnx(make_model([node], ["N", 3, 8], {"s": i64(1), "e": i64(5), "a": i64(0)}))


def test_slice_of_an_activation_imports_as_slice():
    node = helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="crop")
    graph = import_onnx(make_model([node], ["N", 3, 8], {"s": i64(1), "e": i64(5), "a": i64(2)}))
    assert [n.op for n in graph.nodes] == ["slice"] and graph.outputs[0].shape == (3, 4)


# ============================================================== skl2onnx classifier
def test_skl2onnx_mlp_classifier():
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(24,), max_iter=5, random_state=0).fit(x[:600], y[:600])
    model = skl2onnx.to_onnx(clf, x[:1], target_opset=17)
    graph = check(model, n=8)
    assert ops(graph) == Counter({"linear": 2, "relu": 1, "softmax": 1})
    notices = " ".join(graph.meta["notices"])
    assert "stripped output post-processing" in notices
    assert "output_label" in notices and "ZipMap" in notices and "ArrayFeatureExtractor" in notices
    assert graph.meta["source"]["producer"] == "skl2onnx"
    # The kept output is the probability tensor that fed ZipMap.
    (source,) = graph.meta["output_sources"]
    assert source not in {o.name for o in model.graph.output}
    np.testing.assert_allclose(run_ann(graph, x[700:750])[0], clf.predict_proba(x[700:750]), atol=TOL, rtol=TOL)
    no_zipmap = skl2onnx.to_onnx(clf, x[:1], target_opset=17, options={"zipmap": False})
    graph = check(no_zipmap)
    assert graph.meta["output_sources"] == ["probabilities"]
    assert any("'label'" in n for n in graph.meta["notices"])


# ========================================================================== errors
@pytest.mark.parametrize("act", [nn.Sigmoid(), nn.Tanh()])
def test_unsupported_activation_from_torch(act):
    model = nn.Sequential(nn.Linear(4, 3), act).eval()
    with pytest.raises(UnsupportedOpError) as err:
        import_onnx(torch_export(model, (4,), "legacy"))
    op_type = type(act).__name__
    assert err.value.op_type == op_type
    assert f"'/1/{op_type}'" in str(err.value)  # the node name
    assert "ReLU" in err.value.hint and "snnc supports" in err.value.hint


def test_unsupported_lstm():
    hidden = 3
    node = helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=hidden, name="lstm0")
    inits = {"w": rand(1, 4 * hidden, 5), "r": rand(1, 4 * hidden, hidden)}
    with pytest.raises(UnsupportedOpError, match="'LSTM' at node 'lstm0'.*recurrence"):
        import_onnx(make_model([node], ["N", 2, 5], inits))


def test_op_from_another_domain():
    node = helper.make_node("FusedConv", ["x"], ["y"], domain="com.microsoft", name="fc")
    model = make_model([node], ["N", 2, 5])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(UnsupportedOpError, match="com.microsoft::FusedConv"):
        import_onnx(model)


@pytest.mark.parametrize("content", [b"hello, this is not an ONNX model\n", b"", b"PK\x03\x04 zip-like torch checkpoint"])
def test_non_onnx_file_is_a_data_error(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(DataError, match="not .*ONNX model"):
        import_onnx(path)
    with pytest.raises(DataError):
        onnx_reference(path)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        import_onnx(tmp_path / "nope.onnx")


def test_old_opset_is_refused():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], ["N", 4], opset=11)
    with pytest.raises(DataError, match="opset 11.*opset 13 or newer"):
        import_onnx(model)


def test_multiple_inputs_are_refused():
    model = make_model([helper.make_node("Add", ["x", "x2"], ["y"])], ["N", 4])
    model.graph.input.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 4]))
    with pytest.raises(DataError, match="2 inputs.*'x2'"):
        import_onnx(model)


@pytest.mark.parametrize("shape, match", [(["N", 3, "H", 4], "dimension 2 .*'H'.*static"), (["N", 3, None], "dimension 2")])
def test_dynamic_non_batch_dims_are_refused(shape, match):
    with pytest.raises(DataError, match=match):
        import_onnx(make_model([helper.make_node("Relu", ["x"], ["y"])], shape))


def test_integer_input_is_refused():
    model = make_model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], ["N", 4], in_type=TensorProto.INT64)
    with pytest.raises(DataError, match="INT64"):
        import_onnx(model)


def test_constant_output_is_refused():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Identity", ["c"], ["z"])]
    with pytest.raises(DataError, match="'z' does not depend on the model input"):
        import_onnx(make_model(nodes, ["N", 4], {"c": rand(4)}, outputs=("y", "z")))


def test_configuration_the_ir_cannot_represent_is_unsupported():
    # The IR's avg_pool refuses pads larger than half the kernel (a VerificationError from
    # its shape rule); the torch frontend maps the same failure to the same class.
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], pads=[2, 2, 2, 2], count_include_pad=1, name="ap")
    with pytest.raises(UnsupportedOpError, match="'AveragePool' at node 'ap'.*'avg_pool' op cannot represent.*half the kernel"):
        import_onnx(make_model([node], ["N", 2, 6, 6]))


def test_layer_that_does_not_fit_the_input_shape_is_a_data_error():
    # A kernel larger than the (declared) input: the input shapes do not fit the op, which
    # both frontends report as a DataError naming their op, the node and the shapes.
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c")
    with pytest.raises(DataError, match=r"Conv at node 'c' cannot take input\(s\) of per-sample shape \[2, 3, 3\].*input_shape"):
        import_onnx(make_model([node], ["N", 2, 3, 3], {"w": rand(4, 2, 5, 5)}))


def test_errors_are_snnc_errors():
    assert issubclass(UnsupportedOpError, SnncError) and issubclass(DataError, SnncError)


# ======================================================================= Pad
@pytest.mark.parametrize(
    "pads, extra, opset",
    [
        ([0, 0, 1, 2, 0, 0, 3, 0], {}, 17),  # begins of N, C, H, W then ends
        ([0, 0, 0, 0, 0, 0, 0, 0], {}, 17),  # a no-op
        ([1, 2, 3, 0], {"axes": i64(2, 3)}, 18),  # only the spatial axes named
        ([0, 0, 1, 2, 0, 0, 3, 0], {"value": np.float32(0)}, 17),
    ],
)
def test_pad_with_zeros_is_the_pad_op(pads, extra, opset):
    inputs, inits = ["x", "pads"], {"pads": np.array(pads, dtype=np.int64)}
    if "value" in extra:
        inputs.append("value")
        inits["value"] = extra["value"]
    if "axes" in extra:
        inputs += ["", "axes"]
        inits["axes"] = extra["axes"]
    model = make_model([helper.make_node("Pad", inputs, ["y"], mode="constant")], ["N", 2, 5, 6], inits, opset=opset)
    graph = check(model)
    assert ops(graph) == (Counter() if not any(pads) else Counter({"pad": 1}))


@pytest.mark.parametrize(
    "pads, attrs, value, match",
    [
        ([0, 1, 0, 0, 0, 0, 0, 0], {}, None, "batch or channel"),
        ([0, 0, -1, 0, 0, 0, 0, 0], {}, None, "negative pads"),
        ([0, 0, 1, 0, 0, 0, 0, 0], {"mode": "reflect"}, None, "mode 'reflect'"),
        ([0, 0, 1, 0, 0, 0, 0, 0], {}, np.float32(1.5), "zeros only"),
    ],
)
def test_pad_that_is_not_zero_padding_of_space_is_rejected(pads, attrs, value, match):
    inputs, inits = ["x", "pads"], {"pads": np.array(pads, dtype=np.int64)}
    if value is not None:
        inputs.append("value")
        inits["value"] = value
    model = make_model([helper.make_node("Pad", inputs, ["y"], **attrs)], ["N", 2, 5, 6], inits)
    with pytest.raises(UnsupportedOpError, match=match):
        import_onnx(model)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_torch_zero_padding_through_both_exporters(exporter):
    """nn.ZeroPad2d and F.pad export as Pad (legacy); onnxscript's optimizer folds them into
    the convolutions' pads (dynamo). Both import and match onnxruntime and torch."""
    graph = check(exported_model("padded", exporter))
    assert ops(graph)["pad"] == (2 if exporter == "legacy" else 0)
    model, shape = build_torch("padded")
    x = np.random.default_rng(3).standard_normal((4, *shape)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(run_ann(graph, x)[0], model(torch.from_numpy(x)).numpy(), atol=TOL, rtol=TOL)


@pytest.mark.parametrize("threads", [1, 2])
def test_onnxruntime_uses_torchs_thread_budget(monkeypatch, threads):
    """The import check's onnxruntime session runs on torch's thread count (one per rank
    under torchrun), not on onnxruntime's default of one thread per core."""
    import onnxruntime as ort

    seen = []
    real = ort.InferenceSession

    def recording(source, opts=None, **kw):
        seen.append((opts.intra_op_num_threads, opts.inter_op_num_threads))
        return real(source, opts, **kw)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ref = onnx_reference(make_model([helper.make_node("Relu", ["x"], ["y"])], ["N", 3]))
    finally:
        torch.set_num_threads(before)
    assert seen == [(threads, 1)]
    x = np.array([[-1.0, 0.5, 2.0]], dtype=np.float32)
    assert np.array_equal(ref(x)[0], np.maximum(x, 0))
