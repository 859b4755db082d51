"""Small Fashion-MNIST CNNs used as ANN->SNN conversion examples.

* ``VGGBN``: plain VGG-style stack of Conv3x3 + BatchNorm2d + ``nn.ReLU``
  modules with average pooling and a global-average-pool classifier.
* ``ResNetFn``: ResNet-style network with residual adds whose ReLUs are all
  *functional* (``F.relu``), i.e. there are no ``nn.ReLU`` modules to hook.
* ``MobileNetV2``: MobileNetV2-style inverted residual blocks (1x1 expansion,
  depthwise 3x3, *linear* 1x1 projection, residual add where shapes match) with
  ReLU6. Its projections have no activation, so its SNN has synapses feeding
  synapses: the ``fuse-synapses`` pass makes it run on Loihi (``lava-fixed``).

Both take ``[N, 1, 28, 28]`` inputs in ``[0, 1]`` (no normalisation inside) and
return ``[N, 10]`` logits.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=False),
    ]


class VGGBN(nn.Module):
    """conv(c1) conv(c1) | avgpool2 | conv(c2) conv(c2) | avgpool2 | conv(c3) | GAP | fc."""

    def __init__(self, widths=(24, 48, 96), num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        c1, c2, c3 = widths
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, c1),
            *_conv_bn_relu(c1, c1),
            nn.AvgPool2d(2),
            *_conv_bn_relu(c1, c2),
            *_conv_bn_relu(c2, c2),
            nn.AvgPool2d(2),
            *_conv_bn_relu(c2, c3),
        )
        self.classifier = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x.mean((2, 3))
        return self.classifier(x)


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn (+ identity or 1x1 conv+bn shortcut), then relu(out + shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetFn(nn.Module):
    """stem conv3x3 + BN + relu, then one BasicBlock per stage, GAP, flatten, fc."""

    def __init__(
        self,
        stages=((16, 1), (32, 2), (64, 2)),
        stem_channels: int = 16,
        num_classes: int = 10,
        in_channels: int = 1,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        blocks = []
        cin = stem_channels
        for cout, stride in stages:
            blocks.append(BasicBlock(cin, cout, stride))
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = x.mean((2, 3))
        x = torch.flatten(x, 1)
        return self.fc(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand + BN + ReLU6 (skipped when ``expand`` is 1), depthwise
    3x3 + BN + ReLU6, 1x1 project + BN with no activation (the linear bottleneck), and
    ``x + out`` when the stride is 1 and the widths match (the residual stream is never
    rectified)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """stem conv3x3 + BN + ReLU6, inverted residual stages ``(expand, width, blocks, stride)``,
    1x1 head conv + BN + ReLU6, GAP, fc."""

    def __init__(
        self,
        stages=((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 3, 2)),
        stem_channels: int = 16,
        head_channels: int = 128,
        num_classes: int = 10,
        in_channels: int = 1,
    ):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU6(),
        ]
        cin = stem_channels
        for expand, cout, blocks, stride in stages:
            for i in range(blocks):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers += [nn.Conv2d(cin, head_channels, 1, bias=False), nn.BatchNorm2d(head_channels), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x.mean((2, 3))
        return self.classifier(x)


MODELS = {
    "vgg_bn": VGGBN,
    "resnet": ResNetFn,
    "mobilenet": MobileNetV2,
}


def build_model(name: str, **kwargs) -> nn.Module:
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}") from None
    return cls(**kwargs)
