"""ImageNet ResNet-18/34/50 (He et al. 2016): 7×7 stride-2 stem + max-pool, four stages, global pool, fc.

Module and parameter names are torchvision's (`conv1`, `bn1`, `layer1…4`, `downsample`, `fc`), so a torchvision
state dict (e.g. the ImageNet weights as a `.pth` file on disk) loads unchanged — without torchvision installed.
The ImageNet pair of Wang et al. (arXiv 2012.02909) is resnet34_imagenet → resnet18_imagenet; that of Jang et
al. (ATSC, arXiv 2406.08528) is resnet50_imagenet → resnet18_imagenet."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kdlab.models.init import kaiming_init
from kdlab.models.registry import register


def _downsample(in_planes: int, out_planes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on the 3×3 (torchvision v1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_planes, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ImageNetResNet(nn.Module):
    def __init__(
        self, block: type[BasicBlock] | type[Bottleneck], blocks: list[int], num_classes: int, in_channels: int = 3
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        planes, layers = 64, []
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            stage = []
            for j in range(n):
                stage.append(block(planes, width, 2 if i > 0 and j == 0 else 1))
                planes = width * block.expansion
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


_TAPS = {"stem": "maxpool", "stage1": "layer1", "stage2": "layer2", "stage3": "layer3", "stage4": "layer4",
         "feature": "layer4", "classifier": "fc"}  # fmt: skip


def _build(block: type[BasicBlock] | type[Bottleneck], blocks: list[int]) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int = 3) -> nn.Module:
        return ImageNetResNet(block, blocks, num_classes, in_channels)

    return build


register("resnet18_imagenet", "resnet-imagenet", _TAPS)(_build(BasicBlock, [2, 2, 2, 2]))
register("resnet34_imagenet", "resnet-imagenet", _TAPS)(_build(BasicBlock, [3, 4, 6, 3]))
register("resnet50_imagenet", "resnet-imagenet", _TAPS)(_build(Bottleneck, [3, 4, 6, 3]))
