"""Tests of the torch frontend (snnc.frontends.torch_fx).

Every supported construct is imported from a tiny module and the IR's own evaluation
(``run_ann`` through ``check_import``) must match the module's output to ~1e-5. Further
tests cover whole VGG/ResNet-style networks, user GraphModules, the torch.export
fallback, the guarantee that the caller's model is never modified, and the errors
raised for what cannot be imported.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from _torch_models import TOL, Net, import_and_check, ops, sample

from snnc.errors import DataError, UnsupportedOpError
from snnc.frontends.check import check_import
from snnc.frontends.torch_fx import import_torch, torch_reference


# --------------------------------------------------------------------------- helpers
def seq(*layers: nn.Module) -> nn.Module:
    return nn.Sequential(*layers)


def randomize_bn(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model


def as_traced_module(model: nn.Module) -> nn.Module:
    """Wrap a bare torch.nn layer in a Sequential: fx traces *into* the root module's
    forward, so only a wrapped layer reaches the importer as a call_module."""
    return model if isinstance(model, (Net, nn.Sequential)) else seq(model)


def snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
    state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    flags = {name: m.training for name, m in model.named_modules()}
    return state, flags


def assert_unchanged(model: nn.Module, before: tuple[dict[str, torch.Tensor], dict[str, bool]]) -> None:
    state, flags = before
    now = model.state_dict(keep_vars=True)
    assert now.keys() == state.keys()
    for key, value in state.items():
        assert now[key].dtype == value.dtype and torch.equal(now[key].detach(), value), f"{key} changed"
    assert {name: m.training for name, m in model.named_modules()} == flags


# -------------------------------------------------------------- one test per construct
@dataclass
class Case:
    id: str
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]
    ops: tuple[str, ...]  # IR ops the import must contain


def _inplace_statement(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = m.conv(x)
    torch.relu_(y)  # the result is discarded: later readers of y see the mutation
    return y * 1.0


def _fn_inplace_kwarg(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = m.conv(x)
    F.relu(y, inplace=True)
    return y + 0.5


def _method_inplace(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = m.conv(x)
    y.relu_()
    return y - 0.5


def _two_branches(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[], nn.Module]:
    return lambda: Net(lambda m, x: fn(m.a(x), m.b(x)), a=nn.Conv2d(3, 4, 1), b=nn.Conv2d(3, 4, 3, padding=1))


def _add_inplace(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a += b
    return a


def _sub_inplace(y: torch.Tensor) -> torch.Tensor:
    y.sub_(1.0)
    return y


def _buffered(fn: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        net = Net(fn)
        net.register_buffer("mean", torch.tensor([0.5, -0.25, 1.0]).view(1, 3, 1, 1))
        net.register_buffer("std", torch.tensor([0.5, 2.0, 4.0]).view(1, 3, 1, 1))
        net.register_buffer("chan", torch.tensor([1.0, 2.0, 3.0]))
        net.register_buffer("bias", torch.randn(3, 1, 1))
        return net

    return build


CASES = [
    # zero padding
    Case("zero_pad2d", lambda: nn.ZeroPad2d((1, 2, 0, 3)), (2, 4, 5), ("pad",)),
    Case("constant_pad1d_zero", lambda: nn.ConstantPad1d((2, 1), 0.0), (3, 6), ("pad",)),
    Case("F.pad_last_axis_only", lambda: Net(lambda m, x: F.pad(x, (1, 1))), (2, 4, 5), ("pad",)),
    Case("F.pad_zero_pads_is_no_op", lambda: Net(lambda m, x: m.c(F.pad(x, (0, 0, 0, 0))), c=nn.Conv2d(2, 3, 3)), (2, 4, 5), ("conv",)),
    # convolutions
    Case("conv1d", lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1), (3, 16), ("conv",)),
    Case("conv1d_groups_dilation_nobias", lambda: nn.Conv1d(4, 6, 3, groups=2, dilation=2, bias=False), (4, 16), ("conv",)),
    Case("conv1d_same_even_kernel", lambda: nn.Conv1d(3, 4, 4, padding="same"), (3, 11), ("conv",)),
    Case("conv2d_stride_padding", lambda: nn.Conv2d(3, 4, 3, stride=2, padding=(1, 2)), (3, 9, 9), ("conv",)),
    Case("conv2d_groups_dilation_nobias", lambda: nn.Conv2d(4, 8, 3, groups=4, dilation=2, bias=False), (4, 9, 9), ("conv",)),
    Case("conv2d_same_even_kernel", lambda: nn.Conv2d(3, 4, (4, 2), padding="same", dilation=(1, 2)), (3, 7, 8), ("conv",)),
    Case("conv2d_valid", lambda: nn.Conv2d(3, 4, 3, padding="valid"), (3, 6, 6), ("conv",)),
    Case("F.conv2d_parameter", lambda: Net(lambda m, x: F.conv2d(x, m.c.weight, None, 1, 1), c=nn.Conv2d(3, 2, 3)), (3, 6, 6), ("conv",)),
    Case("conv_transpose1d", lambda: nn.ConvTranspose1d(3, 4, 3, stride=2, padding=1, output_padding=1), (3, 7), ("conv_transpose",)),
    Case(
        "conv_transpose2d_groups",
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
        (4, 5, 5),
        ("conv_transpose",),
    ),
    Case("conv_transpose2d_dilation_nobias", lambda: nn.ConvTranspose2d(3, 2, 2, stride=(2, 1), dilation=2, bias=False), (3, 4, 5), ("conv_transpose",)),
    # linear and batch norm
    Case("linear", lambda: nn.Linear(12, 5), (12,), ("linear",)),
    Case("linear_nobias", lambda: nn.Linear(12, 5, bias=False), (12,), ("linear",)),
    Case("batchnorm1d_features", lambda: randomize_bn(seq(nn.Linear(6, 4), nn.BatchNorm1d(4))), (6,), ("linear", "batch_norm")),
    Case("batchnorm1d_sequence", lambda: randomize_bn(seq(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4))), (2, 10), ("conv", "batch_norm")),
    Case("batchnorm2d", lambda: randomize_bn(seq(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=1e-3))), (3, 6, 6), ("conv", "batch_norm")),
    Case("batchnorm2d_no_affine", lambda: randomize_bn(seq(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False))), (3, 6, 6), ("batch_norm",)),
    # ReLU in all its spellings
    Case("nn.ReLU", lambda: seq(nn.Conv2d(3, 3, 1), nn.ReLU()), (3, 4, 4), ("relu",)),
    Case("nn.ReLU_inplace", lambda: seq(nn.Conv2d(3, 3, 1), nn.ReLU(inplace=True)), (3, 4, 4), ("relu",)),
    Case("F.relu", lambda: Net(lambda m, x: F.relu(x)), (5,), ("relu",)),
    Case("torch.relu", lambda: Net(lambda m, x: torch.relu(x)), (5,), ("relu",)),
    Case("torch.relu_", lambda: Net(lambda m, x: torch.relu_(x * 2)), (5,), ("relu",)),
    Case("F.relu_inplace", lambda: Net(lambda m, x: F.relu(x - 0.1, inplace=True)), (5,), ("relu",)),
    Case("x.relu", lambda: Net(lambda m, x: x.relu()), (5,), ("relu",)),
    Case("relu_inplace_statement", lambda: Net(_inplace_statement, conv=nn.Conv2d(3, 3, 1)), (3, 4, 4), ("relu",)),
    Case("relu_inplace_kwarg_statement", lambda: Net(_fn_inplace_kwarg, conv=nn.Conv2d(3, 3, 1)), (3, 4, 4), ("relu",)),
    Case("relu_inplace_method_statement", lambda: Net(_method_inplace, conv=nn.Conv2d(3, 3, 1)), (3, 4, 4), ("relu",)),
    Case("nn.ReLU6", lambda: Net(lambda m, x: m.act(x * 4), act=nn.ReLU6()), (5,), ("relu",)),
    Case("F.relu6", lambda: Net(lambda m, x: F.relu6(x * 4)), (5,), ("relu",)),
    Case("F.hardtanh_0", lambda: Net(lambda m, x: F.hardtanh(x, 0.0, 0.5)), (5,), ("relu",)),
    Case("nn.Hardtanh_0", lambda: Net(lambda m, x: m.act(x), act=nn.Hardtanh(0.0, 0.5)), (5,), ("relu",)),
    Case("torch.clamp_min0", lambda: Net(lambda m, x: torch.clamp(x, min=0)), (5,), ("relu",)),
    Case("torch.clamp_0_max", lambda: Net(lambda m, x: torch.clamp(x, 0, 0.7)), (5,), ("relu",)),
    Case("x.clamp_min0", lambda: Net(lambda m, x: x.clamp(min=0)), (5,), ("relu",)),
    Case("x.clamp_min0_max", lambda: Net(lambda m, x: x.clamp(min=0, max=0.3)), (5,), ("relu",)),
    # pooling
    Case("nn.AvgPool1d", lambda: nn.AvgPool1d(3, stride=2, padding=1), (2, 9), ("avg_pool",)),
    Case("nn.AvgPool2d", lambda: nn.AvgPool2d(2), (2, 6, 6), ("avg_pool",)),
    Case(
        "nn.AvgPool2d_pad_ceil_exclude",
        lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        (2, 8, 8),
        ("avg_pool",),
    ),
    Case("F.avg_pool2d", lambda: Net(lambda m, x: F.avg_pool2d(x, 2, stride=1, padding=1)), (2, 5, 5), ("avg_pool",)),
    Case("nn.AdaptiveAvgPool2d_1", lambda: nn.AdaptiveAvgPool2d(1), (3, 5, 5), ("global_avg_pool",)),
    Case("nn.AdaptiveAvgPool2d_1x1", lambda: nn.AdaptiveAvgPool2d((1, 1)), (3, 5, 5), ("global_avg_pool",)),
    Case("F.adaptive_avg_pool2d", lambda: Net(lambda m, x: F.adaptive_avg_pool2d(x, 1)), (3, 5, 5), ("global_avg_pool",)),
    Case("nn.AdaptiveAvgPool2d_regular", lambda: nn.AdaptiveAvgPool2d((2, 3)), (3, 8, 9), ("avg_pool",)),
    Case("nn.AdaptiveAvgPool1d_1", lambda: nn.AdaptiveAvgPool1d(1), (3, 7), ("global_avg_pool",)),
    Case("x.mean_23", lambda: Net(lambda m, x: x.mean((2, 3))), (3, 4, 5), ("global_avg_pool",)),
    Case("x.mean_dim_keepdim", lambda: Net(lambda m, x: x.mean(dim=(2, 3), keepdim=True)), (3, 4, 5), ("global_avg_pool",)),
    Case("torch.mean_negative", lambda: Net(lambda m, x: torch.mean(x, (-2, -1))), (3, 4, 5), ("global_avg_pool",)),
    Case("x.mean_1d", lambda: Net(lambda m, x: x.mean(-1)), (3, 7), ("global_avg_pool",)),
    Case("nn.MaxPool1d", lambda: nn.MaxPool1d(2), (2, 9), ("max_pool",)),
    Case("nn.MaxPool2d_pad", lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 7, 7), ("max_pool",)),
    Case("nn.MaxPool2d_ceil", lambda: nn.MaxPool2d(2, ceil_mode=True), (2, 7, 7), ("max_pool",)),
    Case("nn.MaxPool2d_dilation", lambda: nn.MaxPool2d(3, stride=1, dilation=2), (2, 7, 7), ("max_pool",)),
    Case("F.max_pool2d", lambda: Net(lambda m, x: F.max_pool2d(x, 2)), (2, 6, 6), ("max_pool",)),
    # flatten / view / reshape
    Case("nn.Flatten", lambda: seq(nn.Flatten(), nn.Linear(48, 3)), (3, 4, 4), ("reshape", "linear")),
    Case("nn.Flatten_partial", lambda: nn.Flatten(2), (3, 4, 4), ("reshape",)),
    Case("torch.flatten", lambda: Net(lambda m, x: m.fc(torch.flatten(x, 1)), fc=nn.Linear(48, 3)), (3, 4, 4), ("reshape", "linear")),
    Case("x.flatten", lambda: Net(lambda m, x: x.flatten(1)), (3, 4, 4), ("reshape",)),
    Case("x.view_size0", lambda: Net(lambda m, x: x.view(x.size(0), -1)), (3, 4, 4), ("reshape",)),
    Case("x.reshape_shape0", lambda: Net(lambda m, x: x.reshape(x.shape[0], -1)), (3, 4, 4), ("reshape",)),
    Case("x.view_minus1_first", lambda: Net(lambda m, x: x.view(-1, 48)), (3, 4, 4), ("reshape",)),
    Case("x.view_sizes", lambda: Net(lambda m, x: x.view(x.size(0), x.size(1), -1)), (3, 4, 4), ("reshape",)),
    Case("x.view_size_product", lambda: Net(lambda m, x: x.view(x.size(0), x.size(1) * x.size(2), x.size(3))), (3, 4, 4), ("reshape",)),
    # addition of activations
    Case("operator.add", _two_branches(lambda a, b: a + b), (3, 5, 5), ("add",)),
    Case("torch.add", _two_branches(torch.add), (3, 5, 5), ("add",)),
    Case("torch.add_alpha", _two_branches(lambda a, b: torch.add(a, b, alpha=2.0)), (3, 5, 5), ("add",)),
    Case("x.add", _two_branches(lambda a, b: a.add(b)), (3, 5, 5), ("add",)),
    Case("iadd", _two_branches(_add_inplace), (3, 5, 5), ("add",)),
    Case("operator.sub_tensors", _two_branches(lambda a, b: a - b), (3, 5, 5), ("add",)),
    Case("add_same_value", lambda: Net(lambda m, x: x + x), (3, 5, 5), ("add",)),
    # arithmetic with constants
    Case("mul_scalar", lambda: Net(lambda m, x: x * 2), (3, 4), ("affine",)),
    Case("rmul_scalar", lambda: Net(lambda m, x: 2.5 * x), (3, 4), ("affine",)),
    Case("div_scalar", lambda: Net(lambda m, x: x / 4), (3, 4), ("affine",)),
    Case("sub_scalar", lambda: Net(lambda m, x: x - 1), (3, 4), ("affine",)),
    Case("rsub_scalar", lambda: Net(lambda m, x: 1 - x), (3, 4), ("affine",)),
    Case("neg", lambda: Net(lambda m, x: -x), (3, 4), ("affine",)),
    Case("torch.mul_scalar", lambda: Net(lambda m, x: torch.mul(x, 0.5)), (3, 4), ("affine",)),
    Case("normalise_buffers", _buffered(lambda m, x: (x - m.mean) / m.std), (3, 4, 4), ("affine",)),
    Case("add_buffer", _buffered(lambda m, x: x + m.bias), (3, 4, 4), ("affine",)),
    Case("mul_folded_buffer", _buffered(lambda m, x: x * m.chan.view(1, -1, 1, 1)), (3, 4, 4), ("affine",)),
    Case("mul_parameter", lambda: Net(lambda m, x: x * m.c.weight[0], c=nn.Linear(4, 2)), (3, 4), ("affine",)),
    # concatenation
    Case("torch.cat", _two_branches(lambda a, b: torch.cat([a, b], 1)), (3, 5, 5), ("concat",)),
    Case("torch.cat_negative", _two_branches(lambda a, b: torch.cat((a, b), dim=-1)), (3, 5, 5), ("concat",)),
    Case("torch.concat", _two_branches(lambda a, b: torch.concat([a, b], dim=-2)), (3, 5, 5), ("concat",)),
    # upsampling
    Case("nn.Upsample", lambda: nn.Upsample(scale_factor=2, mode="nearest"), (2, 3, 4), ("upsample",)),
    Case("nn.Upsample_per_axis", lambda: nn.Upsample(scale_factor=(2, 3)), (2, 3, 4), ("upsample",)),
    Case("nn.Upsample_size", lambda: nn.Upsample(size=(6, 8)), (2, 3, 4), ("upsample",)),
    Case("F.interpolate", lambda: Net(lambda m, x: F.interpolate(x, scale_factor=2)), (2, 3, 4), ("upsample",)),
    Case("F.interpolate_1d", lambda: Net(lambda m, x: F.interpolate(x, scale_factor=3, mode="nearest")), (2, 5), ("upsample",)),
    # structural and output ops
    Case("nn.Identity", lambda: seq(nn.Linear(4, 4), nn.Identity()), (4,), ("identity",)),
    Case("nn.Dropout", lambda: seq(nn.Linear(4, 4), nn.Dropout(0.7)), (4,), ("dropout",)),
    Case("nn.Dropout_p0", lambda: seq(nn.Linear(4, 4), nn.Dropout(p=0.0)), (4,), ("dropout",)),
    Case("F.dropout_training_flag", lambda: Net(lambda m, x: F.dropout(x, 0.5, training=m.training)), (4,), ("dropout",)),
    Case("nn.Softmax", lambda: seq(nn.Linear(4, 3), nn.Softmax(dim=1)), (4,), ("softmax",)),
    Case("F.softmax", lambda: Net(lambda m, x: F.softmax(m.fc(x), dim=1), fc=nn.Linear(4, 3)), (4,), ("softmax",)),
    Case("torch.softmax", lambda: Net(lambda m, x: torch.softmax(m.fc(x), 1), fc=nn.Linear(4, 3)), (4,), ("softmax",)),
    Case("x.softmax", lambda: Net(lambda m, x: m.fc(x).softmax(-1), fc=nn.Linear(4, 3)), (4,), ("softmax",)),
    # functional layers with the model's parameters and buffers
    Case("F.linear", lambda: Net(lambda m, x: F.linear(x, m.fc.weight, m.fc.bias), fc=nn.Linear(6, 3)), (6,), ("linear",)),
    Case(
        "F.batch_norm",
        lambda: randomize_bn(Net(lambda m, x: F.batch_norm(x, m.bn.running_mean, m.bn.running_var, m.bn.weight, m.bn.bias, False, 0.1, 1e-3), bn=nn.BatchNorm2d(3))),
        (3, 4, 4),
        ("batch_norm",),
    ),
    Case(
        "F.conv_transpose1d",
        lambda: Net(lambda m, x: F.conv_transpose1d(x, m.ct.weight, m.ct.bias, stride=2, padding=1, output_padding=1), ct=nn.ConvTranspose1d(3, 2, 3)),
        (3, 6),
        ("conv_transpose",),
    ),
    Case("F.max_pool1d", lambda: Net(lambda m, x: F.max_pool1d(x, 3, stride=2, padding=1)), (2, 9), ("max_pool",)),
    Case("F.avg_pool1d", lambda: Net(lambda m, x: F.avg_pool1d(x, 2)), (2, 9), ("avg_pool",)),
    Case("torch.clamp_min", lambda: Net(lambda m, x: torch.clamp_min(x, 0.0)), (5,), ("relu",)),
    Case("x.view_tuple", lambda: Net(lambda m, x: x.view((x.size(0), -1))), (3, 2, 2), ("reshape",)),
    Case("torch.reshape", lambda: Net(lambda m, x: torch.reshape(x, (x.shape[0], -1))), (3, 2, 2), ("reshape",)),
    Case("x.contiguous", lambda: Net(lambda m, x: x.contiguous().flatten(1)), (3, 2, 2), ("reshape",)),
    Case("add_scalar_alpha", lambda: Net(lambda m, x: torch.add(x, 1, alpha=3)), (3, 4), ("affine",)),
    Case("sub_inplace_method", lambda: Net(lambda m, x: _sub_inplace(x * 2)), (3, 4), ("affine",)),
    Case("mul_folded_parameter_method", lambda: Net(lambda m, x: x * m.c.weight.view(-1), c=nn.Linear(4, 1)), (4,), ("affine",)),
    Case("nested_sequential", lambda: seq(seq(nn.Conv2d(3, 3, 1), seq(nn.ReLU())), nn.Flatten()), (3, 2, 2), ("conv", "relu", "reshape")),
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_construct_matches_torch(case: Case) -> None:
    model = as_traced_module(case.build())
    graph = import_and_check(model, case.shape)
    assert set(case.ops) <= set(ops(graph)), ops(graph)
    assert graph.meta["source"]["tracer"] == "torch.fx"


def test_relu_bounds_become_max_attribute() -> None:
    model = Net(lambda m, x: (m.six(x), F.hardtanh(x, 0.0, 2.0), torch.clamp(x, 0, 4), x.clamp(min=0)), six=nn.ReLU6())
    graph = import_and_check(model, (5,))
    assert [n.attrs.get("max") for n in graph.nodes] == [6.0, 2.0, 4.0, None]


def test_same_padding_puts_the_odd_pixel_at_the_end() -> None:
    graph = import_torch(nn.Conv2d(1, 1, (4, 3), padding="same"), (1, 8, 8))
    assert graph.nodes[0].attrs["pads"] == [1, 1, 2, 1]


def test_bias_free_layers_get_zero_bias() -> None:
    graph = import_torch(seq(nn.Conv2d(2, 3, 1, bias=False), nn.Flatten(), nn.Linear(12, 2, bias=False)), (2, 2, 2))
    for node in graph.find("conv") + graph.find("linear"):
        assert not node.params["bias"].any()


def test_unused_results_are_dropped() -> None:
    model = Net(lambda m, x: (m.fc(x), x * 2)[1], fc=nn.Linear(4, 2))
    graph = import_and_check(model, (4,))
    assert ops(graph) == ["affine"]


def test_arguments_with_defaults_are_constants() -> None:
    class Scaled(nn.Module):
        def forward(self, x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
            return x * scale

    graph = import_and_check(Scaled(), (4,))
    assert ops(graph) == ["affine"] and len(graph.inputs) == 1


def test_multiple_outputs_keep_their_order() -> None:
    model = Net(lambda m, x: (m.fc(x), x, F.relu(x)), fc=nn.Linear(4, 2))
    graph = import_and_check(model, (4,))
    assert [list(v.shape) for v in graph.outputs] == [[2], [4], [4]]


# ------------------------------------------------------------------- whole networks
class VGG(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 2 * 2, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 16, 2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(x.mean((2, 3), keepdim=True), 1))


def test_vgg_style_network() -> None:
    model = randomize_bn(VGG())
    graph = import_and_check(model, (3, 8, 8))
    assert ops(graph) == [
        "conv", "batch_norm", "relu", "max_pool", "conv", "batch_norm", "relu", "max_pool",
        "reshape", "linear", "relu", "dropout", "linear",
    ]  # fmt: skip
    assert [n.name for n in graph.nodes[:4]] == ["features.0", "features.1", "features.2", "features.3"]
    assert graph.outputs[0].name == "classifier.4"


def test_resnet_style_network() -> None:
    model = randomize_bn(ResNet())
    graph = import_and_check(model, (3, 8, 8))
    assert len(graph.find("add")) == 2
    assert len(graph.find("relu")) == 5  # stem + two per block
    assert len(graph.find("batch_norm")) == 6
    assert {"layer2.downsample.0", "layer2.downsample.1", "layer1.conv1"} <= {n.name for n in graph.nodes}
    # The residual add reads the block input directly in layer1 and the projection in layer2.
    add1, add2 = graph.find("add")
    assert {v.name for v in add1.inputs} == {"layer1.bn2", "relu"}
    assert {v.name for v in add2.inputs} == {"layer2.bn2", "layer2.downsample.1"}


# -------------------------------------------------------------- tracers and sources
def test_graph_module_is_used_as_is() -> None:
    model = seq(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())
    gm = fx.symbolic_trace(model)
    graph = import_and_check(gm, (3, 5, 5))
    # symbolic_trace names the GraphModule class after the traced module's class
    assert graph.meta["source"] == {"format": "torch", "class": "Sequential", "tracer": "torch.fx"}
    assert any("GraphModule" in n for n in graph.meta["notices"])
    assert ops(graph) == ["conv", "relu", "reshape"]


def test_hand_written_graph_module_with_inplace_ops() -> None:
    """operator.iadd and Tensor.relu_ mutate their first argument; later readers see it."""
    root = nn.Module()
    root.conv = nn.Conv2d(3, 3, 3, padding=1)
    g = fx.Graph()
    x = g.placeholder("x")
    y = g.call_module("conv", (x,))
    g.call_method("relu_", (y,))
    g.call_function(operator.iadd, (y, x))
    g.output(y)
    gm = fx.GraphModule(root, g)
    graph = import_and_check(gm, (3, 4, 4))
    assert ops(graph) == ["conv", "relu", "add"]


class ShapeBranchNet(nn.Module):
    """Python control flow on a shape: fx cannot trace it, torch.export specialises it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(8 * 4 * 4, 5)
        self.gain = nn.Parameter(torch.rand(4) + 0.5)
        self.register_buffer("offset", torch.randn(4, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 4:
            x = F.avg_pool2d(x, 2)
        y = F.relu(self.bn(self.conv(x)) * self.gain.view(1, -1, 1, 1) + self.offset, inplace=True)
        y = torch.cat([y, F.interpolate(F.max_pool2d(y, 2), scale_factor=2)], dim=1)
        y = y + torch.clamp(y, 0, 1) * 0.5
        y = y.view(y.size(0), -1)
        return torch.softmax(self.fc(self.drop(y)), dim=1)


class ShapeBranchResNet(ResNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(x.shape[1] // 3):  # loops over shapes are fine for torch.export
            x = self.stem(1.0 - x)
        x = F.relu6(self.bn(x))
        x = self.layer2(self.layer1(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.mark.parametrize("cls", [ShapeBranchNet, ShapeBranchResNet])
def test_export_fallback_when_fx_fails(cls: type[nn.Module]) -> None:
    model = randomize_bn(cls())
    with pytest.raises(Exception):
        fx.symbolic_trace(model)
    graph = import_and_check(model, (3, 8, 8))
    assert graph.meta["source"]["tracer"] == "torch.export"
    assert any("torch.export" in n and "symbolic_trace failed" in n for n in graph.meta["notices"])


def test_export_fallback_keeps_module_names() -> None:
    graph = import_torch(randomize_bn(ShapeBranchNet()), (3, 8, 8))
    names = {n.name for n in graph.nodes}
    assert {"conv", "bn", "fc"} <= names
    assert "softmax" in ops(graph) and "concat" in ops(graph)


class ValueBranchNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # depends on the data: neither tracer can handle it
            return self.fc(x)
        return x


def test_value_dependent_control_flow_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedOpError) as info:
        import_torch(ValueBranchNet(), (4,))
    message = str(info.value)
    assert info.value.node == "ValueBranchNet.forward"
    assert "torch.fx.symbolic_trace failed" in message and "torch.export.export failed" in message
    assert "depend only on shapes" in message


def test_source_metadata() -> None:
    model = seq(nn.Linear(3, 2))
    graph = import_torch(model, [3])
    assert graph.meta["source"] == {"format": "torch", "class": "Sequential", "tracer": "torch.fx"}
    notices = graph.meta["notices"]
    assert isinstance(notices, list) and all(isinstance(n, str) for n in notices)
    assert any("symbolic_trace" in n for n in notices)
    assert graph.stage == "ann" and list(graph.inputs[0].shape) == [3]


# ------------------------------------------------------------------ no mutation
@pytest.mark.parametrize("cls", [VGG, ResNet, ShapeBranchNet])
def test_caller_model_is_never_modified(cls: type[nn.Module]) -> None:
    model = randomize_bn(cls()).train()
    before = snapshot(model)
    x = sample((3, 8, 8), batch=4)
    x_copy = x.copy()

    graph = import_torch(model, (3, 8, 8))
    assert_unchanged(model, before)
    assert model.training and all(m.training for m in model.modules())
    assert any("training mode" in n for n in graph.meta["notices"])

    reference = torch_reference(model)
    reference(x)
    check_import(graph, reference, x, reference_name="torch", atol=TOL, rtol=TOL)
    assert_unchanged(model, before)  # BN running statistics and num_batches_tracked included
    assert model.training
    np.testing.assert_array_equal(x, x_copy)


def test_eval_model_stays_in_eval_mode() -> None:
    model = randomize_bn(VGG()).eval()
    before = snapshot(model)
    import_torch(model, (3, 8, 8))
    assert_unchanged(model, before)
    assert not any(m.training for m in model.modules())


def test_reference_does_not_write_into_the_callers_array() -> None:
    model = Net(lambda m, x: torch.relu_(x))
    x = sample((5,))
    x_copy = x.copy()
    import_and_check(model, (5,))
    torch_reference(model)(x)
    np.testing.assert_array_equal(x, x_copy)


# ------------------------------------------------------------------ unsupported ops
def _unsupported(fn: Callable[[nn.Module, torch.Tensor], torch.Tensor], **layers: nn.Module) -> nn.Module:
    return Net(fn, **layers)


UNSUPPORTED = [
    # (id, model, input shape, op_type, node, text in the hint)
    ("sigmoid", _unsupported(lambda m, x: torch.sigmoid(x)), (4,), "call_function torch.sigmoid", "sigmoid", "ReLU"),
    ("mish_module", seq(nn.Linear(4, 4), nn.Mish()), (4,), "call_module nn.Mish", "1", "ReLU"),
    ("lstm", _unsupported(lambda m, x: m.rnn(x)[0], rnn=nn.LSTM(4, 4)), (3, 4), "call_module nn.LSTM", "rnn", "recurrent"),
    ("tanh_method", _unsupported(lambda m, x: x.tanh()), (4,), "call_method Tensor.tanh", "tanh", "ReLU"),
    ("group_norm", seq(nn.GroupNorm(2, 4)), (4, 3), "call_module nn.GroupNorm", "0", "BatchNorm"),
    ("product_of_activations", _unsupported(lambda m, x: x * x), (4,), "call_function operator.mul", "mul", "two activations"),
    ("division_by_activation", _unsupported(lambda m, x: 1 / x), (4,), "call_function operator.truediv", "truediv", "dividing"),
    ("batch_indexing", _unsupported(lambda m, x: x[0]), (4,), "call_function operator.getitem", "getitem", "batch axis"),
    ("log_softmax_inside", _unsupported(lambda m, x: m.fc(F.log_softmax(x, dim=1)), fc=nn.Linear(4, 2)), (4,), "call_function F.log_softmax", "log_softmax", "no converter"),
    ("clamp_negative_min", _unsupported(lambda m, x: x.clamp(-1, 1)), (4,), "call_method Tensor.clamp", "clamp", "min=0"),
    ("leaky_hardtanh", _unsupported(lambda m, x: F.hardtanh(x)), (4,), "call_function F.hardtanh", "hardtanh", "min=0"),
    ("max_pool_indices", nn.MaxPool2d(2, return_indices=True), (1, 4, 4), "call_module nn.MaxPool2d", "", "return_indices"),
    ("bn_without_running_stats", seq(nn.BatchNorm2d(2, track_running_stats=False)), (2, 3, 3), "call_module nn.BatchNorm2d", "0", "track_running_stats"),
    ("conv_reflect_padding", seq(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")), (2, 4, 4), "call_module nn.Conv2d", "0", "padding_mode"),
    ("view_fixed_batch", _unsupported(lambda m, x: x.view(3, -1)), (2, 2), "call_method Tensor.view", "view", "x.size(0)"),
    ("flatten_batch", _unsupported(lambda m, x: torch.flatten(x)), (2, 2), "call_function torch.flatten", "flatten", "torch.flatten(x, 1)"),
    ("stochastic_dropout", _unsupported(lambda m, x: F.dropout(x, 0.5)), (4,), "call_function F.dropout", "dropout", "training=True"),
    ("bilinear_upsample", nn.Upsample(scale_factor=2, mode="bilinear"), (1, 2, 2), "call_module nn.Upsample", "", "nearest"),
    ("cat_batch_axis", _unsupported(lambda m, x: torch.cat([x, x])), (4,), "call_function torch.cat", "cat", "batch axis"),
    ("mean_over_channels", _unsupported(lambda m, x: x.mean(1)), (3, 4, 4), "call_method Tensor.mean", "mean", "spatial"),
    ("conv3d", nn.Conv3d(1, 1, 1), (1, 2, 2, 2), "call_module nn.Conv3d", "", "no converter"),
    ("adaptive_irregular", nn.AdaptiveAvgPool2d(3), (1, 4, 4), "call_module nn.AdaptiveAvgPool2d", "", "irregular"),
    ("fractional_upsample", nn.Upsample(scale_factor=1.5), (1, 4, 4), "call_module nn.Upsample", "", "positive integer"),
    ("transposed_conv_output_size", _unsupported(lambda m, x: m.ct(x, output_size=[5]), ct=nn.ConvTranspose1d(1, 1, 3, stride=2)), (1, 2), "call_module nn.ConvTranspose1d", "ct", "output_padding"),
    ("view_mixing_batch", _unsupported(lambda m, x: x.view(-1, 3)), (4,), "call_method Tensor.view", "view", "mix samples"),
    ("broadcast_add", _unsupported(lambda m, x: x + x.mean((2, 3), keepdim=True)), (2, 3, 3), "call_function operator.add", "add", "broadcasting"),
    ("division_by_zero", _unsupported(lambda m, x: x / 0.0), (4,), "call_function operator.truediv", "truediv", "non-finite"),
    ("rounding_division", _unsupported(lambda m, x: torch.div(x, 2, rounding_mode="floor")), (4,), "call_function torch.div", "div", "rounding_mode"),
    ("unknown_argument", _unsupported(lambda m, x: x.clamp(min=0, foo=1)), (4,), "call_method Tensor.clamp", "clamp", "arguments not supported"),
    ("reflect_pad", _unsupported(lambda m, x: F.pad(x, (1, 1), mode="reflect")), (2, 4), "call_function F.pad", "pad", "mode 'reflect'"),
    ("constant_pad_one", nn.ConstantPad2d(1, 1.0), (1, 3, 3), "call_module nn.ConstantPad2d", "", "zeros only"),
    ("pad_channels", _unsupported(lambda m, x: F.pad(x, (0, 0, 0, 0, 1, 0))), (2, 3, 3), "call_function F.pad", "pad", "channel or batch"),
    ("negative_pad", _unsupported(lambda m, x: F.pad(x, (-1, 0))), (2, 4), "call_function F.pad", "pad", "negative pads"),
]


@pytest.mark.parametrize("case", UNSUPPORTED, ids=[c[0] for c in UNSUPPORTED])
def test_unsupported_op_names_the_op_and_node(case: tuple) -> None:
    _, model, shape, op_type, node, hint = case
    model = as_traced_module(model)  # a bare layer becomes the call_module "0"
    node = node or "0"
    with pytest.raises(UnsupportedOpError) as info:
        import_torch(model, shape)
    err = info.value
    assert err.op_type == op_type
    assert err.node == node
    assert hint in err.hint, err.hint
    assert op_type in str(err) and repr(node) in str(err)


# What the model takes and returns is a DataError in both frontends (like ONNX's
# test_multiple_inputs_are_refused and test_constant_output_is_refused), not an op.
def test_more_than_one_input_is_a_data_error() -> None:
    class TwoInputs(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
            return (x + y) * scale

    with pytest.raises(DataError, match=r"the torch model has 2 inputs \('x', 'y'\); snnc imports models with exactly one input"):
        import_torch(TwoInputs(), (4,))


def test_constant_output_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"model output 0 \(a constant tensor of shape \[2, 4\]\) does not depend on the model input"):
        import_torch(Net(lambda m, x: m.fc.weight, fc=nn.Linear(4, 2)), (4,))


def test_unsupported_error_message_golden() -> None:
    with pytest.raises(UnsupportedOpError) as info:
        import_torch(Net(lambda m, x: torch.sigmoid(x)), (4,))
    # The hint comes from the table the ONNX frontend shares (snnc.frontends.common): the
    # same wording as for ONNX's Sigmoid, ending with what this frontend supports.
    assert str(info.value) == (
        "unsupported op 'call_function torch.sigmoid' at node 'sigmoid' (import): torch.sigmoid is a non-linearity "
        "snnc has no spiking form for: neurons approximate ReLU (nn.ReLU; ReLU6 or clamp(min=0) also work), and GELU, "
        "SiLU, softmax and LayerNorm convert as temporal ops (docs/transformers.md). Replace it by one of those and "
        "fine-tune the network, or open an issue with the model attached. snnc supports: "
        "Conv1d/2d, ConvTranspose1d/2d, Linear, BatchNorm1d/2d, ReLU/ReLU6/clamp(min=0), Avg/Max/AdaptiveAvgPool, "
        "mean over spatial axes, Flatten/view/reshape, add, arithmetic with constants, cat, nearest Upsample, "
        "Identity, Dropout, Softmax, and for transformers LayerNorm, GELU/SiLU, matmul of two tensors, "
        "transpose/permute, indexing with ints and slices, MultiheadAttention and TransformerEncoder(Layer)"
    )


def test_unsupported_aten_op_after_export_fallback() -> None:
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[1] > 2:
                x = x * 2
            return torch.sigmoid(x)

    with pytest.raises(UnsupportedOpError) as info:
        import_torch(Branchy(), (4,))
    assert info.value.op_type == "call_function aten.sigmoid.default"
    assert "ReLU" in info.value.hint


def test_configuration_the_ir_cannot_represent_is_unsupported() -> None:
    # fx tracing does not run F.avg_pool2d, so the IR's own restriction (pads at most half
    # the kernel) is what refuses it: an UnsupportedOpError, as in the ONNX frontend.
    with pytest.raises(UnsupportedOpError) as info:
        import_torch(Net(lambda m, x: F.avg_pool2d(x, 2, padding=2)), (2, 6, 6))
    assert info.value.op_type == "call_function F.avg_pool2d"
    assert "'avg_pool' op cannot represent this configuration" in info.value.hint and "half the kernel" in info.value.hint


def test_wrong_input_shape_is_a_data_error() -> None:
    with pytest.raises(DataError, match="input_shape"):
        import_torch(seq(nn.Conv2d(3, 4, 3)), (2, 8, 8))
    # Same wording as the ONNX frontend's (snnc.frontends.common.emit_node).
    with pytest.raises(DataError, match=r"call_module nn.Conv2d at node '0' cannot take input\(s\) of per-sample shape \[2, 8, 8\]"):
        import_torch(seq(nn.Conv2d(3, 4, 3)), (2, 8, 8))
    with pytest.raises(DataError):
        import_torch(seq(nn.Linear(3, 2)), (0,))


class ShapeBranchPad(nn.Module):
    """Zero padding where fx cannot trace (a loop over a shape): torch.export's
    aten.constant_pad_nd / aten.pad."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 2, 3)
        self.z = nn.ZeroPad2d((0, 1, 2, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(x.shape[1] // 3):
            x = F.pad(x, (1, 0, 0, 1))
        return self.c(self.z(x))


def test_zero_padding_through_torch_export() -> None:
    graph = import_and_check(ShapeBranchPad(), (3, 5, 6))
    assert graph.meta["source"]["tracer"] == "torch.export"
    assert ops(graph).count("pad") == 2
