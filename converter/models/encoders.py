"""Per-frame CNN backbones in plain torch, with torchvision's (SE-ResNeXt: `pretrainedmodels`')
parameter names, so ImageNet weight files in those formats load unchanged.

Every backbone exposes `out_channels` and `feature_children()`: the ordered names of its
feature modules, which the original VTN code stored as an `nn.Sequential` named `resnet`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _conv_bn_act(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: type[nn.Module] = nn.ReLU6
) -> nn.Sequential:
    """torchvision's Conv2dNormActivation layout: `.0` conv, `.1` bn, `.2` activation."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        act(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, act: type[nn.Module]):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_act(cin, hidden, 1, act=act))
        layers += [
            _conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=act),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 1.0 (Sandler et al. 2018); `features.*` as in torchvision.

    `relu6=False` gives the original VTN code's variant (plain ReLU).
    """

    # expansion, channels, repeats, first stride
    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, in_chans: int = 3, relu6: bool = True):
        super().__init__()
        act = nn.ReLU6 if relu6 else nn.ReLU
        layers: list[nn.Module] = [_conv_bn_act(in_chans, 32, 3, 2, act=act)]
        cin = 32
        for expand, cout, repeats, stride in self.SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand, act))
                cin = cout
        layers.append(_conv_bn_act(cin, 1280, 1, act=act))
        self.features = nn.Sequential(*layers)
        self.out_channels = 1280

    def feature_children(self) -> list[str]:
        return [f"features.{i}" for i in range(len(self.features))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the 3x3 convolution)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    """ResNet (He et al. 2016) with torchvision's names: conv1, bn1, layer1..layer4."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, ...], in_chans: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (planes, repeats) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(repeats):
                blocks.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_channels = cin

    def feature_children(self) -> list[str]:
        return ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.relu(self.fc1(scale))))


class SEResNeXtBottleneck(nn.Module):
    expansion = 4

    def __init__(
        self, cin: int, planes: int, stride: int = 1, groups: int = 32, base_width: int = 4, reduction: int = 16
    ):
        super().__init__()
        width = math.floor(planes * base_width / 64) * groups
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.se_module = SEModule(planes * 4, reduction)
        self.downsample = _downsample(cin, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se_module(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


class SEResNeXt(nn.Module):
    """SE-ResNeXt (Hu et al. 2018) with `pretrainedmodels`' names: layer0, layer1..layer4."""

    def __init__(self, layers: tuple[int, ...], in_chans: int = 3):
        super().__init__()
        self.layer0 = nn.Sequential()
        self.layer0.add_module("conv1", nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False))
        self.layer0.add_module("bn1", nn.BatchNorm2d(64))
        self.layer0.add_module("relu1", nn.ReLU(inplace=True))
        self.layer0.add_module("pool", nn.MaxPool2d(3, 2, ceil_mode=True))
        cin = 64
        for i, (planes, repeats) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(repeats):
                blocks.append(SEResNeXtBottleneck(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_channels = cin

    def feature_children(self) -> list[str]:
        return ["layer0", "layer1", "layer2", "layer3", "layer4"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.layer0(x))
        return self.layer4(self.layer3(self.layer2(x)))


BACKBONES = {
    "mobilenetv2": lambda in_chans, relu6: MobileNetV2(in_chans, relu6=relu6),
    "resnet18": lambda in_chans, relu6: ResNet(BasicBlock, (2, 2, 2, 2), in_chans),
    "resnet34": lambda in_chans, relu6: ResNet(BasicBlock, (3, 4, 6, 3), in_chans),
    "resnet50": lambda in_chans, relu6: ResNet(Bottleneck, (3, 4, 6, 3), in_chans),
    "se_resnext101_32x4d": lambda in_chans, relu6: SEResNeXt((3, 4, 23, 3), in_chans),
}


def init_weights(module: nn.Module) -> None:
    """He initialisation for convolutions, unit batch norm: the usual ImageNet-from-scratch start."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
