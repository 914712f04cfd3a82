"""MobileNetV2 for CIFAR as in the CRD benchmark ("mobile_half": expansion 6, width 0.5), same names."""

from __future__ import annotations

import torch
from torch import nn

from kdlab.models.init import mobilenet_init
from kdlab.models.registry import register


def conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


def conv_1x1_bn(inp: int, oup: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """Inverted-residual settings (t, c, n, s) with expansion `t`; 1280-channel head before pooling."""

    def __init__(self, t: int, num_classes: int, width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        setting = [[1, 16, 1, 1], [t, 24, 2, 1], [t, 32, 3, 2], [t, 64, 4, 2], [t, 96, 3, 1], [t, 160, 3, 2],
                   [t, 320, 1, 1]]  # fmt: skip
        channels = int(32 * width_mult)
        self.conv1 = conv_bn(in_channels, channels, 2)
        self.blocks = nn.ModuleList()
        for expand, c, n, s in setting:
            out = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(channels, out, stride, expand))
                channels = out
            self.blocks.append(nn.Sequential(*layers))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_1x1_bn(channels, self.last_channel)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        mobilenet_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for block in self.blocks:
            x = block(x)
        x = self.conv2(x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))


# `feature` is the map the classifier pools (1280 channels: CAM needs it); `last_stage` is the last block's
# 160-channel map, the `feat[-2]` that the SimKD/ATSC code projects.
@register("MobileNetV2", "mobilenet", {"stage1": "blocks.2", "stage2": "blocks.4", "stage3": "blocks.6",
                                        "last_stage": "blocks.6", "feature": "conv2",
                                        "classifier": "classifier.0"})  # fmt: skip
def mobilenetv2(num_classes: int, in_channels: int = 3) -> nn.Module:
    """The CRD benchmark's CIFAR MobileNetV2 (`mobile_half`)."""
    return MobileNetV2(6, num_classes, width_mult=0.5, in_channels=in_channels)
