"""CIFAR ResNets of the CRD benchmark (resnet8 … resnet110, resnet8x4, resnet32x4), same parameter names."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.models.init import kaiming_init
from kdlab.models.registry import register


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.relu_out = nn.ReLU()  # a module so that its input, the block's pre-activation, can be tapped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu_out(out + residual)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.relu_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu_out(out + residual)


class ResNetCifar(nn.Module):
    """3-stage CIFAR ResNet. depth = 6n+2 (BasicBlock) or 9n+2 (Bottleneck); widths = [stem, s1, s2, s3]."""

    def __init__(
        self,
        depth: int,
        widths: list[int],
        block_name: str = "basicblock",
        num_classes: int = 10,
        in_channels: int = 3,
    ):
        super().__init__()
        block: type[BasicBlock] | type[Bottleneck]
        if block_name.lower() == "basicblock":
            if (depth - 2) % 6 != 0:
                raise ValueError("BasicBlock depth must be 6n+2, e.g. 20, 32, 44, 56, 110")
            n, block = (depth - 2) // 6, BasicBlock
        else:
            if (depth - 2) % 9 != 0:
                raise ValueError("Bottleneck depth must be 9n+2")
            n, block = (depth - 2) // 9, Bottleneck
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, widths[1], n)
        self.layer2 = self._make_layer(block, widths[2], n, stride=2)
        self.layer3 = self._make_layer(block, widths[3], n, stride=2)
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)
        kaiming_init(self)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        # Adaptive pooling equals the CRD code's AvgPool2d(8) at 32×32 and also works at other sizes.
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


_TAPS = {"stem": "relu", "stage1": "layer1", "stage2": "layer2", "stage3": "layer3", "feature": "layer3",
         "classifier": "fc"}  # fmt: skip
_THIN = [16, 16, 32, 64]
_WIDE = [32, 64, 128, 256]


def _taps(depth: int) -> dict[str, str]:
    """The stage taps, and each stage's pre-activation (`preactN`: the input of its last block's final ReLU) with
    the BatchNorm that precedes that ReLU (`preact_bnN`), as OFD and ReviewKD use them."""
    last = (depth - 2) // 6 - 1
    pre = {f"preact{i}": f"layer{i}.{last}.relu_out:in" for i in (1, 2, 3)}
    return {**_TAPS, **pre, **{f"preact_bn{i}": f"layer{i}.{last}.bn2" for i in (1, 2, 3)}}


def _resnet(depth: int, widths: list[int]) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int = 3) -> nn.Module:
        return ResNetCifar(depth, widths, "basicblock", num_classes, in_channels)

    return build


for _depth in (8, 14, 20, 32, 44, 56, 110):
    register(f"resnet{_depth}", "resnet_cifar", _taps(_depth))(_resnet(_depth, _THIN))
register("resnet8x4", "resnet_cifar", _taps(8))(_resnet(8, _WIDE))
register("resnet32x4", "resnet_cifar", _taps(32))(_resnet(32, _WIDE))
