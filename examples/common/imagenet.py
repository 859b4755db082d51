"""ImageNet architectures in plain torch, state-dict compatible with torchvision's.

torchvision does not install against the pinned CPU torch, so the networks the conversion
literature reports on are defined here: ResNet-18/34/50 (v1.5: the Bottleneck strides on its 3×3
conv), VGG-16-BN, MobileNetV2 (width 1.0) and RegNetX-400MF. Module names follow torchvision's so
that a torchvision checkpoint loads with ``load_state_dict`` unchanged, and the initialisation
follows torchvision's (Kaiming-normal fan-out convolutions, BatchNorm weight 1 and bias 0).
Parameter and MAC counts in the docstrings are for 3×224×224 inputs and 1000 classes; MACs count
convolutions and Linear layers (``examples.common.macs.count_macs``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "VGG",
    "VGG16_CFG",
    "MobileNetV2",
    "RegNet",
    "ResNet",
    "mobilenet_v2",
    "regnet_x_400mf",
    "resnet18",
    "resnet34",
    "resnet50",
    "vgg16_bn",
]


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """Bias-free k×k conv (padding (k-1)/2), BatchNorm, then ``act`` if given: torchvision's
    ``Conv2dNormActivation`` layout (``.0`` conv, ``.1`` BN, ``.2`` activation)."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def _init(model: nn.Module, linear_std: float | None) -> None:
    """Kaiming-normal (fan-out, ReLU gain) conv weights and zero biases, BatchNorm weight 1 and
    bias 0; Linear weights N(0, ``linear_std``) and zero biases when ``linear_std`` is given
    (torch's default Linear init otherwise)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN pairs (the first strides) with an identity or 1×1 conv-BN shortcut; ReLU
    after the sum."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _shortcut(c_in, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided), 1×1 expand ×4, each with BN; identity or 1×1 conv-BN shortcut;
    ReLU after the sum (torchvision's ResNet v1.5)."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(c_in, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    """1×1 strided conv-BN projection when the shape changes, else None (identity)."""
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class ResNet(nn.Module):
    """7×7/2 conv-BN-ReLU stem, 3×3/2 max pool, four stages of ``block`` (64, 128, 256, 512
    planes; stages 2-4 stride 2), global average pool, Linear."""

    def __init__(self, block: type[BasicBlock | Bottleneck], depths: list[int], num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c = 64
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths)):
            blocks = []
            for j in range(depth):
                blocks.append(block(c, planes, 2 if i > 0 and j == 0 else 1))
                c = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c, num_classes)
        _init(self, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ResNet-18 (BasicBlock, depths 2-2-2-2): 11,689,512 parameters, 1.814 G MACs."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels)


def resnet34(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ResNet-34 (BasicBlock, depths 3-4-6-3): 21,797,672 parameters, 3.664 G MACs."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels)


def resnet50(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ResNet-50 (Bottleneck v1.5, depths 3-4-6-3): 25,557,032 parameters, 4.089 G MACs."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels)


# ------------------------------------------------------------------------------------------- VGG


VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    """``features`` (3×3 conv with bias, BN, ReLU; 2×2 max pools; ``cfg`` lists the conv widths,
    "M" a pool), adaptive average pool to 7×7, ``classifier`` (last width × 49)→``hidden``→
    ``hidden``→classes with ReLU and dropout 0.5 (``hidden`` 4096 in VGG-16)."""

    def __init__(self, cfg: list[int | str], num_classes: int = 1000, in_channels: int = 3, hidden: int = 4096) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(c * 7 * 7, hidden),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(hidden, num_classes),
        )
        _init(self, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16_bn(num_classes: int = 1000, in_channels: int = 3) -> VGG:
    """VGG-16 with BatchNorm: 138,365,992 parameters, 15.470 G MACs."""
    return VGG(VGG16_CFG, num_classes, in_channels)


# ----------------------------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
    """1×1 expand (ReLU6; omitted when the ratio is 1), 3×3 depthwise (ReLU6, strided), 1×1
    linear projection with BN and no activation; identity shortcut when stride 1 and the channel
    count is unchanged."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.use_res_connect = stride == 1 and c_in == c_out
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn(c_in, hidden, 1, act=nn.ReLU6)]
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """3×3/2 conv-BN-ReLU6 stem (32), 17 inverted residual blocks, 1×1 conv-BN-ReLU6 to 1280,
    global average pool, dropout 0.2, Linear."""

    # expansion t, output channels c, repeats n, first stride s
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(in_channels, 32, 3, 2, act=nn.ReLU6)]
        c = 32
        for t, c_out, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(c, c_out, s if i == 0 else 1, t))
                c = c_out
        layers.append(_conv_bn(c, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        _init(self, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(num_classes: int = 1000, in_channels: int = 3) -> MobileNetV2:
    """MobileNetV2, width 1.0: 3,504,872 parameters, 300.8 M MACs."""
    return MobileNetV2(num_classes, in_channels)


# ------------------------------------------------------------------------------------------ RegNet


class ResBottleneckBlock(nn.Module):
    """``f``: 1×1 conv-BN-ReLU (``a``), 3×3 grouped conv-BN-ReLU (``b``, strided), 1×1 conv-BN
    (``c``); shortcut ``proj`` (1×1 strided conv-BN) when the shape changes; ReLU after the sum."""

    def __init__(self, c_in: int, c_out: int, stride: int, group_width: int, bottleneck: float = 1.0) -> None:
        super().__init__()
        w_b = int(round(c_out * bottleneck))
        self.proj = _conv_bn(c_in, c_out, 1, stride, act=None) if stride != 1 or c_in != c_out else None
        self.f = nn.Sequential()
        self.f.add_module("a", _conv_bn(c_in, w_b, 1))
        self.f.add_module("b", _conv_bn(w_b, w_b, 3, stride, groups=w_b // group_width))
        self.f.add_module("c", _conv_bn(w_b, c_out, 1, act=None))
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation((x if self.proj is None else self.proj(x)) + self.f(x))


class RegNet(nn.Module):
    """3×3/2 conv-BN-ReLU stem, ``trunk_output`` of stages ``block1``… of ResBottleneckBlocks
    (``block{s}-{i}``, the first of each stage stride 2), global average pool, Linear."""

    def __init__(
        self,
        depths: list[int],
        widths: list[int],
        group_width: int,
        stem: int = 32,
        num_classes: int = 1000,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, stem, 3, 2)
        self.trunk_output = nn.Sequential()
        c = stem
        for s, (depth, width) in enumerate(zip(depths, widths), 1):
            stage = nn.Sequential()
            for i in range(depth):
                stage.add_module(f"block{s}-{i}", ResBottleneckBlock(c, width, 2 if i == 0 else 1, group_width))
                c = width
            self.trunk_output.add_module(f"block{s}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c, num_classes)
        _init(self, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.trunk_output(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def regnet_x_400mf(num_classes: int = 1000, in_channels: int = 3) -> RegNet:
    """RegNetX-400MF (depths 1-2-7-12, widths 32-64-160-400, group width 16, bottleneck ratio 1):
    5,495,976 parameters, 413.8 M MACs."""
    return RegNet([1, 2, 7, 12], [32, 64, 160, 400], 16, 32, num_classes, in_channels)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "vgg16_bn": vgg16_bn,
    "mobilenet_v2": mobilenet_v2,
    "regnet_x_400mf": regnet_x_400mf,
}
